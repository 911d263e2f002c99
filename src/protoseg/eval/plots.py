"""Evaluation plots (PNG, matplotlib's Agg backend): per-class IoU bars and a confusion heat map.

- :func:`per_class_iou_chart`: horizontal bars sorted by IoU with the mean as a line; the figure grows
  with the number of classes so 150 ADE20K classes stay readable.
- :func:`confusion_heatmap`: the row-normalised confusion matrix (rows = ground truth, columns =
  prediction) beside a panel naming the largest confusions ("car → truck 12.3 %"); above
  ``max_classes`` classes it shows only the classes that take part in those confusions.
- :func:`top_confusions`: the largest off-diagonal entries as records.

Every file is written atomically (:func:`protoseg.atomic.atomic_path`); figures are closed after saving.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from protoseg.atomic import atomic_path
from protoseg.errors import ProtosegError

#: Pixels per inch of the written PNGs.
DPI = 100

#: Width of the per-class chart in inches.
CHART_WIDTH = 9.0


@dataclass(frozen=True)
class Confusion:
    """One off-diagonal cell of a confusion matrix.

    Attributes:
        truth, predicted: class names (ground truth row, predicted column).
        truth_index, predicted_index: their indices.
        pixels: pixel count of the cell.
        fraction: ``pixels`` over all ground-truth pixels of ``truth`` (the row sum).
    """

    truth: str
    predicted: str
    truth_index: int
    predicted_index: int
    pixels: int
    fraction: float

    def describe(self) -> str:
        """``"car → truck 12.3 %"``."""
        return f"{self.truth} → {self.predicted} {100 * self.fraction:.1f} %"


def _pyplot():
    """pyplot on the Agg backend (imported here: the backend must be chosen before pyplot loads)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    plt = _pyplot()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return path


