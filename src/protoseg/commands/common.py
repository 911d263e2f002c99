"""Pieces shared by the CLI commands: class-list options, up-front checks of what the user controls,
progress bars."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

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
    from protoseg.classes import parse_class_list, read_class_file

    if classes is not None and classes_file is not None:
        raise ProtosegError("pass either --classes or --classes-file, not both")
    if classes is not None:
        return parse_class_list(classes)
    if classes_file is not None:
        return read_class_file(classes_file)
    if required:
        raise ProtosegError('give the classes with --classes "a, b, c" or --classes-file FILE')
    return None


def check_segment_request(paths: list[Path], names: list[str], preset: str, overrides: dict[str, Any],
                          bank: Any, allow_synthetic: bool = False,
                          grow: Callable[[Any, Any], Any] | None = None) -> tuple[Any, Any]:
    """What ``protoseg segment`` and the demo check before a model loads, in this order: the number of
    classes, every image (readable), the preset (with ``overrides``), the hand-crafted backend only on
    parts-world scenes unless ``allow_synthetic``, the bank (a folder, ``hf://`` id, or a loaded
    ``PrototypeBank``), and that it serves every class — after ``grow(bank, preset)`` (``--generate-missing``)
    returned the bank with the missing classes added.

    Returns:
        ``(Preset, PrototypeBank)``.
    """
    from protoseg.bank import PrototypeBank
    from protoseg.config.segment import get_preset
    from protoseg.images import check_image
    from protoseg.viz import MAX_CLASSES
    from protoseg.worlds import check_synthetic_backend

    if len(names) > MAX_CLASSES:
        raise ProtosegError(f"{len(names)} classes; a label map holds at most {MAX_CLASSES}")
    for path in paths:
        check_image(path)
    chosen = get_preset(preset, **overrides)
    check_synthetic_backend(chosen, paths, allow_synthetic)
    loaded = bank if isinstance(bank, PrototypeBank) else PrototypeBank.load(bank)
    if grow is not None:
        loaded = grow(loaded, chosen)
    loaded.check_classes(names)
    return chosen, loaded


def check_device(device: str | None, dtype: str | None = None) -> Any:
    """Validate ``--device`` (and ``--dtype`` of the models) before anything loads; returns the
    ``torch.device`` it resolves to.

    Raises:
        ProtosegError: an unknown device or dtype, or CUDA asked for on a machine without it.
    """
    from protoseg.models.base import resolve_device, resolve_dtype

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
    import huggingface_hub
    import transformers

    huggingface_hub.utils.logging.set_verbosity_error()  # no retry chatter when the hub is unreachable
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    if diffusion:
        import diffusers

        diffusers.utils.logging.disable_progress_bar()
        diffusers.utils.logging.set_verbosity_error()
