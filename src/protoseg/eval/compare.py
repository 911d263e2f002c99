"""Per-class IoU differences between evaluation reports (the JSON ``protoseg eval`` writes).

The first report is the baseline; every other run gets a column of IoU differences (run − baseline, in
IoU points). Rows are sorted by the largest absolute difference of any run, so what changed most comes
first; classes whose difference is undefined (IoU ``null``: no pixels in ground truth or prediction) go
last. Reports must score the same dataset with the same class list.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protoseg.atomic import write_bytes
from protoseg.errors import ProtosegError


@dataclass(frozen=True)
class Report:
    """The parts of an evaluation report a comparison needs.

    Attributes:
        label: short name of the run (the file name, made unique by :func:`load_reports`).
        path: the report file.
        dataset: dataset name.
        classes: class names in label order.
        iou: IoU per class in percent (``None`` where undefined).
        miou: mean IoU in percent (``None`` if undefined).
        config: the report's ``config`` block.
    """

    label: str
    path: Path
    dataset: str
    classes: tuple[str, ...]
    iou: tuple[float | None, ...]
    miou: float | None
    config: dict[str, Any] = field(default_factory=dict)


def _number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtosegError(f"{where} must be a number or null; got {value!r}")
    return None if math.isnan(value) else float(value)


def read_report(path: str | Path, label: str | None = None) -> Report:
    """Read one evaluation report (``EvalResult.to_dict`` as JSON).

    Raises:
        ProtosegError: missing or unreadable file, not JSON, or not an evaluation report.
    """
    path = Path(path)
    if not path.is_file():
        raise ProtosegError(f"report {path} does not exist (pass the .json file `protoseg eval --out` wrote)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ProtosegError(f"{path} is not a JSON evaluation report (not text)") from None
    except json.JSONDecodeError as exc:
        raise ProtosegError(f"{path} is not a JSON evaluation report ({exc.msg} at line {exc.lineno})") from None
    except OSError as exc:
        raise ProtosegError(f"cannot read report {path}: {exc.strerror or exc}") from None
    what = f"{path} is not an evaluation report"
    if not isinstance(data, dict) or not isinstance(data.get("dataset"), str) or not isinstance(
        data.get("per_class"), list
    ):
        raise ProtosegError(f"{what}: expected an object with 'dataset', 'mIoU' and 'per_class'")
    classes: list[str] = []
    iou: list[float | None] = []
    for i, row in enumerate(data["per_class"]):
        if not isinstance(row, dict) or not isinstance(row.get("class"), str) or "IoU" not in row:
            raise ProtosegError(f"{what}: per_class[{i}] needs 'class' and 'IoU'")
        classes.append(row["class"])
        iou.append(_number(row["IoU"], f"{path}: per_class[{i}].IoU"))
    if not classes:
        raise ProtosegError(f"{what}: 'per_class' is empty")
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    return Report(label or path.stem, path, data["dataset"], tuple(classes), tuple(iou),
                  _number(data.get("mIoU"), f"{path}: mIoU"), config)


def _labels(paths: Sequence[Path]) -> list[str]:
    """File stems, extended with parent folders until they are unique."""
    parts = [p.resolve().parts for p in paths]
    depth = 1
    while True:
        labels = ["/".join(p[-depth:]).removesuffix(".json") for p in parts]
        if len(set(labels)) == len(labels) or depth >= max(len(p) for p in parts):
            return labels
        depth += 1


def load_reports(paths: Sequence[str | Path]) -> list[Report]:
    """Read the reports at ``paths`` (at least two) and check they are comparable.

    Raises:
        ProtosegError: fewer than two reports, an unreadable one, or reports of different datasets or class
            lists.
    """
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise ProtosegError("compare needs at least two reports: the baseline first, then the runs to compare")
    reports = [read_report(p, label) for p, label in zip(paths, _labels(paths), strict=True)]
    base = reports[0]
    for r in reports[1:]:
        if r.dataset != base.dataset:
            raise ProtosegError(
                f"{r.path} is on dataset {r.dataset!r} but the baseline {base.path} on {base.dataset!r}; "
                "compare runs of one dataset"
            )
        if r.classes != base.classes:
            diff = next((i for i, (a, b) in enumerate(zip(r.classes, base.classes, strict=False)) if a != b),
                        min(len(r.classes), len(base.classes)))
            detail = (f"{len(r.classes)} vs {len(base.classes)} classes" if len(r.classes) != len(base.classes)
                      else f"class {diff} is {r.classes[diff]!r} vs {base.classes[diff]!r}")
            raise ProtosegError(
                f"{r.path} and the baseline {base.path} score different class lists ({detail}); "
                "compare runs with the same classes"
            )
    return reports


@dataclass(frozen=True)
class ClassDelta:
    """One class of a comparison: its IoU in each run and the differences to the baseline."""

    index: int
    name: str
    iou: tuple[float | None, ...]
    delta: tuple[float | None, ...]

    @property
    def largest(self) -> float | None:
        """The largest absolute difference over the runs (``None`` if none is defined)."""
        defined = [abs(d) for d in self.delta if d is not None]
        return max(defined) if defined else None


@dataclass(frozen=True)
class Comparison:
    """Runs against a baseline.

    Attributes:
        reports: the baseline first, then the runs.
        rows: classes sorted by :attr:`ClassDelta.largest` (largest first, undefined last).
        miou: mIoU of each report; ``miou_delta``: run − baseline (``None`` for the baseline itself).
    """

    reports: tuple[Report, ...]
    rows: tuple[ClassDelta, ...]
    miou: tuple[float | None, ...]
    miou_delta: tuple[float | None, ...]

    @property
    def dataset(self) -> str:
        return self.reports[0].dataset


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def compare(reports: Sequence[Report]) -> Comparison:
    """Per-class IoU differences of ``reports[1:]`` to ``reports[0]`` (reports from :func:`load_reports`)."""
    base = reports[0]
    rows = []
    for i, name in enumerate(base.classes):
        iou = tuple(r.iou[i] for r in reports)
        rows.append(ClassDelta(i, name, iou, tuple(_minus(v, iou[0]) for v in iou[1:])))
    rows.sort(key=lambda r: (r.largest is None, -(r.largest or 0.0), r.index))
    miou = tuple(r.miou for r in reports)
    return Comparison(tuple(reports), tuple(rows), miou, (None, *(_minus(m, miou[0]) for m in miou[1:])))


def compare_files(paths: Sequence[str | Path]) -> Comparison:
    """:func:`compare` of the reports at ``paths`` (the first is the baseline)."""
    return compare(load_reports(paths))


def to_markdown(comparison: Comparison, top: int = 0) -> str:
    """The comparison as a Markdown table (``top`` > 0: only the first ``top`` classes)."""

    def iou(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2f}"

    def delta(x: float | None) -> str:
        return "n/a" if x is None else f"{x:+.2f}"

    reports = comparison.reports
    head = ["#", "class", f"{reports[0].label} (baseline)"]
    for r in reports[1:]:
        head += [r.label, "Δ"]
    lines = [
        f"# {comparison.dataset}: per-class IoU (%), Δ = run − baseline, largest |Δ| first",
        "",
        "| " + " | ".join(h.replace("|", "\\|") for h in head) + " |",
        "|---:|---|" + "---:|" * (len(head) - 2),
    ]
    rows = comparison.rows if top <= 0 else comparison.rows[:top]
    for row in rows:
        cells = [str(row.index), f"`{row.name}`", iou(row.iou[0])]
        for v, d in zip(row.iou[1:], row.delta, strict=True):
            cells += [iou(v), delta(d)]
        lines.append("| " + " | ".join(cells) + " |")
    mean = ["", "**mean (mIoU)**", iou(comparison.miou[0])]
    for v, d in zip(comparison.miou[1:], comparison.miou_delta[1:], strict=True):
        mean += [iou(v), delta(d)]
    lines.append("| " + " | ".join(mean) + " |")
    return "\n".join(lines) + "\n"


def compare_reports(paths: Sequence[str | Path], markdown: str | Path | None = None) -> Comparison:
    """:func:`compare_files` of ``paths`` (the first is the baseline); with ``markdown``, also write the whole
    comparison there as a Markdown table (atomically).

    Raises:
        ProtosegError: unreadable or incomparable reports, or ``markdown`` naming one of the reports.
    """
    comparison = compare_files(paths)
    if markdown is not None:
        markdown = Path(markdown)
        if any(markdown.resolve() == Path(p).resolve() for p in paths):
            raise ProtosegError(f"--markdown {markdown} is one of the reports; pick another file name")
        write_bytes(markdown, to_markdown(comparison).encode("utf-8"))
    return comparison
