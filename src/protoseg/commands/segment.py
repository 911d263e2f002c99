"""``protoseg segment``: label images with named classes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from protoseg.commands.common import (
    FeaturesOption,
    SamOption,
    TextOption,
    model_overrides,
    progress_bar,
    quiet_model_loading,
    read_classes,
)
from protoseg.errors import ProtosegError


def segment(
    images: Annotated[list[Path], typer.Argument(help="Image files to segment.", show_default=False)],
    bank: Annotated[Path, typer.Option(help="Prototype bank directory.")],
    classes: Annotated[str | None, typer.Option(help='Comma-separated class names, e.g. "road, car, sky".')] = None,
    classes_file: Annotated[Path | None, typer.Option(help="File with one class name a line.")] = None,
    preset: Annotated[str, typer.Option(help="Method preset (see `protoseg presets`).")] = "freeda-b",
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("protoseg-out"),
    background: Annotated[bool, typer.Option(help="Label pixels matching no class as background (255).")] = False,
    threshold: Annotated[float | None, typer.Option(help="Background score threshold (preset default).")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1 or auto.")] = "auto",
    dtype: Annotated[str, typer.Option(help="float32, float16 or bfloat16.")] = "float32",
    features: FeaturesOption = None,
    text: TextOption = None,
    sam: SamOption = None,
) -> None:
    """Segment IMAGES into the given classes; writes <stem>.png (label = index in the class list,
    255 = background) and <stem>_overlay.jpg into --out."""
    from protoseg.images import check_image, load_image
    from protoseg.segment import Segmenter
    from protoseg.viz import save_segmentation

    names = read_classes(classes, classes_file)
    stems = [p.stem for p in images]
    if len(set(stems)) != len(stems):
        raise ProtosegError("two input images share a file stem; their outputs would overwrite each other")
    for path in images:  # fail before loading any model
        check_image(path)
    quiet_model_loading()
    overrides = model_overrides(features, text, sam)
    if threshold is not None:
        overrides["background_threshold"] = threshold
    segmenter = Segmenter.from_preset(preset, bank=bank, device=device, dtype=dtype, **overrides)
    segmenter.prepare(names)
    problems = not_converged = 0
    with progress_bar(transient=True, disable=len(images) < 2) as progress:
        task = progress.add_task("segmenting", total=len(images))
        for path in images:
            image = load_image(path)
            result = segmenter.segment(image, names, background=background)
            save_segmentation(out, path.stem, image, result.labels, names)
            problems += result.diagnostics.get("transport_problems", 0)
            not_converged += result.diagnostics.get("transport_not_converged", 0)
            progress.advance(task)
    typer.echo(f"wrote {len(images)} label map(s) and overlay(s) to {out}")
    if not_converged:
        typer.echo(f"warning: {not_converged} of {problems} transport problems did not converge "
                   "(raise iterations or epsilon)", err=True)


def presets() -> None:
    """List the method presets."""
    from protoseg.config.segment import PRESETS

    for name, p in sorted(PRESETS.items()):
        typer.echo(f"{name:14s} {p.description}")


def register(app: typer.Typer) -> None:
    app.command("segment")(segment)
    app.command("presets")(presets)
