"""DINOv2 patch features (``Dinov2Model`` / ``Dinov2WithRegistersModel``) with FreeDA's preprocessing.

Per image: squash resize to ``image_size x image_size`` (bilinear, no antialias), ``/255``, ImageNet
mean/std (or the statistics in the weights' ``preprocessor_config.json``), forward, take the tokens after
the final LayerNorm (``last_hidden_state``), drop CLS and any register tokens, reshape to
``[D, image_size // patch, image_size // patch]`` (``37 x 37`` for ViT-*/14 at 518).
"""

from __future__ import annotations

import torch

from protoseg.models.base import resolve_device, resolve_dtype
from protoseg.models.hub import from_pretrained
from protoseg.models.pixels import IMAGENET_MEAN, IMAGENET_STD, processor_stats, squash_normalize


class Dinov2Features:
    """A :class:`~protoseg.models.base.DenseFeatureExtractor` over a DINOv2 backbone.

    Args:
        name_or_path: hub id (``facebook/dinov2-base``) or local folder saved with ``save_pretrained``.
        device: ``None``/``"auto"`` = CUDA when available.
        dtype: weights and compute dtype (``float32``, ``float16``, ``bfloat16``); outputs are float32.
        image_size: square input side; must be a multiple of the patch size.

    Attributes:
        encoder_id: ``name_or_path`` as given. dim: hidden size ``D``. grid: ``(g, g)``,
        ``g = image_size // patch_size``. device, dtype. mean, std: normalisation statistics.
    """

    def __init__(self, name_or_path: str, device: str | torch.device | None = None,
                 dtype: str | torch.dtype | None = None, image_size: int = 518):
        # import time: transformers ~1.3 s, paid when a model loads
        from transformers import AutoConfig, Dinov2Model, Dinov2WithRegistersModel

        self.encoder_id = str(name_or_path)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        config = from_pretrained(AutoConfig.from_pretrained, str(name_or_path))
        # Checkpoints with register tokens need their own class (Dinov2Model would drop the registers).
        cls = Dinov2WithRegistersModel if config.model_type == "dinov2_with_registers" else Dinov2Model
        model = from_pretrained(cls.from_pretrained, str(name_or_path), config=config)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        config = self.model.config
        patch = config.patch_size if isinstance(config.patch_size, int) else config.patch_size[0]
        if image_size % patch:
            raise ValueError(f"image_size {image_size} is not a multiple of the patch size {patch}")
        self.image_size = image_size
        self.patch_size = patch
        self.dim = int(config.hidden_size)
        self.grid = (image_size // patch, image_size // patch)
        self.num_prefix_tokens = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
        self.mean, self.std = processor_stats(str(name_or_path), IMAGENET_MEAN, IMAGENET_STD)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """float ``[B, 3, H, W]`` RGB 0-255 -> normalised ``[B, 3, S, S]`` (model dtype and device)."""
        return squash_normalize(images.to(self.device), (self.image_size, self.image_size), "bilinear",
                                self.mean, self.std, self.dtype)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``images``: float ``[B, 3, H, W]`` RGB 0-255 -> float32 ``[B, D, g, g]`` patch tokens."""
        tokens = self.model(pixel_values=self.preprocess(images)).last_hidden_state  # [B, P+N, D]
        patches = tokens[:, self.num_prefix_tokens:]
        B, N, D = patches.shape
        gh, gw = self.grid
        if N != gh * gw:
            raise RuntimeError(f"DINOv2 returned {N} patch tokens, expected {gh}x{gw}")
        return patches.float().transpose(1, 2).reshape(B, D, gh, gw).contiguous()
