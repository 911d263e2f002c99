"""Segment Anything (transformers ``SamModel`` / ``SamProcessor``) as a point-prompted mask predictor.

The adapter only runs the model: embed an image once (:meth:`SamPredictor.embed`), then predict masks for
batches of point prompts on that embedding (:meth:`SamPredictor.predict_points`). Automatic mask
generation — the point grid, filtering, NMS and cleaning — is an algorithm over this predictor and lives
in :mod:`protoseg.proposals`.

The prompt encoder + mask decoder run by :func:`protoseg.models.sam_decoder.decode_points` (``decoder="fast"``,
the default: the image's shared part once, per-point work only) or by ``SamModel.forward``
(``decoder="hf"``, for comparison); both compute the same function of the same weights.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from protoseg.errors import ProtosegError
from protoseg.models.base import resolve_device, resolve_dtype
from protoseg.models.hub import from_pretrained
from protoseg.models.sam_decoder import DECODERS, DecoderImage, decode_points, decode_points_hf, prepare_image


@dataclass(frozen=True)
class SamImageEmbedding:
    """One image embedded by SAM's image encoder.

    Attributes:
        embedding: ``[1, C, h, w]`` image embedding.
        original_size: ``(H, W)`` of the image given to :meth:`SamPredictor.embed`.
        reshaped_size: ``(H', W')`` of the resized image before padding to the encoder's input size.
    """

    embedding: torch.Tensor
    original_size: tuple[int, int]
    reshaped_size: tuple[int, int]


def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep freed memory for reuse (process-wide; opt-in).

    SAM's mask decoder holds per-point image tokens (``[P, 4096, 256]``, ~270 MB per op for 64 points of
    SAM-B; ``SamModel.forward`` also repeats the image embedding for every point), and glibc serves such
    blocks with ``mmap`` and returns them on ``free``: each op then page-faults fresh memory. Turning
    ``mmap`` allocation off and never trimming the heap lets the temporaries be reused (a faster decoder on
    CPU; its gain is not measured separately by ``benchmarks/dpsm_speed.py``); the process keeps its peak
    memory. Returns ``False`` where glibc's ``mallopt`` is not available.
    """
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_max = -1, -4
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**30))
    except (OSError, AttributeError):
        return False


