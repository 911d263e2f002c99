"""``protoseg compare``: per-class IoU differences between evaluation reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from protoseg.errors import ProtosegError
from protoseg.eval.compare import Comparison, compare_reports


def _iou(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _delta(x: float | None) -> Text:
    if x is None:
        return Text("n/a", style="dim")
    style = "green" if x > 0 else "red" if x < 0 else ""
    return Text(f"{x:+.2f}", style=style)


def _table(comparison: Comparison, top: int) -> Table:
    reports = comparison.reports
    table = Table(title=f"{comparison.dataset}: per-class IoU (%), Δ = run − baseline "
                        f"({reports[0].label}), largest |Δ| first")
    table.add_column("#", justify="right")
    table.add_column("class")
    table.add_column(f"{reports[0].label} (baseline)", justify="right")
    for r in reports[1:]:
        table.add_column(r.label, justify="right")
        table.add_column("Δ", justify="right")
    rows = comparison.rows if top <= 0 else comparison.rows[:top]
    for row in rows:
        cells: list[str | Text] = [str(row.index), repr(row.name), _iou(row.iou[0])]
        for value, delta in zip(row.iou[1:], row.delta, strict=True):
            cells += [_iou(value), _delta(delta)]
        table.add_row(*cells)
    table.add_section()
    mean: list[str | Text] = ["", "mean (mIoU)", _iou(comparison.miou[0])]
    for value, delta in zip(comparison.miou[1:], comparison.miou_delta[1:], strict=True):
        mean += [_iou(value), _delta(delta)]
    table.add_row(*mean, style="bold")
    if len(rows) < len(comparison.rows):
        table.caption = f"{len(comparison.rows) - len(rows)} more classes with smaller |Δ| (--top 0 shows all)"
    return table


def compare_command(
    reports: Annotated[
        list[Path],
        typer.Argument(help="evaluation reports (.json from `protoseg eval --out`); the first is the baseline",
                       show_default=False),
    ],
    top: Annotated[int, typer.Option("--top", "-n", help="show the N classes with the largest |Δ| (0: all)")] = 25,
    markdown: Annotated[
        Path | None, typer.Option("--markdown", help="also write the whole comparison as a Markdown table")
    ] = None,
) -> None:
    """Per-class IoU differences between evaluation runs of one dataset (first report = baseline)."""
    if top < 0:
        raise ProtosegError(f"--top must be >= 0; got {top}")
    Console().print(_table(compare_reports(reports, markdown), top))


def register(app: typer.Typer) -> None:
    app.command("compare")(compare_command)
