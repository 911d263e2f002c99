"""Whole-level and part-level prototypes of one support image (DPSM eq. 2, 3 and 7).

Given dense features of a support image and its foreground mask, the image contributes

- one *whole-level* prototype: the features mask-average-pooled over the foreground, and
- one *part-level* prototype per Felzenszwalb superpixel ``R_f`` that meets the foreground, pooled over
  ``M_fg ⊙ R_f`` (eq. 3), with a transport *supply*
  ``s_f = (1 / N) · SUM(M_fg ⊙ R_f) / Σ_f SUM(M_fg ⊙ R_f)`` (eq. 7), ``N`` = support images per class.

The supplies of one image therefore sum to ``1 / N`` and the ``N`` images of a class to 1. Areas are
counted at full image resolution. A part whose pooled mass on the feature grid is zero (too small for the
grid with the ``"point"`` rule) has no feature and is dropped; the remaining shares are renormalised so
that the image still sums to ``1 / N``.

Banks built from generated images (:mod:`protoseg.build.dpsm`) and from labelled examples
(:mod:`protoseg.bank.examples`) both use :func:`image_prototypes`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from protoseg.regions import SuperpixelParams, mask_weights, pool_features, region_weights
from protoseg.regions import superpixels as felzenszwalb_superpixels


@dataclass
class ImagePrototypes:
    """Prototypes of one support image.

    Attributes:
        whole: float32 ``[D]`` foreground-pooled feature.
        parts: float32 ``[F, D]`` part prototypes (superpixel ∩ foreground), in superpixel-id order.
        part_areas: float32 ``[F]`` pixels of each part (at image resolution).
        supplies: float32 ``[F]`` eq. 7 supplies, summing to ``1 / images_per_class``.
    """

    whole: np.ndarray
    parts: np.ndarray
    part_areas: np.ndarray
    supplies: np.ndarray

    def __iter__(self):  # allows ``whole, parts, areas, supplies = image_prototypes(...)``
        return iter((self.whole, self.parts, self.part_areas, self.supplies))


def image_prototypes(features: torch.Tensor, image: np.ndarray, fg: np.ndarray,
                     superpixels: SuperpixelParams | None = None, pooling: str = "area",
                     images_per_class: int = 1, labels: np.ndarray | None = None) -> ImagePrototypes | None:
    """Whole row and part rows with supply of one support image.

    Args:
        features: ``[D, h, w]`` dense features of ``image`` (any device; pooled in float32).
        image: uint8 ``[H, W, 3]`` RGB (the superpixels are computed on it).
        fg: bool ``[H, W]`` foreground mask.
        superpixels: Felzenszwalb parameters (defaults of :class:`SuperpixelParams` when ``None``).
        pooling: ``"area"`` or ``"point"`` (:mod:`protoseg.regions`).
        images_per_class: ``N`` of eq. 7.
        labels: optional precomputed superpixel labels ``int [H, W]`` (skips Felzenszwalb).

    Returns:
        :class:`ImagePrototypes`, or ``None`` when the foreground is empty or too small to pool.
    """
    fg = np.asarray(fg, dtype=bool)
    if image.shape[:2] != fg.shape:
        raise ValueError(f"image {image.shape[:2]} and foreground mask {fg.shape} differ in size")
    if not fg.any():
        return None
    grid = (int(features.shape[-2]), int(features.shape[-1]))
    feats = features.detach().float()
    device = feats.device
    whole_w = mask_weights(torch.from_numpy(fg)[None].to(device), grid, pooling)
    whole, whole_mass = pool_features(feats, whole_w)
    if float(whole_mass[0]) <= 0:
        return None

    if labels is None:
        sp = felzenszwalb_superpixels(image, superpixels or SuperpixelParams())
    else:
        sp = np.asarray(labels, dtype=np.int64)
    # Parts = superpixels restricted to the foreground; background pixels get -1 (ignored).
    part_ids = np.where(fg, sp, -1)
    present = np.unique(part_ids[part_ids >= 0])
    dense = np.full(int(sp.max()) + 1, -1, dtype=np.int64)
    dense[present] = np.arange(len(present))
    part_labels = np.where(part_ids >= 0, dense[np.maximum(part_ids, 0)], -1)
    areas = np.bincount(part_labels[part_labels >= 0].ravel(), minlength=len(present)).astype(np.float64)

    weights = region_weights(torch.from_numpy(part_labels).to(device), grid, pooling,
                             num_regions=len(present))
    pooled, mass = pool_features(feats, weights)
    keep = (mass > 0).cpu().numpy() & (areas > 0)
    if not keep.any():
        return None
    areas = areas[keep]
    supplies = areas / areas.sum() / float(images_per_class)
    return ImagePrototypes(
        whole=whole[0].cpu().numpy().astype(np.float32),
        parts=pooled[torch.from_numpy(keep).to(device)].cpu().numpy().astype(np.float32),
        part_areas=areas.astype(np.float32),
        supplies=supplies.astype(np.float32),
    )
