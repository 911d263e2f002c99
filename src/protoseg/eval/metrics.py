"""Segmentation metrics as MMSegmentation 0.27 computes them.

Per image, :func:`intersect_and_union` gives four per-class pixel counts (``mmseg.core.evaluation.
intersect_and_union``): pixels whose ground truth equals ``ignore_index`` are dropped; of the rest,

- ``area_intersect[c]``: prediction == ground truth == c,
- ``area_pred[c]``: prediction == c,
- ``area_label[c]``: ground truth == c,
- ``area_union = area_pred + area_label - area_intersect``.

Values outside ``0..C-1`` fall in no bin (``torch.histc`` semantics), on either side. Counts are summed
over the whole dataset and only then turned into scores (:func:`summarize`): ``IoU_c = I_c / U_c``,
``Acc_c = I_c / label_c``, ``mIoU``/``mAcc`` = nan-mean over classes (classes absent from both ground
truth and predictions are NaN and skipped), ``aAcc = sum I / sum label``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Ground-truth value that is never scored.
IGNORE_INDEX = 255


def intersect_and_union(
    pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """Per-class counts of one image.

    Args:
        pred: integer ``[H, W]`` predicted class indices.
        gt: integer ``[H, W]`` ground truth in the same index space; ``ignore_index`` is skipped.
        num_classes: ``C``.

    Returns:
        int64 ``[4, C]``: rows ``intersect, union, pred, label``.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    return counts_from_confusion(confusion_matrix(pred, gt, num_classes, ignore_index), num_classes)


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """int64 ``[C + 1, C + 1]`` pixel counts of one image: rows ground truth, columns prediction; index
    ``C`` collects values outside ``0..C-1``; ground truth equal to ``ignore_index`` is dropped."""
    return _confusion(pred.reshape(-1), gt.reshape(-1), num_classes, ignore_index)


def counts_from_confusion(cm: np.ndarray, num_classes: int) -> np.ndarray:
    """:func:`intersect_and_union`'s int64 ``[4, C]`` rows from a ``[C + 1, C + 1]`` confusion matrix."""
    area_intersect = np.diagonal(cm)[:num_classes]
    area_pred = cm[:, :num_classes].sum(0)  # every scored row, incl. out-of-range ground truth
    area_label = cm[:num_classes].sum(1)  # every prediction, incl. out-of-range ones
    out = np.empty((4, num_classes), dtype=np.int64)
    out[0] = area_intersect
    out[1] = area_pred + area_label - area_intersect
    out[2] = area_pred
    out[3] = area_label
    return out


def _bins(values: np.ndarray, num_classes: int, ignore_index: int | None) -> np.ndarray:
    """Map values to bins: ``0..C-1`` themselves, anything else ``C``, ``ignore_index`` -> ``C + 1``."""
    if values.dtype == np.uint8 and num_classes <= 256:
        lut = np.full(256, num_classes, dtype=np.int32)
        lut[:num_classes] = np.arange(num_classes, dtype=np.int32)
        if ignore_index is not None and 0 <= ignore_index < 256:
            lut[ignore_index] = num_classes + 1
        return lut[values]
    v = values.astype(np.int64, copy=False)
    bins = np.where((v >= 0) & (v < num_classes), v, num_classes)
    if ignore_index is not None:
        bins = np.where(v == ignore_index, num_classes + 1, bins)
    return bins.astype(np.int32, copy=False)


def _confusion(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_index: int) -> np.ndarray:
    """``[C + 1, C + 1]`` counts (rows ground truth, columns prediction); index ``C`` = out of range.

    Ground-truth pixels equal to ``ignore_index`` are dropped (one ``bincount`` over a combined key).
    """
    K = num_classes + 1
    g = _bins(gt, num_classes, ignore_index)  # ignored pixels -> row K (dropped below)
    p = _bins(pred, num_classes, None)
    key = g * K + p
    counts = np.bincount(key, minlength=(K + 1) * K)
    return counts[: K * K].reshape(K, K)


@dataclass
class Scores:
    """Dataset-level scores (fractions in ``[0, 1]``; NaN for classes with empty union / no labels).

    Attributes:
        iou: float64 ``[C]`` per-class IoU.
        acc: float64 ``[C]`` per-class accuracy (recall).
        miou, macc, aacc: mean IoU, mean accuracy (nan-means), overall pixel accuracy.
    """

    iou: np.ndarray
    acc: np.ndarray
    miou: float
    macc: float
    aacc: float


def _nanmean(x: np.ndarray) -> float:
    finite = x[~np.isnan(x)]
    return float(finite.mean()) if finite.size else float("nan")


def summarize(totals: np.ndarray) -> Scores:
    """Scores from dataset-wide counts ``totals`` int ``[4, C]`` (sum of :func:`intersect_and_union`)."""
    intersect, union, _, label = (totals[i].astype(np.float64) for i in range(4))
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = intersect / union
        acc = intersect / label
        aacc = float(intersect.sum() / label.sum()) if label.sum() > 0 else float("nan")
    return Scores(iou=iou, acc=acc, miou=_nanmean(iou), macc=_nanmean(acc), aacc=aacc)


class MetricAccumulator:
    """Sums per-image counts over a dataset.

    Example::

        acc = MetricAccumulator(num_classes=150)
        for pred, gt in pairs:
            acc.add(pred, gt)
        print(acc.scores().miou)
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.totals = np.zeros((4, num_classes), dtype=np.int64)
        self.images = 0

    def add(self, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
        """Accumulate one image; returns its ``[4, C]`` counts."""
        counts = intersect_and_union(pred, gt, self.num_classes, self.ignore_index)
        self.add_counts(counts)
        return counts

    def add_counts(self, counts: np.ndarray) -> None:
        """Accumulate precomputed counts ``[4, C]`` or ``[N, 4, C]``."""
        counts = np.asarray(counts, dtype=np.int64)
        if counts.ndim == 3:
            self.totals += counts.sum(0)
            self.images += counts.shape[0]
        else:
            self.totals += counts
            self.images += 1

    def scores(self) -> Scores:
        return summarize(self.totals)