def _check_confusion(confusion: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    m = np.asarray(confusion)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ProtosegError(f"a confusion matrix must be square [C, C]; got shape {m.shape}")
    if m.shape[0] != len(classes):
        raise ProtosegError(f"the confusion matrix has {m.shape[0]} classes but {len(classes)} names were given")
    if not np.issubdtype(m.dtype, np.integer):
        raise ProtosegError(f"a confusion matrix holds pixel counts (integers); got {m.dtype}")
    if (m < 0).any():
        raise ProtosegError("a confusion matrix cannot hold negative counts")
    return m.astype(np.int64, copy=False)


def row_normalised(confusion: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (float64); rows without ground-truth pixels are NaN."""
    m = np.asarray(confusion, dtype=np.float64)
    sums = m.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sums > 0, m / np.where(sums > 0, sums, 1.0), np.nan)


def top_confusions(confusion: np.ndarray, classes: Sequence[str], n: int = 10,
                   by: Literal["fraction", "pixels"] = "fraction") -> list[Confusion]:
    """The ``n`` largest off-diagonal cells of ``confusion`` (int ``[C, C]``, rows = ground truth).

    ``by="fraction"`` ranks by the share of the ground-truth class's pixels (how often *this* class is
    mistaken for that one); ``by="pixels"`` by raw pixel count. Ties go to the larger pixel count, then the
    lower indices. Empty cells are never listed.
    """
    if by not in ("fraction", "pixels"):
        raise ProtosegError(f"rank confusions by 'fraction' or 'pixels', not {by!r}")
    if n < 0:
        raise ProtosegError(f"number of confusions must be >= 0; got {n}")
    m = _check_confusion(confusion, classes)
    frac = np.nan_to_num(row_normalised(m), nan=0.0)
    rows, cols = np.nonzero(m)
    off = rows != cols
    rows, cols = rows[off], cols[off]
    pixels = m[rows, cols]
    fractions = frac[rows, cols]
    primary = fractions if by == "fraction" else pixels.astype(np.float64)
    secondary = pixels if by == "fraction" else fractions
    # np.lexsort: last key is primary; negate for descending; indices ascending break remaining ties.
    order = np.lexsort((cols, rows, -secondary, -primary))[:n]
    return [Confusion(classes[int(rows[k])], classes[int(cols[k])], int(rows[k]), int(cols[k]),
                      int(pixels[k]), float(fractions[k])) for k in order]


def chart_size(num_classes: int) -> tuple[float, float]:
    """Figure size in inches of :func:`per_class_iou_chart` for ``num_classes`` bars (about 0.2 inch each)."""
    return CHART_WIDTH, max(3.0, 1.4 + 0.2 * num_classes)


def _label_size(num_classes: int) -> float:
    return 10.0 if num_classes <= 30 else 8.5 if num_classes <= 80 else 7.5


def _short(name: str, limit: int = 30) -> str:
    name = name.strip() or repr(name)
    return name if len(name) <= limit else name[: limit - 1] + "…"


def per_class_iou_chart(classes: Sequence[str], iou: Sequence[float | None], path: str | Path,
                        title: str | None = None) -> Path:
    """Horizontal bar chart of per-class IoU, best class at the top, with the mean IoU as a line.

    Args:
        classes: class names.
        iou: IoU per class in percent (0-100, as evaluation reports give it); ``None``/NaN = the class has
            no pixels in ground truth or prediction (listed at the bottom as "n/a", not in the mean).
        path: PNG to write (atomically).
        title: figure title.

    Returns:
        ``path``.
    """
    if len(classes) != len(iou):
        raise ProtosegError(f"{len(classes)} class names but {len(iou)} IoU values")
    if not classes:
        raise ProtosegError("no classes to plot")
    values = np.array([np.nan if v is None else float(v) for v in iou], dtype=np.float64)
    finite = values[np.isfinite(values)]
    if ((finite < 0) | (finite > 100)).any():
        raise ProtosegError("IoU values must be percentages in [0, 100]")
    plt = _pyplot()
    n = len(classes)
    order = sorted(range(n), key=lambda i: (not np.isfinite(values[i]), -np.nan_to_num(values[i]), i))
    shown = values[order]
    names = [_short(classes[i]) for i in order]
    fs = _label_size(n)

    fig, ax = plt.subplots(figsize=chart_size(n), layout="constrained")
    y = np.arange(n)
    colours = plt.get_cmap("viridis")(np.nan_to_num(shown) / 100.0 * 0.85 + 0.1)
    ax.barh(y, np.nan_to_num(shown), color=colours, height=0.75)
    for yi, v in zip(y, shown, strict=True):
        text = "n/a" if not np.isfinite(v) else f"{v:.1f}"
        ax.text((0 if not np.isfinite(v) else v) + 0.8, yi, text, va="center", ha="left", fontsize=fs - 1,
                color="0.45" if not np.isfinite(v) else "0.15")
    ax.set_yticks(y, names, fontsize=fs)
    ax.set_ylim(n - 0.5, -0.5)  # best class on top
    ax.set_xlim(0, 108)
    ax.set_xlabel("IoU (%)", fontsize=10)
    ax.xaxis.set_ticks_position("both")
    ax.tick_params(axis="x", labeltop=n > 40, labelsize=9)
    ax.grid(axis="x", color="0.9", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("right", "top") if n <= 40 else ("right",):
        ax.spines[side].set_visible(False)
    if finite.size:
        mean = float(finite.mean())
        ax.axvline(mean, color="crimson", linestyle="--", linewidth=1.4,
                   label=f"mean IoU {mean:.1f} ({finite.size} classes)")
        ax.legend(loc="lower right", fontsize=9, framealpha=0.9)
        title = f"{title or 'Per-class IoU'}  ·  mean IoU {mean:.1f}"
    ax.set_title(title or "Per-class IoU", fontsize=12, loc="left")
    return _save(fig, path)


def _classes_to_show(m: np.ndarray, tops: list[Confusion], max_classes: int) -> list[int]:
    C = m.shape[0]
    if C <= max_classes:
        return list(range(C))
    picked: list[int] = []
    for c in tops:
        for i in (c.truth_index, c.predicted_index):
            if i not in picked:
                picked.append(i)
    if len(picked) > max_classes:
        picked = picked[:max_classes]
    return sorted(picked)


def confusion_heatmap(confusion: np.ndarray, classes: Sequence[str], path: str | Path, top: int = 15,
                      title: str | None = None, max_classes: int = 40) -> Path:
    """Row-normalised confusion heat map with the ``top`` largest confusions named beside it.

    Args:
        confusion: int64 ``[C, C]`` pixel counts, rows = ground truth, columns = prediction.
        classes: the ``C`` class names.
        path: PNG to write (atomically).
        top: how many confusions (by share of the ground-truth class, :func:`top_confusions`) to list.
        title: figure title.
        max_classes: above this many classes, the map shows only the classes taking part in the listed
            confusions (in class order), so every tick stays legible.

    Returns:
        ``path``.
    """
    m = _check_confusion(confusion, classes)
    if top < 0 or max_classes < 2:
        raise ProtosegError("top must be >= 0 and max_classes >= 2")
    plt = _pyplot()
    from matplotlib.colors import LinearSegmentedColormap  # matplotlib loads once _pyplot chose its backend

    tops = top_confusions(m, classes, top)
    idx = _classes_to_show(m, tops, max_classes) or list(range(min(m.shape[0], max_classes)))
    norm = row_normalised(m)[np.ix_(idx, idx)] * 100.0
    k = len(idx)
    fs = 10.0 if k <= 15 else 8.5 if k <= 30 else 7.0
    side = max(5.0, 2.0 + 0.24 * k)
    panel = 5.2
    fig = plt.figure(figsize=(side + panel, side + 1.6), layout="constrained")
    grid = fig.add_gridspec(1, 2, width_ratios=[side, panel])
    ax = fig.add_subplot(grid[0, 0])
    cmap = LinearSegmentedColormap.from_list(
        "protoseg-blues", ["#ffffff", "#c6dbef", "#4292c6", "#08306b"]).with_extremes(bad="#eeeeee")
    masked = np.ma.masked_invalid(norm)
    im = ax.imshow(masked, cmap=cmap, vmin=0.0, vmax=100.0, interpolation="nearest", aspect="equal")
    names = [_short(classes[i], 24) for i in idx]
    ax.set_xticks(range(k), names, rotation=90, fontsize=fs)
    ax.set_yticks(range(k), names, fontsize=fs)
    ax.set_xlabel("predicted class", fontsize=10)
    ax.set_ylabel("ground-truth class", fontsize=10)
    ax.set_xticks(np.arange(-0.5, k, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, k, 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=0.6)
    ax.tick_params(which="minor", length=0)
    if k <= 20:
        for r in range(k):
            for c in range(k):
                v = norm[r, c]
                if np.isfinite(v) and v >= 0.5:
                    ax.text(c, r, f"{v:.0f}", ha="center", va="center", fontsize=fs - 1.5,
                            color="white" if v > 55 else "0.2")
    bar = fig.colorbar(im, ax=ax, shrink=0.6, pad=0.02)
    bar.set_label("% of the ground-truth class's pixels", fontsize=9)
    bar.ax.tick_params(labelsize=8)
    heading = title or "Confusion matrix (row-normalised)"
    if k < m.shape[0]:
        heading += f"\nshowing {k} of {m.shape[0]} classes: those in the top {len(tops)} confusions"
    ax.set_title(heading, fontsize=11, loc="left")

    text_ax = fig.add_subplot(grid[0, 1])
    text_ax.axis("off")
    w_truth = max((len(_short(c.truth, 22)) for c in tops), default=0)
    w_pred = max((len(_short(c.predicted, 22)) for c in tops), default=0)
    lines = [f"{i:>2}. {_short(c.truth, 22):<{w_truth}} → {_short(c.predicted, 22):<{w_pred}} "
             f"{100 * c.fraction:5.1f} %" for i, c in enumerate(tops, 1)]
    text_ax.set_title(f"Top {len(tops)} confusions\n(share of the ground-truth class)", fontsize=11, loc="left")
    text_fs = 10.0 if len(lines) <= 20 else 8.0
    text_ax.text(0.0, 1.0, "\n".join(lines) if lines else "no confusions", va="top", ha="left",
                 fontsize=text_fs, family="monospace", transform=text_ax.transAxes, linespacing=1.5)
    return _save(fig, path)


def figure_pixels(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` in pixels of a written PNG."""
    with Image.open(path) as im:
        return im.size


def expected_chart_pixels(num_classes: int) -> tuple[int, int]:
    """``(width, height)`` in pixels :func:`per_class_iou_chart` writes for ``num_classes`` classes."""
    w, h = chart_size(num_classes)
    return math.floor(w * DPI + 0.5), math.floor(h * DPI + 0.5)
