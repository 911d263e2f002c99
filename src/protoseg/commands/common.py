"""Pieces shared by the CLI commands: options, class lists from the command line, up-front checks of
options, progress bars and JSON output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from protoseg.classes import parse_class_list, read_class_file
from protoseg.commands.verbosity import is_quiet
from protoseg.errors import ProtosegError

#: Where the models run; every command that loads models takes it (validated by :func:`check_device`).
DeviceOption = Annotated[str | None, typer.Option(
    "--device", show_default=False,
    help="Where the models run: cpu, cuda, cuda:N (e.g. cuda:1), mps, or auto (the default: CUDA when "
         "available, else CPU).")]
#: Compute precision of the models (``--dtype``); banks have --storage-dtype, builds --diffusion-dtype.
DtypeOption = Annotated[str, typer.Option(
    "--dtype", help="Compute precision of the models: float32, float16 or bfloat16.")]
#: Precision a bank stores its vectors in.
StorageDtypeOption = Annotated[str, typer.Option(
    "--storage-dtype", help="Precision the bank stores its vectors in: float16 or float32.")]
#: The Ray cluster of ``--ray`` (segment, eval, build-bank).
RayAddressOption = Annotated[str | None, typer.Option(
    "--ray-address", help="Ray cluster address (default: a running cluster or a local Ray)")]
JsonOption = Annotated[bool, typer.Option(
    "--json", help="Print one JSON document on stdout (machine-readable) instead of the text.")]

FeaturesOption = Annotated[str | None, typer.Option(
    "--features", help="Dense-feature weights: hub id or local folder (default: the preset's).")]
TextOption = Annotated[str | None, typer.Option(
    "--text", help="CLIP weights: hub id or local folder (default: the preset's).")]
SamOption = Annotated[str | None, typer.Option(
    "--sam", help="SAM weights: hub id or local folder (default: the preset's).")]

AllowSyntheticOption = Annotated[bool, typer.Option(
    "--allow-synthetic-backend",
    help="Let a hand-crafted (parts-world test) preset segment images that are not parts-world scenes.")]


def model_overrides(features: str | None = None, text: str | None = None, sam: str | None = None) -> dict:
    """Preset field overrides for model weights given on the command line (e.g. local folders offline)."""
    return {k: v for k, v in {"features": features, "text": text, "sam": sam}.items() if v is not None}


def read_classes(classes: str | None, classes_file: Path | None, required: bool = True) -> list[str] | None:
    """Class list from ``--classes "a, b"`` or ``--classes-file F`` (one name a line, ``#`` comments).

    Returns ``None`` when neither is given and ``required`` is false.
    """
    if classes is not None and classes_file is not None:
        raise ProtosegError("pass either --classes or --classes-file, not both")
    if classes is not None:
        return parse_class_list(classes)
    if classes_file is not None:
        return read_class_file(classes_file)
    if required:
        raise ProtosegError('give the classes with --classes "a, b, c" or --classes-file FILE')
    return None


def check_device(device: str | None, dtype: str | None = None) -> Any:
    """Validate ``--device`` (and a compute or diffusion dtype) before anything loads; returns the
    ``torch.device`` it resolves to.

    Raises:
        ProtosegError: an unknown device or dtype, or CUDA asked for on a machine without it.
    """
    from protoseg.models.base import resolve_device, resolve_dtype  # import time: torch, only when checked

    resolved = resolve_device(device)
    if dtype is not None:
        resolve_dtype(dtype, resolved)
    return resolved


def check_storage_dtype(dtype: str) -> None:
    """Validate ``--storage-dtype`` (float16 or float32)."""
    if dtype not in ("float16", "float32"):
        raise ProtosegError(f"--storage-dtype must be float16 or float32, got {dtype!r}")


def check_positive(**values: int | None) -> None:
    """Each given option (``--name``: value) must be a positive integer when set."""
    for name, value in values.items():
        if value is not None and value <= 0:
            raise ProtosegError(f"--{name.replace('_', '-')} must be a positive number, got {value}")


def progress_bar(console: Console | None = None, transient: bool = False, disable: bool = False,
                 columns: tuple[ProgressColumn, ...] | None = None) -> Progress:
    """A rich progress bar on stderr (``console``: another) with counts, elapsed and remaining time (or
    ``columns``); drawn nowhere when ``disable`` or with ``--quiet``."""
    columns = columns or (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          TimeRemainingColumn())
    return Progress(*columns, console=console or Console(stderr=True), transient=transient,
                    disable=disable or is_quiet())


def print_json(data: Any) -> None:
    """``data`` as one JSON document on stdout (paths as strings, numpy scalars as numbers)."""
    typer.echo(json.dumps(data, indent=2, default=_json_value))


def _json_value(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # a numpy scalar
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
