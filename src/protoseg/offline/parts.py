"""Whole- and part-level prototypes of the objects in one image (DPSM eq. 2, 3 and 7).

The same code serves generated support images (foreground = thresholded attention map) and labelled
examples (foreground = ground-truth class mask). Parts are superpixels ∩ foreground; because pooling
weights are linear in the mask, the whole-object weights are the sum of its parts' weights, so one
scatter over the image computes every part of every object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from protoseg.config.superpixels import SuperpixelParams
from protoseg.regions import pool_features, region_weights, superpixels


@dataclass
class ImagePrototypes:
    """Prototypes of one foreground in one image.

    Attributes:
        whole: ``[D]`` foreground-pooled feature (mask average pooling over the fg mask).
        whole_area: fg pixels.
        parts: ``[F, D]`` features of the parts (superpixel ∩ fg) that have weight on the feature grid.
        part_areas: ``[F]`` pixels of each part.
    """

    whole: torch.Tensor
    whole_area: float
    parts: torch.Tensor
    part_areas: torch.Tensor


def object_prototypes(features: torch.Tensor, objects: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
                      pooling: str = "area", ignore: int = 255) -> dict[int, ImagePrototypes]:
    """Prototypes of every object of an image in one pass.

    Args:
        features: ``[D, h, w]`` patch features of the image.
        objects: int ``[H, W]`` object/class id per pixel (``ignore`` = no object).
        labels: int ``[H, W]`` superpixel ids ``0..S-1``.
        pooling: ``"area"`` or ``"point"`` (:mod:`protoseg.regions`).

    Returns:
        object id -> :class:`ImagePrototypes`, for objects with weight on the feature grid.
    """
    device = features.device
    obj = torch.as_tensor(np.asarray(objects), device=device).long()
    sp = torch.as_tensor(np.asarray(labels), device=device).long()
    valid = obj != ignore
    num_sp = int(sp.max().item()) + 1
    # Intersection id = object * S + superpixel, densified so the scatter stays small.
    inter = torch.where(valid, obj * num_sp + sp, torch.full_like(sp, -1))
    ids, dense = torch.unique(inter[valid], return_inverse=True)
    part_lab = torch.full_like(sp, -1)
    part_lab[valid] = dense
    weights = region_weights(part_lab, tuple(features.shape[-2:]), pooling, num_regions=len(ids))
    areas = torch.bincount(dense, minlength=len(ids)).float()
    pooled, mass = pool_features(features, weights)
    owner = torch.div(ids, num_sp, rounding_mode="floor")
    out: dict[int, ImagePrototypes] = {}
    for o in torch.unique(owner).tolist():
        rows = owner == o
        whole, whole_mass = pool_features(features, weights[rows].sum(0, keepdim=True))
        if whole_mass[0] <= 0:
            continue
        keep = rows & (mass > 0)
        out[int(o)] = ImagePrototypes(whole=whole[0], whole_area=float(areas[rows].sum()), parts=pooled[keep],
                                      part_areas=areas[keep])
    return out


def image_prototypes(features: torch.Tensor, image: np.ndarray, fg: np.ndarray | torch.Tensor,
                     params: SuperpixelParams = SuperpixelParams(), pooling: str = "area",
                     labels: np.ndarray | None = None) -> ImagePrototypes | None:
    """Prototypes of the single foreground ``fg`` (bool ``[H, W]``) of ``image`` (uint8 ``[H, W, 3]``).

    ``labels`` reuses superpixels computed once per image. ``None`` when the foreground has no weight
    on the feature grid (too small to describe).
    """
    if labels is None:
        labels = superpixels(image, params)
    objects = np.where(np.asarray(torch.as_tensor(fg).cpu()), 0, 255)
    return object_prototypes(features, objects, labels, pooling).get(0)


def supply_units(part_areas: torch.Tensor, images_per_class: int) -> torch.Tensor:
    """DPSM eq. 7: ``s_i = (1 / N) * area_i / sum(area)`` for the parts of one support image."""
    return part_areas / part_areas.sum() / images_per_class
