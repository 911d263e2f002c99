"""``protoseg segment``: label images with named classes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import Progress, TaskID

from protoseg.commands.common import (
    AllowSyntheticOption,
    DeviceOption,
    DtypeOption,
    FeaturesOption,
    JsonOption,
    RayAddressOption,
    SamOption,
    TextOption,
    model_overrides,
    print_json,
    progress_bar,
    read_classes,
)
from protoseg.commands.verbosity import model_library_output
from protoseg.errors import ProtosegError

if TYPE_CHECKING:
    from protoseg.bank import PrototypeBank
    from protoseg.batch import BatchSummary
    from protoseg.config.segment import Preset


def segment(
    images: Annotated[list[Path], typer.Argument(help="Image files (or folders of images) to segment.",
                                                 show_default=False)],
    bank: Annotated[Path, typer.Option(help="Prototype bank directory, or hf://owner/name (hf://owner/name@revision): "
                                            "a Hub dataset, downloaded and verified.")],
    classes: Annotated[str | None, typer.Option(help='Comma-separated class names, e.g. "road, car, sky".')] = None,
    classes_file: Annotated[Path | None, typer.Option(help="File with one class name a line.")] = None,
    preset: Annotated[str | None, typer.Option(
        help="Method preset (see `protoseg presets`); default: the one the bank was built for.")] = None,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("protoseg-out"),
    background: Annotated[bool, typer.Option(help="Label pixels matching no class as background (255).")] = False,
    threshold: Annotated[float | None, typer.Option(
        help="Background score threshold (preset default); needs --background.")] = None,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "float32",
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
    json_output: JsonOption = False,
    workers: Annotated[int | None, typer.Option(
        help="Processes for the CPU region work (superpixels, sub-regions) beside the model forwards "
             "(default: the cores this process may use; 0: none).", show_default=False)] = None,
    ray: Annotated[bool, typer.Option(
        "--ray", help="Segment on a Ray cluster (one worker per GPU, CPU workers otherwise); this machine "
                      "writes the outputs. Images and the bank must be readable at the same paths on every "
                      "node.")] = False,
    ray_address: RayAddressOption = None,
) -> None:
    """Segment IMAGES into the given classes; writes <stem>.png (label = index in the class list,
    255 = background; 16-bit above 255 classes), <stem>_overlay.jpg and <stem>.json into --out.
    Images whose outputs are up to date (same image, classes, bank and settings) are skipped.
    The hand-crafted presets (parts-world test backends) take only parts-world scenes unless
    --allow-synthetic-backend is given.
    With --generate-missing, classes the bank cannot serve are first generated with the bank's build
    recipe (Stable Diffusion) and added to the bank, so later runs reuse them."""
    from protoseg.batch import BatchSettings, segment_files  # import time: torch loads only to segment

    # Everything the user controls is checked before a model loads or an image is processed.
    names = read_classes(classes, classes_file)
    if workers is not None and workers < 0:
        raise ProtosegError(f"--workers must be 0 or more; got {workers}")
    if ray_address is not None and not ray:
        raise ProtosegError("--ray-address names the cluster of --ray; add --ray (or drop --ray-address)")
    if (diffusion is not None or llm is not None) and not generate_missing:
        raise ProtosegError("--diffusion and --llm are models for generating prototypes; add --generate-missing "
                            "(or drop them)")
    if threshold is not None and not background:
        raise ProtosegError("--threshold is the background threshold and only applies with --background; "
                            "add --background (or drop --threshold)")
    overrides = model_overrides(features, text, sam)
    if threshold is not None:
        overrides["background_threshold"] = threshold
    settings = BatchSettings(classes=names, bank=bank, out=out, preset=preset, overrides=overrides,
                             background=background, device=device, dtype=dtype, side_by_side=side_by_side,
                             allow_synthetic=allow_synthetic_backend, generate_missing=generate_missing,
                             diffusion=diffusion, llm=llm,
                             inputs=(classes_file,) if classes_file is not None else (),
                             workers=workers, ray=ray, ray_address=ray_address)
    model_library_output(diffusion=generate_missing)
    with _Bars() as bars:
        summary = segment_files(images, settings, progress=bars.update, grown=bars.grown)
    if json_output:
        print_json(_summary_record(summary))
    else:
        _print_summary(summary)
    not_converged = summary.diagnostics.get("transport_not_converged", 0)
    if not_converged:
        typer.echo(f"warning: {not_converged} of {summary.diagnostics.get('transport_problems', 0)} transport "
                   "problems did not converge (raise iterations or epsilon)", err=True)


def _summary_record(summary: BatchSummary) -> dict:
    """The ``--json`` summary: the output folder, the images written and skipped (input order), the classes
    generated first and the matchers' diagnostic counts."""
    return {"out": summary.out, "written": summary.written, "skipped": summary.skipped,
            "generated": summary.generated, "diagnostics": summary.diagnostics}


