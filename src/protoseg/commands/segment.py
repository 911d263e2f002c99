"""``protoseg segment``: label images with named classes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from protoseg.commands.common import (
    AllowSyntheticOption,
    FeaturesOption,
    SamOption,
    TextOption,
    check_device,
    check_segment_request,
    model_overrides,
    progress_bar,
    quiet_model_loading,
    read_classes,
)
from protoseg.errors import ProtosegError


def segment(
    images: Annotated[list[Path], typer.Argument(help="Image files (or folders of images) to segment.",
                                                 show_default=False)],
    bank: Annotated[Path, typer.Option(help="Prototype bank directory, or hf://owner/name (hf://owner/name@revision): "
                                            "a Hub dataset, downloaded and verified.")],
    classes: Annotated[str | None, typer.Option(help='Comma-separated class names, e.g. "road, car, sky".')] = None,
    classes_file: Annotated[Path | None, typer.Option(help="File with one class name a line.")] = None,
    preset: Annotated[str, typer.Option(help="Method preset (see `protoseg presets`).")] = "freeda-b",
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("protoseg-out"),
    background: Annotated[bool, typer.Option(help="Label pixels matching no class as background (255).")] = False,
    threshold: Annotated[float | None, typer.Option(
        help="Background score threshold (preset default); needs --background.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1 or auto.")] = "auto",
    dtype: Annotated[str, typer.Option(help="float32, float16 or bfloat16.")] = "float32",
    features: FeaturesOption = None,
    text: TextOption = None,
    sam: SamOption = None,
    side_by_side: Annotated[bool, typer.Option(
        "--side-by-side", help="Write the input image left of the overlay in <stem>_overlay.jpg.")] = False,
    allow_synthetic_backend: AllowSyntheticOption = False,
    generate_missing: Annotated[bool, typer.Option(
        "--generate-missing", help="Generate prototypes for classes the bank lacks with the bank's own build "
                                   "recipe and add them to the bank first (a bank folder; once).")] = False,
    diffusion: Annotated[str | None, typer.Option(
        help="With --generate-missing: diffusion weights, hub id or local folder (default: the recipe's).")] = None,
    llm: Annotated[str | None, typer.Option(
        help="With --generate-missing: LLM spec for DPSM descriptions (default: the recipe's).")] = None,
) -> None:
    """Segment IMAGES into the given classes; writes <stem>.png (label = index in the class list,
    255 = background; 16-bit above 255 classes), <stem>_overlay.jpg and <stem>.json into --out.
    Images whose outputs are up to date (same image, classes, bank and settings) are skipped.
    The hand-crafted presets (parts-world test backends) take only parts-world scenes unless
    --allow-synthetic-backend is given.
    With --generate-missing, classes the bank cannot serve are first generated with the bank's build
    recipe (Stable Diffusion) and added to the bank, so later runs reuse them."""
    from protoseg import __version__
    from protoseg.atomic import check_not_inputs, check_output_dir
    from protoseg.images import expand_images, load_image
    from protoseg.models import ModelSet
    from protoseg.runs import file_stamp, fingerprint_of, jsonable
    from protoseg.segment import Segmenter
    from protoseg.viz import output_paths, read_sidecar, save_segmentation, written_by_protoseg

    # Everything the user controls is checked before a model loads or an image is processed.
    names = read_classes(classes, classes_file)
    if (diffusion is not None or llm is not None) and not generate_missing:
        raise ProtosegError("--diffusion and --llm are models for generating prototypes; add --generate-missing "
                            "(or drop them)")
    if threshold is not None and not background:
        raise ProtosegError("--threshold is the background threshold and only applies with --background; "
                            "add --background (or drop --threshold)")
    resolved = check_device(device, dtype)
    paths = expand_images(images)
    stems = [p.stem for p in paths]
    if len(set(stems)) != len(stems):
        raise ProtosegError("two input images share a file stem; their outputs would overwrite each other")
    check_output_dir(out)
    overrides = model_overrides(features, text, sam)
    if threshold is not None:
        overrides["background_threshold"] = threshold
    grow = (lambda found, chosen: _generate(found, names, chosen, device, diffusion, llm)) if generate_missing else None
    chosen, loaded = check_segment_request(paths, names, preset, overrides, bank, allow_synthetic_backend, grow)
    planned = {path: output_paths(out, path.stem) for path in paths}
    bank_files = [p for p in loaded.path.rglob("*") if p.is_file()]
    inputs = [*paths, *bank_files, *([classes_file] if classes_file is not None else [])]
    check_not_inputs([f for files in planned.values() for f in files.values()], inputs)
    for files in planned.values():
        for file in files.values():
            if file.exists() and not written_by_protoseg(file):
                raise ProtosegError(f"{file} exists and was not written by protoseg; protoseg replaces only its "
                                    "own outputs: move it away or choose another --out")

    request = {"classes": names, "background": background, "side_by_side": side_by_side, "preset": jsonable(chosen),
               "bank": loaded.fingerprint(), "device": str(resolved), "dtype": dtype, "protoseg": __version__}
    meta_of = {path: {"image": str(path), "preset": preset, "bank": loaded.source, "bank_id": loaded.manifest.bank_id,
                      "fingerprint": fingerprint_of({**request, "image": file_stamp(path)})} for path in paths}
    todo = [path for path in paths if not _up_to_date(planned[path], meta_of[path]["fingerprint"], read_sidecar)]
    if not todo:
        typer.echo(f"all {len(paths)} label map(s) in {out} are up to date (same images, classes, bank and settings)")
        return
    quiet_model_loading()
    segmenter = Segmenter(chosen, loaded, ModelSet.for_preset(chosen, device=device, dtype=dtype))
    segmenter.prepare(names)
    problems = not_converged = 0
    with progress_bar(transient=True, disable=len(todo) < 2) as progress:
        task = progress.add_task("segmenting", total=len(todo))
        for path in todo:
            image = load_image(path)
            result = segmenter.segment(image, names, background=background)
            save_segmentation(out, path.stem, image, result.labels, names, meta_of[path], side_by_side=side_by_side)
            problems += result.diagnostics.get("transport_problems", 0)
            not_converged += result.diagnostics.get("transport_not_converged", 0)
            progress.advance(task)
    skipped = len(paths) - len(todo)
    typer.echo(f"wrote {len(todo)} label map(s) and overlay(s) to {out}"
               + (f"; {skipped} already up to date" if skipped else ""))
    if not_converged:
        typer.echo(f"warning: {not_converged} of {problems} transport problems did not converge "
                   "(raise iterations or epsilon)", err=True)


def _generate(loaded, names: list[str], chosen, device: str, diffusion: str | None, llm: str | None):
    """``--generate-missing``: grow the bank with the classes it lacks (progress on stderr); returns the
    bank to segment with."""
    import time

    from rich.console import Console

    from protoseg.bank import PrototypeBank
    from protoseg.offline.ondemand import generate_missing, missing_classes

    if not missing_classes(loaded, names):
        return loaded
    quiet_model_loading(diffusion=True)
    console = Console(stderr=True)
    start = time.perf_counter()
    with progress_bar(console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(f"generating: {stage}", total=total)
            bar.update(tasks[stage], completed=done, total=total)

        made = generate_missing(loaded.source, names, device=device, diffusion=diffusion, features=chosen.features,
                                text=chosen.text, llm=llm, progress=progress)
    grown = PrototypeBank.load(loaded.source)
    typer.echo(f"generated prototypes of {', '.join(map(repr, made))} with the bank's build recipe and added them "
               f"to {loaded.source} ({len(grown)} prototypes now) in {time.perf_counter() - start:.1f} s", err=True)
    return grown


def _up_to_date(files: dict[str, Path], fingerprint: str, read_sidecar) -> bool:
    sidecar = read_sidecar(files["sidecar"])
    return (sidecar is not None and sidecar.get("fingerprint") == fingerprint
            and files["labels"].is_file() and files["overlay"].is_file())


def presets() -> None:
    """List the method presets."""
    from protoseg.config.segment import PRESETS

    for name, p in sorted(PRESETS.items()):
        typer.echo(f"{name:14s} {p.description}")


def register(app: typer.Typer) -> None:
    app.command("segment")(segment)
    app.command("presets")(presets)
