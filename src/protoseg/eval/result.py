"""The outcome of an evaluation: dataset-wide counts and scores, as JSON and Markdown reports."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from protoseg.atomic import write_bytes, write_json
from protoseg.eval.metrics import Scores


@dataclass
class EvalResult:
    """Outcome of :func:`protoseg.eval.shards.evaluate`.

    Attributes:
        dataset: dataset name; classes: scored class names.
        totals: int64 ``[4, C]`` dataset-wide intersect / union / pred / label pixel counts.
        images: number of images scored.
        scores: :class:`~protoseg.eval.metrics.Scores` from ``totals``.
        config: what was evaluated (predictor description, protocol).
        confusion: int64 ``[C + 1, C + 1]`` dataset-wide pixel counts, rows ground truth, columns
            prediction (index ``C``: values outside the class range), or ``None``.
    """

    dataset: str
    classes: tuple[str, ...]
    totals: np.ndarray
    images: int
    scores: Scores
    config: dict[str, Any] = field(default_factory=dict)
    confusion: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able report; scores in percent (×100) as the papers report them, NaN -> null."""

        def pct(x: float) -> float | None:
            return None if np.isnan(x) else round(float(x) * 100, 4)

        return {
            "dataset": self.dataset,
            "images": self.images,
            "num_classes": len(self.classes),
            "mIoU": pct(self.scores.miou),
            "mAcc": pct(self.scores.macc),
            "aAcc": pct(self.scores.aacc),
            "per_class": [
                {"class": c, "IoU": pct(i), "Acc": pct(a)}
                for c, i, a in zip(self.classes, self.scores.iou, self.scores.acc, strict=True)
            ],
            "totals": {
                k: self.totals[r].tolist() for r, k in enumerate(("intersect", "union", "pred", "label"))
            },
            "config": self.config,
        }

    def to_markdown(self, per_class: bool = True) -> str:
        """A Markdown report: summary row, then (optionally) per-class IoU / Acc."""
        d = self.to_dict()

        def fmt(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.2f}"

        lines = [
            f"# {self.dataset}: {self.images} images",
            "",
            "| mIoU | mAcc | aAcc |",
            "|---:|---:|---:|",
            f"| {fmt(d['mIoU'])} | {fmt(d['mAcc'])} | {fmt(d['aAcc'])} |",
        ]
        if per_class:
            lines += ["", "| # | class | IoU | Acc |", "|---:|---|---:|---:|"]
            lines += [
                f"| {i} | `{row['class']}` | {fmt(row['IoU'])} | {fmt(row['Acc'])} |"
                for i, row in enumerate(d["per_class"])
            ]
        if self.config:
            lines += ["", "```json", json.dumps(self.config, indent=2, sort_keys=True), "```"]
        return "\n".join(lines) + "\n"


def write_reports(result: EvalResult, out: str | Path, per_class: bool = True,
                  extra_markdown: str = "") -> tuple[Path, Path]:
    """Write ``out`` (JSON) and the same path with ``.md`` (Markdown, followed by ``extra_markdown``, e.g. the
    published numbers beside the run); returns both paths."""
    out = Path(out)
    md = out.with_suffix(".md")
    write_json(out, result.to_dict())
    text = result.to_markdown(per_class)
    if extra_markdown:
        text += "\n" + extra_markdown.rstrip("\n") + "\n"
    write_bytes(md, text.encode())
    return out, md
