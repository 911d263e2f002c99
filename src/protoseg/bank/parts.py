"""Whole- and part-level prototypes of one object in one image (DPSM eq. 2, 3 and 7).

The same function serves generated support images (foreground = thresholded attention map) and
labelled examples (foreground = ground-truth class mask).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from protoseg.regions import SuperpixelParams, pool_features, region_weights, superpixels


@dataclass
class ImagePrototypes:
    """Prototypes of one foreground in one image.

    Attributes:
        whole: ``[D]`` foreground-pooled feature (MAP over the fg mask).
        whole_area: fg pixels.
        parts: ``[F, D]`` features of the parts (superpixel ∩ fg) that have weight on the feature grid.
        part_areas: ``[F]`` pixels of each part.
    """

    whole: torch.Tensor
    whole_area: float
    parts: torch.Tensor
    part_areas: torch.Tensor


def image_prototypes(features: torch.Tensor, image: np.ndarray, fg: np.ndarray | torch.Tensor,
                     params: SuperpixelParams = SuperpixelParams(), pooling: str = "area",
                     labels: np.ndarray | None = None) -> ImagePrototypes | None:
    """Pool ``features [D, h, w]`` over the foreground ``fg`` (bool ``[H, W]``) of ``image``
    (uint8 ``[H, W, 3]``) and over each superpixel ∩ fg.

    ``labels`` (int ``[H, W]``) reuses superpixels computed once per image. Returns ``None`` when the
    foreground has no weight on the feature grid (too small to describe).
    """
    fg_t = torch.as_tensor(np.asarray(fg), device=features.device).bool()
    grid = tuple(features.shape[-2:])
    whole_w = region_weights(fg_t.long() - 1, grid, pooling, num_regions=1)  # fg -> 0, bg -> -1
    whole, whole_mass = pool_features(features, whole_w)
    if whole_mass[0] <= 0:
        return None
    if labels is None:
        labels = superpixels(image, params)
    sp = torch.as_tensor(labels, device=features.device).long()
    parts_lab = torch.where(fg_t, sp, torch.full_like(sp, -1))
    num = int(sp.max().item()) + 1
    areas = torch.bincount(parts_lab[fg_t], minlength=num).float()
    weights = region_weights(parts_lab, grid, pooling, num_regions=num)
    pooled, mass = pool_features(features, weights)
    keep = (areas > 0) & (mass > 0)
    return ImagePrototypes(whole=whole[0], whole_area=float(fg_t.sum()), parts=pooled[keep],
                           part_areas=areas[keep])


def supply_units(part_areas: torch.Tensor, images_per_class: int) -> torch.Tensor:
    """DPSM eq. 7: ``s_i = (1 / N) * area_i / sum(area)`` for the parts of one support image."""
    return part_areas / part_areas.sum() / images_per_class
