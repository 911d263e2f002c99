"""What the builders share: model loading cached per process, image batches, string arrays."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from protoseg.config.build import BuildPreset
from protoseg.models.diffusion import load_pipeline
from protoseg.models.dinov2 import Dinov2Features
from protoseg.models.hub import resolve_weights

_MODELS: dict[tuple[Any, ...], Any] = {}


def cached_model(key: tuple[Any, ...], factory: Callable[[], Any]) -> Any:
    """One instance per ``key`` per process (a Ray worker keeps its models between shards)."""
    if key not in _MODELS:
        _MODELS[key] = factory()
    return _MODELS[key]


def load_synthesis_models(preset: BuildPreset, device: str | None, dtype: str | None) -> tuple[Any, Any]:
    """The diffusion pipeline (``dtype``: ``None`` = fp16 on CUDA, fp32 on CPU) and DINOv2 (fp32)."""
    diffusion = resolve_weights(preset.diffusion, "diffusion")
    dinov2 = resolve_weights(preset.features, "features")
    pipe = cached_model(("sd", diffusion, device, dtype, preset.scheduler),
                        lambda: load_pipeline(diffusion, device, dtype, scheduler=preset.scheduler))
    features = cached_model(("dinov2", dinov2, device), lambda: Dinov2Features(dinov2, device=device))
    return pipe, features


def image_features(features: Any, images: list[np.ndarray], batch_size: int) -> list[torch.Tensor]:
    """Dense features ``[D, h, w]`` (on the extractor's device) of uint8 ``[H, W, 3]`` images, batched."""
    out: list[torch.Tensor] = []
    for start in range(0, len(images), batch_size):
        batch = np.stack(images[start:start + batch_size])
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
        out.extend(features(x))
    return out


def str_array(values: list[str]) -> np.ndarray:
    """Strings as a fixed-width unicode array (``.npz`` stores it without pickle)."""
    return np.asarray(values, dtype=np.str_) if values else np.zeros(0, dtype="<U1")