def _print_summary(summary: BatchSummary) -> None:
    out = summary.out
    if not summary.written:
        typer.echo(f"all {len(summary.skipped)} label map(s) in {out} are up to date (same images, classes, bank "
                   "and settings)")
        return
    skipped = len(summary.skipped)
    typer.echo(f"wrote {len(summary.written)} label map(s) and overlay(s) to {out}"
               + (f"; {skipped} already up to date" if skipped else ""))


class _Bars:
    """The progress of :func:`protoseg.batch.segment_files`: the generation stages on stderr, then one bar
    over the images (none for a single image), both gone when done; the line saying the bank grew."""

    def __init__(self) -> None:
        self._generating: Progress | None = None
        self._segmenting: Progress | None = None
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> _Bars:
        return self

    def __exit__(self, *exc: object) -> None:
        for bar in (self._generating, self._segmenting):
            if bar is not None:
                bar.stop()

    def update(self, stage: str, done: int, total: int) -> None:
        if stage.startswith("generating"):
            if self._generating is None:
                self._generating = progress_bar(transient=True)
                self._generating.start()
            bar = self._generating
        else:
            if self._segmenting is None:
                self._segmenting = progress_bar(transient=True, disable=total < 2)
                self._segmenting.start()
            bar = self._segmenting
        if stage not in self._tasks:
            self._tasks[stage] = bar.add_task(stage, total=total)
        bar.update(self._tasks[stage], completed=done, total=total)

    def grown(self, made: list[str], bank: PrototypeBank, seconds: float) -> None:
        if self._generating is not None:
            self._generating.stop()
        typer.echo(f"generated prototypes of {', '.join(map(repr, made))} with the bank's build recipe and added "
                   f"them to {bank.source} ({len(bank)} prototypes now) in {seconds:.1f} s", err=True)


def is_test_preset(preset: Preset) -> bool:
    """Whether ``preset`` is a test stand-in: hand-crafted parts-world features or tiny random models."""
    from protoseg.config.segment import TINY  # import time: it loads torch (through protoseg.regions)

    return preset.synthetic or preset.features == TINY


def presets(
    all_presets: Annotated[bool, typer.Option(
        "--all", help="Also list the test presets (parts-world hand-crafted features, tiny random models).")] = False,
    json_output: JsonOption = False,
) -> None:
    """List the method presets (the test presets with --all)."""
    from protoseg.config.segment import PRESETS  # import time: it loads torch (through protoseg.regions)

    shown = {name: p for name, p in sorted(PRESETS.items()) if all_presets or not is_test_preset(p)}
    if json_output:
        print_json([{**p.to_dict(), "test": is_test_preset(p)} for p in shown.values()])
        return
    for name, p in shown.items():
        typer.echo(f"{name:14s} {p.description}")
    if len(shown) < len(PRESETS):
        typer.echo(f"({len(PRESETS) - len(shown)} test presets not shown: protoseg presets --all)")


def register(app: typer.Typer) -> None:
    app.command("segment")(segment)
    app.command("presets")(presets)
