"""The small steps of SAM's automatic mask generation (as segment-anything's ``utils/amg.py``), on tensors.

Each step is a pure function; :mod:`protoseg.proposals.mask_generator` chains them.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.measure import label


def point_grid(points_per_side: int) -> torch.Tensor:
    """``[n * n, 2]`` ``(x, y)`` points at the centres of an ``n x n`` grid on ``[0, 1]^2`` (row-major)."""
    offset = 1.0 / (2 * points_per_side)
    side = torch.linspace(offset, 1 - offset, points_per_side)
    ys, xs = torch.meshgrid(side, side, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)


def filter_by_iou(iou: torch.Tensor, threshold: float) -> torch.Tensor:
    """Bool keep mask ``[N]`` of predicted IoUs ``[N]`` above ``threshold`` (``<= 0`` keeps all)."""
    return iou > threshold if threshold > 0 else torch.ones_like(iou, dtype=torch.bool)


def stability_score(logits: torch.Tensor, mask_threshold: float = 0.0, offset: float = 1.0) -> torch.Tensor:
    """IoU of the masks binarised at ``threshold + offset`` and ``threshold - offset``.

    ``logits [N, H, W]`` -> ``[N]``; the high mask is inside the low one, so IoU = area_high / area_low
    (an empty low mask scores 0).
    """
    high = (logits > mask_threshold + offset).flatten(1).sum(1, dtype=torch.int64)
    low = (logits > mask_threshold - offset).flatten(1).sum(1, dtype=torch.int64)
    ratio = high.double() / low.clamp_min(1).double()
    return torch.where(low > 0, ratio, torch.zeros_like(ratio)).float()


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight ``(x0, y0, x1, y1)`` boxes (inclusive pixel indices) of bool ``masks [N, H, W]`` -> ``[N, 4]``.

    Empty masks get ``(0, 0, 0, 0)``.
    """
    N, H, W = masks.shape
    if N == 0:
        return torch.zeros(0, 4, device=masks.device)
    rows = masks.any(dim=2)  # [N, H]
    cols = masks.any(dim=1)  # [N, W]
    ys = torch.arange(H, device=masks.device)
    xs = torch.arange(W, device=masks.device)
    y0 = torch.where(rows, ys, H).amin(1)
    y1 = torch.where(rows, ys, -1).amax(1)
    x0 = torch.where(cols, xs, W).amin(1)
    x1 = torch.where(cols, xs, -1).amax(1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    empty = ~rows.any(1)
    return torch.where(empty[:, None], torch.zeros_like(boxes), boxes)


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """IoU matrix ``[N, M]`` of ``(x0, y0, x1, y1)`` boxes ``[N, 4]``, ``[M, 4]`` (continuous, area = w * h)."""
    area1 = (boxes1[:, 2] - boxes1[:, 0]).clamp_min(0) * (boxes1[:, 3] - boxes1[:, 1]).clamp_min(0)
    area2 = (boxes2[:, 2] - boxes2[:, 0]).clamp_min(0) * (boxes2[:, 3] - boxes2[:, 1]).clamp_min(0)
    lt = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp_min(0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(inter))


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression (torchvision ``nms`` semantics) of ``boxes [N, 4]`` by ``scores [N]``.

    Boxes are visited by decreasing score (ties: lower index first); a box is dropped when its IoU with an
    already kept box is above ``iou_threshold``. Returns kept indices ``[K]`` by decreasing score.
    """
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    iou = box_iou(boxes[order], boxes[order]).cpu()
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return order[torch.tensor(keep, dtype=torch.long, device=order.device)]


def remove_small_regions(mask: np.ndarray, area_thresh: int, mode: str) -> tuple[np.ndarray, bool]:
    """Remove ``"islands"`` of a bool mask ``[H, W]`` (or fill ``"holes"``) smaller than ``area_thresh`` pixels.

    Returns ``(mask [H, W], changed)``. Uses 8-connectivity like SAM's OpenCV implementation.
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    correct_holes = mode == "holes"
    working = np.logical_xor(correct_holes, mask)
    regions = label(working, connectivity=2)
    sizes = np.bincount(regions.ravel())[1:]
    small = [i + 1 for i, s in enumerate(sizes) if s < area_thresh]
    if not small:
        return mask, False
    fill = [0] + small
    if not correct_holes:
        fill = [i for i in range(len(sizes) + 1) if i not in fill]
        if not fill:  # every region is small: keep the largest
            fill = [int(np.argmax(sizes)) + 1]
    return np.isin(regions, fill), True
