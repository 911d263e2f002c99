"""Felzenszwalb superpixel parameters: a record shared by presets, matcher options and build presets."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SuperpixelParams:
    """Felzenszwalb parameters (scikit-image semantics, :func:`protoseg.regions.superpixels`)."""

    scale: float = 100.0
    sigma: float = 1.0
    min_size: int = 20
