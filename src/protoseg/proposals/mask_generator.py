"""SAM automatic mask generation (as segment-anything's ``automatic_mask_generator.py``), for one crop layer.

:func:`generate_masks` runs the steps of :mod:`protoseg.proposals.amg` over a point-prompted predictor
(:class:`protoseg.models.sam.SamPredictor`) with the :class:`MaskGenerationSettings` of the call:

1. :func:`~protoseg.proposals.amg.point_grid` — ``n x n`` prompt points at cell centres, scaled to the image;
2. the image is embedded once; points are fed in batches of ``points_per_batch`` (3 masks per point,
   low-resolution logits upscaled to the image; SAM's decoder computes what the points of an image share
   once, :mod:`protoseg.models.sam_decoder`);
3. :func:`filter_batch` per batch: predicted IoU above ``pred_iou_thresh``, stability score (IoU of the
   masks thresholded at ``mask_threshold +- stability_score_offset``) at least ``stability_score_thresh``,
   binarise at ``mask_threshold``, drop empty masks, box NMS at ``box_nms_thresh``;
4. box NMS over all batches;
5. optionally :func:`clean_small_regions` (islands and holes below ``min_mask_region_area`` pixels), with
   changed masks losing NMS ties, as SAM does.

Settings are passed per call and never stored on the predictor, so one predictor can serve callers with
different settings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

import numpy as np
import torch

from protoseg.errors import ProtosegError
from protoseg.proposals.amg import (
    box_nms,
    filter_by_iou,
    masks_to_boxes,
    point_grid,
    remove_small_regions,
    stability_score,
)


@dataclass(frozen=True)
class MaskGenerationSettings:
    """Settings of one automatic mask generation (SAM's ``SamAutomaticMaskGenerator`` names and defaults).

    Attributes:
        points_per_side: prompt grid side ``n`` (``n * n`` points).
        points_per_batch: points per model call (memory / speed trade-off; results do not depend on it
            except through the per-batch NMS, as in SAM).
        pred_iou_thresh: keep masks whose predicted IoU is above this (``<= 0`` keeps all).
        stability_score_thresh: keep masks whose stability score is at least this, in ``[0, 1]``
            (``0`` keeps all).
        stability_score_offset: logit offset of the stability score, ``>= 0``.
        box_nms_thresh: box IoU above which the lower-scored mask is suppressed, in ``[0, 1]``.
        min_mask_region_area: remove islands / fill holes smaller than this many pixels (``0``: off).
        mask_threshold: logit threshold that binarises masks.
        filter_resolution: ``"low"``: the predicted-IoU and stability filters and box NMS run on the
            decoder's logits (256 x 256 for SAM-B; boxes and areas at that resolution) and only the
            surviving masks are upscaled to the image; ``"full"``: on masks upscaled to the image first, as
            segment-anything does. Predictors without a decoder-resolution output use ``"full"``.

    Raises:
        ProtosegError: on construction, naming the first invalid field.
    """

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    min_mask_region_area: int = 0
    mask_threshold: float = 0.0
    filter_resolution: str = "low"

    def __post_init__(self) -> None:
        for name in ("points_per_side", "points_per_batch", "min_mask_region_area"):
            value = getattr(self, name)
            lowest = 0 if name == "min_mask_region_area" else 1
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < lowest:
                raise ProtosegError(f"SAM option {name} must be an integer >= {lowest}; got {value!r}")
        for name in ("pred_iou_thresh", "stability_score_thresh", "stability_score_offset", "box_nms_thresh",
                     "mask_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ProtosegError(f"SAM option {name} must be a finite number; got {value!r}")
        for name in ("stability_score_thresh", "box_nms_thresh"):
            if not 0 <= getattr(self, name) <= 1:
                raise ProtosegError(f"SAM option {name} must be in [0, 1]; got {getattr(self, name)!r}")
        if self.filter_resolution not in ("low", "full"):
            raise ProtosegError(f"SAM option filter_resolution must be 'low' or 'full'; got {self.filter_resolution!r}")
        if self.stability_score_offset < 0:
            raise ProtosegError(f"SAM option stability_score_offset must be >= 0; got {self.stability_score_offset!r}")

    @classmethod
    def from_options(cls, options: MaskGenerationSettings | Mapping[str, Any] | None = None
                     ) -> MaskGenerationSettings:
        """Defaults overridden by ``options`` (a mapping of field names, or settings returned as they are)."""
        if isinstance(options, MaskGenerationSettings):
            return options
        options = dict(options or {})
        known = [f.name for f in fields(cls)]
        for key in options:
            if key not in known:
                raise ProtosegError(f"unknown SAM option {key!r}; known: {', '.join(known)}")
        return cls(**options)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-able dict (``from_options`` reads it back)."""
        return asdict(self)


class MaskPredictor(Protocol):
    """What mask generation needs of a model (:class:`protoseg.models.sam.SamPredictor`)."""

    device: torch.device

    def embed(self, image: np.ndarray | torch.Tensor) -> Any:
        """Embed uint8 ``[H, W, 3]`` / float ``[3, H, W]``; the result has ``original_size`` ``(H, W)``."""
        ...

    def predict_points(self, image: Any, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel points ``[P, 2]`` -> mask logits ``[P * 3, H, W]`` and predicted IoUs ``[P * 3]``."""
        ...


def filter_batch(logits: torch.Tensor, iou: torch.Tensor, settings: MaskGenerationSettings
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Filter one batch of candidates: mask logits ``[N, H, W]``, predicted IoUs ``[N]``.

    Returns bool masks ``[K, H, W]`` and their predicted IoUs ``[K]``, by decreasing IoU (after NMS).
    """
    keep = filter_by_iou(iou, settings.pred_iou_thresh)
    logits, iou = logits[keep], iou[keep]
    stable = stability_score(logits, settings.mask_threshold, settings.stability_score_offset)
    threshold = settings.stability_score_thresh
    keep = stable >= threshold if threshold > 0 else stable >= 0
    masks = logits[keep] > settings.mask_threshold
    iou = iou[keep]
    nonempty = masks.flatten(1).any(1)
    masks, iou = masks[nonempty], iou[nonempty]
    kept = box_nms(masks_to_boxes(masks), iou, settings.box_nms_thresh)
    return masks[kept], iou[kept]


def clean_small_regions(masks: torch.Tensor, scores: torch.Tensor, min_area: int, nms_thresh: float
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill holes and remove islands below ``min_area`` pixels, then box NMS again.

    ``masks`` bool ``[N, H, W]``, ``scores [N]`` -> ``([K, H, W], [K])`` sorted by decreasing score. A changed
    mask competes in the NMS with priority 0 (an unchanged one is preferred); a kept mask keeps its
    original score, as in SAM.
    """
    cleaned, priority = [], []
    for mask, score in zip(masks.cpu().numpy(), scores.tolist(), strict=True):
        mask, changed_holes = remove_small_regions(mask, min_area, "holes")
        mask, changed_islands = remove_small_regions(mask, min_area, "islands")
        cleaned.append(mask)
        priority.append(0.0 if (changed_holes or changed_islands) else float(score))
    out = torch.from_numpy(np.stack(cleaned)).to(masks.device)
    kept = box_nms(masks_to_boxes(out), torch.tensor(priority, device=masks.device), nms_thresh)
    kept, _ = kept.sort()
    order = torch.sort(scores[kept], descending=True, stable=True).indices
    kept = kept[order]
    return out[kept], scores[kept]


@torch.no_grad()
def generate_masks(predictor: MaskPredictor, image: np.ndarray | torch.Tensor,
                   settings: MaskGenerationSettings = MaskGenerationSettings()
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-agnostic mask proposals of one image (module docstring).

    Args:
        predictor: a point-prompted mask predictor (:class:`protoseg.models.sam.SamPredictor`).
        image: uint8 ``[H, W, 3]`` or float ``[3, H, W]`` RGB 0-255.
        settings: this call's settings.

    Returns:
        bool masks ``[N, H, W]`` and predicted-IoU scores ``[N]`` on the predictor's device, sorted by
        decreasing score.
    """
    embedded = predictor.embed(image)
    H, W = embedded.original_size
    grid = point_grid(settings.points_per_side) * torch.tensor([W, H], dtype=torch.float32)
    if settings.filter_resolution == "low" and hasattr(predictor, "predict_points_low"):
        masks, scores = _generate_low(predictor, embedded, grid, settings)
        if settings.min_mask_region_area > 0 and len(masks):
            masks, scores = clean_small_regions(masks, scores, settings.min_mask_region_area,
                                                settings.box_nms_thresh)
        return masks, scores
    all_masks, all_scores = [], []
    for start in range(0, len(grid), settings.points_per_batch):
        logits, iou = predictor.predict_points(embedded, grid[start:start + settings.points_per_batch])
        masks, scores = filter_batch(logits, iou, settings)
        all_masks.append(masks)
        all_scores.append(scores)
    masks, scores = torch.cat(all_masks), torch.cat(all_scores)
    kept = box_nms(masks_to_boxes(masks), scores, settings.box_nms_thresh)
    masks, scores = masks[kept], scores[kept]
    if settings.min_mask_region_area > 0 and len(masks):
        masks, scores = clean_small_regions(masks, scores, settings.min_mask_region_area, settings.box_nms_thresh)
    return masks, scores


def _generate_low(predictor: Any, embedded: Any, grid: torch.Tensor, settings: MaskGenerationSettings
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Filtering and NMS on decoder-resolution logits; only the survivors are upscaled (``filter_resolution="low"``).

    Boxes are taken on the low-resolution masks (box IoU does not change when both boxes are scaled the same
    way; only the pixel rounding of their edges does), areas for the stability score likewise.
    """
    low_all, score_all, box_all = [], [], []
    valid = None
    for start in range(0, len(grid), settings.points_per_batch):
        low, iou = predictor.predict_points_low(embedded, grid[start:start + settings.points_per_batch])
        if valid is None:
            valid = predictor.low_res_valid(embedded, tuple(low.shape[-2:]))
        keep = filter_by_iou(iou, settings.pred_iou_thresh)
        low, iou = low[keep], iou[keep]
        inside = low[:, :valid[0], :valid[1]]
        stable = stability_score(inside, settings.mask_threshold, settings.stability_score_offset)
        threshold = settings.stability_score_thresh
        keep = stable >= threshold if threshold > 0 else stable >= 0
        low, iou, inside = low[keep], iou[keep], inside[keep]
        binary = inside > settings.mask_threshold
        nonempty = binary.flatten(1).any(1)
        low, iou, binary = low[nonempty], iou[nonempty], binary[nonempty]
        boxes = masks_to_boxes(binary)
        kept = box_nms(boxes, iou, settings.box_nms_thresh)
        low_all.append(low[kept])
        score_all.append(iou[kept])
        box_all.append(boxes[kept])
    low, scores, boxes = torch.cat(low_all), torch.cat(score_all), torch.cat(box_all)
    kept = box_nms(boxes, scores, settings.box_nms_thresh)
    masks = predictor.upscale(embedded, low[kept]) > settings.mask_threshold
    scores = scores[kept]
    nonempty = masks.flatten(1).any(1)
    return masks[nonempty], scores[nonempty]
