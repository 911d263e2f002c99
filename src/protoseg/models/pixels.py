"""Pixel preprocessing shared by the model adapters: squash resize + mean/std normalisation.

FreeDA's code resizes crops with torchvision ``Resize`` on float tensors, where ``antialias`` is off;
that is exactly :func:`torch.nn.functional.interpolate` with ``align_corners=False``, no antialias, no
clamping. Library image processors (center crop, antialias, PIL resampling) are deliberately not used.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def squash_normalize(images: torch.Tensor, size: tuple[int, int], mode: str, mean: Sequence[float],
                     std: Sequence[float], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Resize to ``size`` ignoring aspect ratio, divide by 255, normalise.

    Args:
        images: float ``[B, 3, H, W]`` RGB in 0-255.
        size: output ``(h, w)``.
        mode: ``"bilinear"`` or ``"bicubic"`` (``align_corners=False``, ``antialias=False``).
        mean: per-channel means on the 0-1 scale.
        std: per-channel standard deviations on the 0-1 scale.
        dtype: dtype of the returned tensor (the arithmetic is done in float32).

    Returns:
        ``[B, 3, h, w]`` normalised pixel values in ``dtype``.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W], got shape {tuple(images.shape)}")
    x = images.float()
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=False)
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return ((x / 255.0 - m) / s).to(dtype)


def processor_stats(name_or_path: str, default_mean: Sequence[float], default_std: Sequence[float]
                    ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``image_mean`` / ``image_std`` from the weights' ``preprocessor_config.json`` when it exists
    (local folder or hub cache), otherwise the defaults."""
    from transformers.utils import cached_file  # import time: transformers ~1.3 s, paid when a model loads

    try:
        path = cached_file(name_or_path, "preprocessor_config.json",
                           _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
    except (OSError, ValueError):
        path = None
    if path is None:
        return tuple(default_mean), tuple(default_std)
    with open(path) as f:
        cfg = json.load(f)
    mean = cfg.get("image_mean", default_mean)
    std = cfg.get("image_std", default_std)
    if len(mean) != 3 or len(std) != 3:
        return tuple(default_mean), tuple(default_std)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)
