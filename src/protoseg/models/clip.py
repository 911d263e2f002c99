"""CLIP text and image embeddings (``transformers.CLIPModel``) as FreeDA uses them.

- Text: prompts are tokenised (lower-cased, at most 77 tokens, truncated) and embedded with
  ``get_text_features`` (projected, **not** normalised). Sequences are padded to the longest prompt of a
  batch, not to 77: CLIP's text transformer is causal and pools the first end-of-text token, so padding
  after it never changes the embedding.
- Class embeddings (:meth:`ClipModel.encode_classes`): FreeDA averages the *un-normalised* embeddings of
  its 7 templates, then L2-normalises (``normalize_each=False``); the usual CLIP recipe normalises each
  template embedding before averaging (``normalize_each=True``).
- Images: squash resize to the vision tower's input size (224) with bicubic interpolation and no
  antialias, ``/255``, OpenAI CLIP mean/std (or the weights' ``preprocessor_config.json``), projected
  and L2-normalised.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from protoseg.errors import ProtosegError
from protoseg.models.base import resolve_device, resolve_dtype
from protoseg.models.hub import from_pretrained
from protoseg.models.pixels import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, processor_stats, squash_normalize

#: FreeDA's evaluation templates (``sub_imagenet_template``: CLIP's ImageNet "best 7").
FREEDA_TEMPLATES: tuple[str, ...] = (
    "itap of a {}.",
    "a bad photo of a {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)

#: CLIP's context length.
CONTEXT_LENGTH = 77


def _output_tensor(out: object) -> torch.Tensor:
    """``get_*_features`` returns a tensor (transformers 4) or an output whose ``pooler_output`` is the
    projection (transformers 5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output  # type: ignore[attr-defined]


class ClipModel:
    """Text encoder for class names / keys and image encoder for the global term.

    Args:
        name_or_path: hub id (``openai/clip-vit-base-patch16``) or local folder with the model and its
            tokenizer (``save_pretrained`` of both).
        device: ``None``/``"auto"`` = CUDA when available.
        dtype: weights and compute dtype; returned embeddings are float32.
        batch_size: prompts per text forward.

    Attributes:
        encoder_id: ``name_or_path`` as given. dim: projection dimension ``Dt``. image_size: vision input
        side. mean, std: image statistics.
    """

    def __init__(self, name_or_path: str, device: str | torch.device | None = None,
                 dtype: str | torch.dtype | None = None, batch_size: int = 256):
        from transformers import AutoTokenizer, CLIPModel  # import time: transformers ~1.3 s, paid when a model loads

        self.encoder_id = str(name_or_path)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.batch_size = batch_size
        model = from_pretrained(CLIPModel.from_pretrained, str(name_or_path))
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.tokenizer = from_pretrained(AutoTokenizer.from_pretrained, str(name_or_path))
        config = self.model.config
        self.dim = int(config.projection_dim)
        size = config.vision_config.image_size
        self.image_size = int(size if isinstance(size, int) else size[0])
        self.mean, self.std = processor_stats(str(name_or_path), OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)

    # ------------------------------------------------------------------ text
    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids and attention mask ``[N, L]`` (``L <= 77``, padded to the longest prompt)."""
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=CONTEXT_LENGTH,
                               return_tensors="pt")
        return {"input_ids": batch["input_ids"].to(self.device),
                "attention_mask": batch["attention_mask"].to(self.device)}

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """``texts`` (N prompts) -> float32 ``[N, Dt]`` projected, un-normalised embeddings."""
        if isinstance(texts, str):
            raise TypeError("encode_text takes a list of strings")
        texts = list(texts)
        if not texts:
            return torch.zeros(0, self.dim, device=self.device)
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenize(texts[start:start + self.batch_size])
            chunks.append(_output_tensor(self.model.get_text_features(**tokens)).float())
        return torch.cat(chunks)

    @torch.no_grad()
    def encode_classes(self, names: Sequence[str], templates: Sequence[str] = FREEDA_TEMPLATES,
                       normalize_each: bool = False) -> torch.Tensor:
        """One L2-normalised embedding per class: float32 ``[N, Dt]``.

        Each name is put in every template (``template.format(name)``, names kept byte-identical).
        ``normalize_each=False`` (FreeDA): ``normalize(mean_t e_t)``; ``True`` (CLIP):
        ``normalize(mean_t normalize(e_t))``. Normalisation uses ``eps=1e-6``.
        """
        names = list(names)
        templates = list(templates)
        if not names:
            raise ProtosegError("no class names to encode")
        if not templates or any("{}" not in t for t in templates):
            raise ProtosegError(f"templates must be non-empty and each contain '{{}}', got {templates!r}")
        prompts = [t.format(name) for name in names for t in templates]
        emb = self.encode_text(prompts).view(len(names), len(templates), -1)
        if normalize_each:
            emb = F.normalize(emb, dim=-1, eps=1e-6)
        return F.normalize(emb.mean(1), dim=-1, eps=1e-6)

    # ------------------------------------------------------------------ images
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """float ``[B, 3, H, W]`` RGB 0-255 -> normalised ``[B, 3, S, S]`` (bicubic squash, no antialias)."""
        return squash_normalize(images.to(self.device), (self.image_size, self.image_size), "bicubic",
                                self.mean, self.std, self.dtype)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """``images``: float ``[B, 3, H, W]`` RGB 0-255 -> float32 ``[B, Dt]`` L2-normalised embeddings."""
        out = self.model.get_image_features(pixel_values=self.preprocess(images))
        return F.normalize(_output_tensor(out).float(), dim=-1, eps=1e-6)
