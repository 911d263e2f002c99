"""Proposals from Felzenszwalb superpixels: a SAM-free proposal source and the cover for pixels no proposal has."""

from __future__ import annotations

import numpy as np
import torch

from protoseg.config.superpixels import SuperpixelParams
from protoseg.regions import superpixels


def superpixel_proposals(image: np.ndarray, params: SuperpixelParams) -> torch.Tensor:
    """One proposal per Felzenszwalb segment of uint8 ``image [H, W, 3]``: bool ``[R, H, W]`` (CPU), in
    segment-id order; the proposals partition the image."""
    labels = torch.from_numpy(superpixels(image, params))
    return labels[None] == torch.arange(int(labels.max()) + 1)[:, None, None]


def uncovered_superpixels(masks: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
    """The uncovered part of every superpixel that has pixels no proposal covers.

    Args:
        masks: bool ``[N, H, W]`` proposals (``N`` may be 0).
        fine: int ``[H, W]`` superpixel ids.

    Returns:
        bool ``[E, H, W]`` (``E`` may be 0), by increasing superpixel id: ``(fine == r) & uncovered``.
    """
    uncovered = ~masks.any(0) if len(masks) else torch.ones_like(fine, dtype=torch.bool)
    if not uncovered.any():
        return torch.zeros(0, *fine.shape, dtype=torch.bool, device=fine.device)
    ids = torch.unique(fine[uncovered])
    return (fine[None] == ids[:, None, None]) & uncovered[None]
