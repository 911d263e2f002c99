"""What both builders share: model loading cached per process, item seeds, image batches."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from protoseg.config.build import BuildPreset

_MODELS: dict[tuple[Any, ...], Any] = {}


def cached_model(key: tuple[Any, ...], factory: Callable[[], Any]) -> Any:
    """One instance per ``key`` per process (a Ray worker keeps its models between shards)."""
    if key not in _MODELS:
        _MODELS[key] = factory()
    return _MODELS[key]


def item_seed(seed: int, *parts: int | str) -> int:
    """A 31-bit generator seed from the global seed and an item's identity (independent of sharding)."""
    words = [int(seed) & 0xFFFFFFFF]
    words += [zlib.crc32(p.encode()) if isinstance(p, str) else int(p) & 0xFFFFFFFF for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1)[0] & 0x7FFFFFFF)


def resolve_tiny(preset: BuildPreset) -> BuildPreset:
    """Replace ``"tiny"`` model fields by the tiny model folders, creating them on first use."""
    roles = [r for r in ("diffusion", "features", "text") if getattr(preset, r) == "tiny"]
    if not roles:
        return preset
    from protoseg.testing.tiny import ensure_tiny_models

    paths = ensure_tiny_models(tuple(roles))
    return replace(preset, **{role: str(path) for role, path in paths.items()})


def load_synthesis_models(preset: BuildPreset, device: str | None, dtype: str | None) -> tuple[Any, Any]:
    """The diffusion pipeline (``dtype``: ``None`` = fp16 on CUDA, fp32 on CPU) and DINOv2 (fp32)."""
    from protoseg.models.diffusion import load_pipeline
    from protoseg.models.dinov2 import Dinov2Features

    pipe = cached_model(("sd", preset.diffusion, device, dtype, preset.scheduler),
                        lambda: load_pipeline(preset.diffusion, device, dtype, scheduler=preset.scheduler))
    features = cached_model(("dinov2", preset.features, device),
                            lambda: Dinov2Features(preset.features, device=device))
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
