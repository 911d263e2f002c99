"""Pieces shared by the CLI commands: options, class lists from the command line, up-front checks of
options, progress bars and quiet model loading."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from protoseg.classes import parse_class_list, read_class_file
from protoseg.errors import ProtosegError

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
    """Validate ``--device`` (and ``--dtype`` of the models) before anything loads; returns the
    ``torch.device`` it resolves to.

    Raises:
        ProtosegError: an unknown device or dtype, or CUDA asked for on a machine without it.
    """
    from protoseg.models.base import resolve_device, resolve_dtype  # import time: torch, only when checked

    resolved = resolve_device(device)
    if dtype is not None:
        resolve_dtype(dtype, resolved)
    return resolved


def check_bank_dtype(dtype: str) -> None:
    """Validate a bank storage ``--dtype`` (float16 or float32)."""
    if dtype not in ("float16", "float32"):
        raise ProtosegError(f"bank --dtype must be float16 or float32, got {dtype!r}")


def check_positive(**values: int | None) -> None:
    """Each given option (``--name``: value) must be a positive integer when set."""
    for name, value in values.items():
        if value is not None and value <= 0:
            raise ProtosegError(f"--{name.replace('_', '-')} must be a positive number, got {value}")


def progress_bar(console: Console | None = None, transient: bool = False, disable: bool = False) -> Progress:
    """A rich progress bar with counts, elapsed and remaining time."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, transient=transient, disable=disable)


def quiet_model_loading(diffusion: bool = False) -> None:
    """The CLI shows its own progress: silence the weight-loading bars and warnings of transformers
    (and diffusers, when ``diffusion``)."""
    import huggingface_hub  # import time (seconds): only for commands that load models
    import transformers

    huggingface_hub.utils.logging.set_verbosity_error()  # no retry chatter when the hub is unreachable
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    if diffusion:
        import diffusers  # import time (seconds): only for commands that generate

        diffusers.utils.logging.disable_progress_bar()
        diffusers.utils.logging.set_verbosity_error()
