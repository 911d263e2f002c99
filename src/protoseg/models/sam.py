"""SAM automatic mask generation (class-agnostic proposals) over transformers ``SamModel`` / ``SamProcessor``.

The steps of Segment Anything's automatic mask generator for one crop layer (the whole image), each a
small function:

1. :func:`point_grid` — ``n x n`` prompt points at cell centres, in normalised ``[0, 1]`` coordinates;
2. the image is embedded once; points are fed in batches of ``points_per_batch`` with
   ``multimask_output=True`` (3 masks per point) and the low-resolution logits are upscaled to the image;
3. :func:`filter_by_iou` — keep masks whose predicted IoU is above ``pred_iou_thresh``;
4. :func:`stability_score` — IoU between the masks thresholded at ``mask_threshold +- offset``; keep those
   above ``stability_score_thresh``;
5. binarise at ``mask_threshold``, :func:`masks_to_boxes`, and :func:`box_nms` (greedy, IoU of boxes
   above ``box_nms_thresh`` suppresses the lower-scored mask) within each batch and over all batches;
6. optionally :func:`remove_small_regions` (islands and holes below ``min_mask_region_area`` pixels),
   re-scoring changed masks and running NMS again, as SAM does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from protoseg.models.base import resolve_device, resolve_dtype
from protoseg.models.hub import from_pretrained


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
    """IoU matrix ``[N, M]`` of ``(x0, y0, x1, y1)`` boxes (continuous coordinates, area = w * h)."""
    area1 = (boxes1[:, 2] - boxes1[:, 0]).clamp_min(0) * (boxes1[:, 3] - boxes1[:, 1]).clamp_min(0)
    area2 = (boxes2[:, 2] - boxes2[:, 0]).clamp_min(0) * (boxes2[:, 3] - boxes2[:, 1]).clamp_min(0)
    lt = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp_min(0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(inter))


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression (torchvision ``nms`` semantics).

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
    """Remove ``"islands"`` of a bool mask (or fill ``"holes"``) smaller than ``area_thresh`` pixels.

    Returns ``(mask, changed)``. Uses 8-connectivity like SAM's OpenCV implementation.
    """
    from skimage.measure import label

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


class SamProposer:
    """Class-agnostic mask proposals from SAM's automatic mask generation (module docstring).

    ``SamProposer(name_or_path)(image)`` -> ``(masks bool [N, H, W], scores [N])`` on ``device``, sorted by
    decreasing predicted IoU.
    """

    def __init__(self, name_or_path: str | Path, device: str | torch.device | None = None,
                 dtype: str | torch.dtype | None = None, points_per_side: int = 32,
                 pred_iou_thresh: float = 0.88, stability_score_thresh: float = 0.95,
                 stability_score_offset: float = 1.0, box_nms_thresh: float = 0.7,
                 min_mask_region_area: int = 0, points_per_batch: int = 64, mask_threshold: float = 0.0):
        from transformers import SamModel, SamProcessor

        self.name = str(name_or_path)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = from_pretrained(SamModel.from_pretrained, self.name).to(self.device, self.dtype).eval()
        self.processor = from_pretrained(SamProcessor.from_pretrained, self.name)
        self.points_per_side = points_per_side
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.min_mask_region_area = min_mask_region_area
        self.points_per_batch = points_per_batch
        self.mask_threshold = mask_threshold

    def _as_uint8(self, image: np.ndarray | torch.Tensor) -> np.ndarray:
        if isinstance(image, torch.Tensor):
            if image.ndim == 3 and image.shape[0] == 3 and image.shape[-1] != 3:
                image = image.permute(1, 2, 0)
            image = image.detach().float().round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        image = np.asarray(image)
        if image.dtype != np.uint8:
            image = np.clip(np.round(image), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(image)

    @torch.no_grad()
    def embed(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
        """Image embedding ``[1, C, h, w]``, original ``(H, W)`` and resized ``(h', w')`` input size."""
        inputs = self.processor(images=image, return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.device, self.dtype)
        original = tuple(int(x) for x in inputs["original_sizes"][0])
        reshaped = tuple(int(x) for x in inputs["reshaped_input_sizes"][0])
        return self.model.get_image_embeddings(pixels), original, reshaped  # type: ignore[return-value]

    @torch.no_grad()
    def predict_points(self, embedding: torch.Tensor, points: torch.Tensor, original: tuple[int, int],
                       reshaped: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask logits ``[P * 3, H, W]`` and predicted IoUs ``[P * 3]`` for pixel points ``[P, 2]``."""
        scale = torch.tensor([reshaped[1] / original[1], reshaped[0] / original[0]], device=self.device)
        pts = (points.to(self.device) * scale)[None, :, None, :].to(self.dtype)  # [1, P, 1, 2]
        labels = torch.ones(pts.shape[:3], dtype=torch.long, device=self.device)
        out = self.model(image_embeddings=embedding, input_points=pts, input_labels=labels,
                         multimask_output=True)
        low = out.pred_masks[0].float()  # [P, 3, h, w]
        logits = self.processor.post_process_masks([low], [list(original)], [list(reshaped)],
                                                   binarize=False)[0]
        return logits.flatten(0, 1), out.iou_scores[0].float().flatten()

    def _filter_batch(self, logits: torch.Tensor, iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keep = filter_by_iou(iou, self.pred_iou_thresh)
        logits, iou = logits[keep], iou[keep]
        stable = stability_score(logits, self.mask_threshold, self.stability_score_offset)
        keep = stable >= self.stability_score_thresh if self.stability_score_thresh > 0 else stable >= 0
        masks = logits[keep] > self.mask_threshold
        iou = iou[keep]
        nonempty = masks.flatten(1).any(1)
        masks, iou = masks[nonempty], iou[nonempty]
        kept = box_nms(masks_to_boxes(masks), iou, self.box_nms_thresh)
        return masks[kept], iou[kept]

    @torch.no_grad()
    def __call__(self, image: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Proposals of one image.

        ``image``: uint8 ``[H, W, 3]`` or float ``[3, H, W]`` 0-255 -> ``(bool masks [N, H, W], scores [N])``,
        sorted by decreasing predicted IoU.
        """
        array = self._as_uint8(image)
        H, W = array.shape[:2]
        embedding, original, reshaped = self.embed(array)
        grid = point_grid(self.points_per_side) * torch.tensor([W, H], dtype=torch.float32)
        all_masks, all_scores = [], []
        for start in range(0, len(grid), self.points_per_batch):
            logits, iou = self.predict_points(embedding, grid[start:start + self.points_per_batch], original,
                                              reshaped)
            masks, scores = self._filter_batch(logits, iou)
            all_masks.append(masks)
            all_scores.append(scores)
        if not all_masks:
            all_masks, all_scores = [torch.zeros(0, H, W, dtype=torch.bool, device=self.device)], [
                torch.zeros(0, device=self.device)]
        masks = torch.cat(all_masks)
        scores = torch.cat(all_scores)
        kept = box_nms(masks_to_boxes(masks), scores, self.box_nms_thresh)
        masks, scores = masks[kept], scores[kept]
        if self.min_mask_region_area > 0 and len(masks):
            masks, scores = self._clean(masks, scores)
        return masks, scores

    def _clean(self, masks: torch.Tensor, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Remove small islands and holes; changed masks are preferred less in the final NMS (score 0)."""
        cleaned, priority = [], []
        for mask, score in zip(masks.cpu().numpy(), scores.tolist(), strict=True):
            mask, changed_holes = remove_small_regions(mask, self.min_mask_region_area, "holes")
            mask, changed_islands = remove_small_regions(mask, self.min_mask_region_area, "islands")
            cleaned.append(mask)
            priority.append(0.0 if (changed_holes or changed_islands) else float(score))
        out = torch.from_numpy(np.stack(cleaned)).to(masks.device)
        kept = box_nms(masks_to_boxes(out), torch.tensor(priority, device=masks.device), self.box_nms_thresh)
        # SAM keeps the original predicted IoU as the score of a kept mask.
        kept, _ = kept.sort()
        order = torch.sort(scores[kept], descending=True, stable=True).indices
        kept = kept[order]
        return out[kept], scores[kept]
