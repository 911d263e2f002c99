"""Published mIoU of training-free open-vocabulary segmentation, as data, and a side-by-side table.

The table ships as ``protoseg/data/published.csv`` with the columns

========== ================================================================================================
method     method name as its paper writes it
backbone   the paper's backbone label (``ViT-B``, ``ViT-L/14``, …; ``notes`` spells out the models)
protocol   ``tcl`` or ``sclip`` (:data:`protoseg.eval.protocols.FAMILIES`): numbers are comparable only
           within a protocol family
dataset    protoseg dataset name (``voc20``, ``voc``, ``context59``, ``context60``, ``coco-stuff``,
           ``coco-object``, ``cityscapes``, ``ade20k``)
mIoU       percent, as published
provenance ``paper`` (the method's own paper), ``repo`` (the method's own repository README) or
           ``quoted`` (the method's number as another primary source's table reports it; ``source`` names it)
source     where the number is printed (paper + table, or repository @ commit + file)
notes      models, post-processing (e.g. PAMR) and anything else needed to read the number fairly
========== ================================================================================================
"""

from __future__ import annotations

import csv
import functools
import io
import math
from dataclasses import dataclass
from importlib import resources
from typing import Any

from protoseg.errors import ProtosegError
from protoseg.eval.protocols import BENCHMARKS, FAMILIES, protocol_family

#: Allowed values of the ``provenance`` column.
PROVENANCES: tuple[str, ...] = ("paper", "repo", "quoted")

COLUMNS: tuple[str, ...] = ("method", "backbone", "protocol", "dataset", "mIoU", "provenance", "source", "notes")


@dataclass(frozen=True)
class PublishedResult:
    """One row of the published table (``miou`` in percent)."""

    method: str
    backbone: str
    protocol: str
    dataset: str
    miou: float
    provenance: str
    source: str
    notes: str = ""

    @property
    def label(self) -> str:
        """``"method (backbone)"``."""
        return f"{self.method} ({self.backbone})" if self.backbone else self.method


def parse_published(text: str) -> tuple[PublishedResult, ...]:
    """Rows of a published-results CSV, validated (unknown dataset/protocol/provenance, a missing source,
    a non-numeric or out-of-range mIoU, or a duplicate method/backbone/protocol/dataset raise)."""
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise ProtosegError(f"published table columns must be {', '.join(COLUMNS)}; got {reader.fieldnames}")
    rows: list[PublishedResult] = []
    seen: set[tuple[str, str, str, str]] = set()
    for n, raw in enumerate(reader, start=2):
        where = f"published table line {n}"
        if raw["dataset"] not in BENCHMARKS:
            raise ProtosegError(f"{where}: unknown dataset {raw['dataset']!r}")
        if raw["protocol"] not in FAMILIES:
            raise ProtosegError(f"{where}: unknown protocol {raw['protocol']!r}; known: {', '.join(FAMILIES)}")
        if raw["provenance"] not in PROVENANCES:
            raise ProtosegError(f"{where}: unknown provenance {raw['provenance']!r}")
        if not raw["method"].strip() or not raw["source"].strip():
            raise ProtosegError(f"{where}: every row needs a method and a source")
        try:
            miou = float(raw["mIoU"])
        except ValueError:
            raise ProtosegError(f"{where}: mIoU {raw['mIoU']!r} is not a number") from None
        if not 0.0 <= miou <= 100.0:
            raise ProtosegError(f"{where}: mIoU {miou} is not a percentage")
        key = (raw["method"], raw["backbone"], raw["protocol"], raw["dataset"])
        if key in seen:
            raise ProtosegError(f"{where}: duplicate row for {key}")
        seen.add(key)
        rows.append(PublishedResult(raw["method"], raw["backbone"], raw["protocol"], raw["dataset"], miou,
                                    raw["provenance"], raw["source"], raw["notes"] or ""))
    return tuple(rows)


@functools.cache
def load_published() -> tuple[PublishedResult, ...]:
    """The table shipped with protoseg (read once)."""
    text = (resources.files("protoseg") / "data" / "published.csv").read_text(encoding="utf-8")
    return parse_published(text)


def published(dataset: str, protocol: str) -> list[PublishedResult]:
    """Published rows of ``dataset`` under ``protocol`` (a family, ``tcl``/``sclip``, or any protocol name of
    :data:`protoseg.eval.protocols.PROTOCOLS`, which selects its family), best mIoU first."""
    if dataset not in BENCHMARKS:
        raise ProtosegError(f"no published numbers for dataset {dataset!r}; known: {', '.join(BENCHMARKS)}")
    family = protocol_family(protocol)
    rows = [r for r in load_published() if r.dataset == dataset and r.protocol == family]
    return sorted(rows, key=lambda r: (-r.miou, r.method, r.backbone))


def _run_miou(result_row: dict[str, Any]) -> float | None:
    if "mIoU" not in result_row:
        raise ProtosegError("the run to compare has no 'mIoU' (expected an evaluation report)")
    value = result_row["mIoU"]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ProtosegError(f"the run's mIoU must be a number; got {value!r}")
    return float(value)


def side_by_side(result_row: dict[str, Any], dataset: str, protocol: str) -> str:
    """A Markdown table of the run ``result_row`` beside the published rows of the same dataset and protocol
    family, sorted by mIoU (best first; the run in bold).

    ``result_row``: an evaluation report (``EvalResult.to_dict()``: ``mIoU`` in percent, ``dataset``) or any
    dict with ``mIoU``; ``method`` / ``backbone`` label the run (default ``"this run"``). A report of another
    dataset is an error.
    """
    run_dataset = result_row.get("dataset")
    if run_dataset is not None and run_dataset != dataset:
        raise ProtosegError(f"the run is on {run_dataset!r}, not {dataset!r}")
    family = protocol_family(protocol)
    rows = published(dataset, protocol)
    miou = _run_miou(result_row)
    label = str(result_row.get("method") or "this run")
    backbone = str(result_row.get("backbone") or "")
    entries: list[tuple[float, bool, str, str, str, str]] = [
        (r.miou, False, r.label, _score(r.miou), r.notes, f"{r.provenance}: {r.source}") for r in rows
    ]
    run_label = f"{label} ({backbone})" if backbone else label
    run_score = "n/a" if miou is None else f"{miou:.2f}"
    run_entry = (-math.inf if miou is None else miou, True, run_label, run_score, "", "")
    # Best first; a run ties before published rows of the same score.
    ordered = sorted([*entries, run_entry], key=lambda e: (-e[0], not e[1]))
    lines = [
        f"mIoU (%) on `{dataset}`, {family} protocol" + (f" (run with `{protocol}` settings)"
                                                          if protocol != family else ""),
        "",
        "| # | method | mIoU | notes | source |",
        "|---:|---|---:|---|---|",
    ]
    for rank, (_, mine, name, score, notes, source) in enumerate(ordered, start=1):
        if mine:
            lines.append(f"| {rank} | **{_cell(name)}** | **{score}** | | |")
        else:
            lines.append(f"| {rank} | {_cell(name)} | {score} | {_cell(notes)} | {_cell(source)} |")
    if not rows:
        lines += ["", f"No published {family}-protocol numbers for `{dataset}` in protoseg's table."]
    return "\n".join(lines) + "\n"


def _score(value: float) -> str:
    """A published number with the precision it was printed with (one or two decimals)."""
    return f"{value:.1f}" if round(value, 1) == value else f"{value:.2f}"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")