def as_uint8_image(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """uint8 ``[H, W, 3]`` from uint8 ``[H, W, 3]`` or float 0-255 ``[H, W, 3]`` / ``[3, H, W]`` (rounded)."""
    if isinstance(image, torch.Tensor):
        if image.ndim == 3 and image.shape[0] == 3 and image.shape[-1] != 3:
            image = image.permute(1, 2, 0)
        image = image.detach().float().round().clamp(0, 255).to(torch.uint8).cpu().numpy()
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


class SamPredictor:
    """SAM loaded by hub id (``facebook/sam-vit-base``) or local folder, on ``device`` in ``dtype``.

    Attributes:
        name: ``name_or_path`` as given. device, dtype: where and in which precision the model runs.
        model: the ``transformers.SamModel``. processor: its ``SamProcessor``.
        decoder: ``"fast"`` (:func:`protoseg.models.sam_decoder.decode_points`) or ``"hf"``
            (``SamModel.forward``) runs the prompt encoder + mask decoder.

    Raises:
        ProtosegError: an unknown ``decoder``.
    """

    def __init__(self, name_or_path: str | Path, device: str | torch.device | None = None,
                 dtype: str | torch.dtype | None = None, decoder: str = "fast"):
        from transformers import SamModel, SamProcessor  # import time: transformers ~1.3 s, paid when a model loads

        if decoder not in DECODERS:
            raise ProtosegError(f"unknown SAM decoder {decoder!r}; use one of {', '.join(DECODERS)}")
        self.decoder = decoder
        self._prepared: tuple[SamImageEmbedding, DecoderImage] | None = None
        self.name = str(name_or_path)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = from_pretrained(SamModel.from_pretrained, self.name).to(self.device, self.dtype).eval()
        self.processor = from_pretrained(SamProcessor.from_pretrained, self.name)

    @torch.no_grad()
    def embed(self, image: np.ndarray | torch.Tensor) -> SamImageEmbedding:
        """Embed one image: uint8 ``[H, W, 3]`` or float 0-255 ``[3, H, W]`` (:func:`as_uint8_image`)."""
        inputs = self.processor(images=as_uint8_image(image), return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.device, self.dtype)
        original = tuple(int(x) for x in inputs["original_sizes"][0])
        reshaped = tuple(int(x) for x in inputs["reshaped_input_sizes"][0])
        return SamImageEmbedding(self.model.get_image_embeddings(pixels), original, reshaped)  # type: ignore[arg-type]

    @torch.no_grad()
    def predict_points(self, image: SamImageEmbedding, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Three masks per single-point prompt (``multimask_output=True``), upscaled to the image.

        Args:
            image: the embedded image.
            points: ``[P, 2]`` ``(x, y)`` prompts in pixels of the original image.

        Returns:
            Mask logits ``[P * 3, H, W]`` (float32, not binarised) and predicted IoUs ``[P * 3]``, the three
            masks of point ``p`` at rows ``3p .. 3p + 2``.
        """
        low, iou = self.predict_points_low(image, points)
        return self.upscale(image, low), iou

    @torch.no_grad()
    def predict_points_low(self, image: SamImageEmbedding, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`predict_points`, at the decoder's resolution: logits ``[P * 3, h, w]`` (SAM-B: 256 x 256,
        covering the padded encoder input; :meth:`low_res_valid` is the image's part) and IoUs ``[P * 3]``."""
        original, reshaped = image.original_size, image.reshaped_size
        scale = torch.tensor([reshaped[1] / original[1], reshaped[0] / original[0]], device=self.device)
        pts = (points.to(self.device) * scale)[None, :, None, :].to(self.dtype)  # [1, P, 1, 2]
        labels = torch.ones(pts.shape[:3], dtype=torch.long, device=self.device)
        masks, iou = self.decode(image, pts[0], labels[0])
        return masks.float().flatten(0, 1), iou.float().flatten()

    @torch.no_grad()
    def decode(self, image: SamImageEmbedding, points: torch.Tensor, labels: torch.Tensor,
               multimask_output: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM's prompt encoder + mask decoder (by :attr:`decoder`) for prompts of one embedded image.

        Args:
            points: ``[P, n, 2]`` ``(x, y)`` in pixels of the encoder's input frame, in the model's dtype.
            labels: ``[P, n]`` point labels (``1`` foreground, ``0`` background).

        Returns:
            Logits ``[P, K, h, w]`` and predicted IoUs ``[P, K]`` in the model's dtype, ``K = 3`` with
            ``multimask_output`` else ``1``.
        """
        if self.decoder == "hf":
            return decode_points_hf(self.model, image.embedding, points, labels, multimask_output)
        prepared = self._prepared  # the last image's shared part (a local: safe when threads share the predictor)
        if prepared is None or prepared[0] is not image:
            prepared = self._prepared = (image, prepare_image(self.model, image.embedding))
        return decode_points(self.model, prepared[1], points, labels, multimask_output)

    def low_res_valid(self, image: SamImageEmbedding, low_size: tuple[int, int]) -> tuple[int, int]:
        """``(rows, cols)`` of decoder-resolution logits ``low_size`` that cover the image (not the padding)."""
        side = int(self.model.config.vision_config.image_size)
        rh, rw = image.reshaped_size
        return (min(low_size[0], math.ceil(rh * low_size[0] / side)),
                min(low_size[1], math.ceil(rw * low_size[1] / side)))

    @torch.no_grad()
    def upscale(self, image: SamImageEmbedding, low: torch.Tensor) -> torch.Tensor:
        """Decoder-resolution logits ``[K, h, w]`` -> logits ``[K, H, W]`` at the image size (SAM's
        post-processing: to the encoder frame, crop the padding, to the original size; bilinear)."""
        if len(low) == 0:
            return torch.zeros(0, *image.original_size, device=low.device)
        return self.processor.post_process_masks([low[:, None]], [list(image.original_size)],
                                                 [list(image.reshaped_size)], binarize=False)[0][:, 0]
