"""``protoseg eval``, ``protoseg ablate`` and ``protoseg convert-coco-object``."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from protoseg.commands.common import (
    FeaturesOption,
    SamOption,
    TextOption,
    model_overrides,
    progress_bar,
    quiet_model_loading,
)
from protoseg.errors import ProtosegError


def _tracker(progress: Progress, description: str):
    task = progress.add_task(description, total=None)

    def update(stage: str, done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    return update


def _summary_table(result: Any, per_class: bool) -> Table:
    d = result.to_dict()

    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2f}"

    table = Table(title=f"{result.dataset}: {result.images} images")
    if per_class:
        table.add_column("#", justify="right")
        table.add_column("class")
        table.add_column("IoU", justify="right")
        table.add_column("Acc", justify="right")
        for i, row in enumerate(d["per_class"]):
            table.add_row(str(i), repr(row["class"]), fmt(row["IoU"]), fmt(row["Acc"]))
        table.add_section()
        table.add_row("", "mIoU / mAcc / aAcc", fmt(d["mIoU"]), f"{fmt(d['mAcc'])} / {fmt(d['aAcc'])}")
    else:
        for name in ("mIoU", "mAcc", "aAcc"):
            table.add_column(name, justify="right")
        table.add_row(fmt(d["mIoU"]), fmt(d["mAcc"]), fmt(d["aAcc"]))
    return table


def eval_command(
    dataset: Annotated[
        str | None,
        typer.Option(
            "--dataset",
            "-d",
            help="voc20, voc, context59, context60, coco-stuff, "
            "coco-object, cityscapes, ade20k, parts-world, examples",
        ),
    ] = None,
    data_root: Annotated[
        Path | None,
        typer.Option(
            "--data-root",
            help="dataset folder (MMSeg layout); optional for parts-world (generated into ~/.cache/protoseg)",
        ),
    ] = None,
    bank: Annotated[Path | None, typer.Option("--bank", help="prototype bank folder to segment with")] = None,
    predictions: Annotated[
        Path | None,
        typer.Option(
            "--predictions", help="folder of <stem>.png label maps to score instead of running a model"
        ),
    ] = None,
    preset: Annotated[
        str | None, typer.Option("--preset", help="model preset (default: the dataset's, e.g. freeda-l)")
    ] = None,
    beta_source: Annotated[
        str, typer.Option("--beta-source", help="'paper' (0.7 VOC, 0.8 else) or 'code' (0.8)")
    ] = "paper",
    limit: Annotated[int | None, typer.Option("--limit", help="score only the first N images")] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="JSON report path (Markdown written next to it); default eval-<dataset>.json"
        ),
    ] = None,
    run_dir: Annotated[
        Path | None,
        typer.Option(
            "--run-dir",
            help="resumable shard folder (default: <out>.run-<hash of dataset, images and predictor>)",
        ),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="data-loading threads")] = 4,
    shard_size: Annotated[int, typer.Option("--shard-size", help="images per resumable shard")] = 50,
    per_class: Annotated[bool, typer.Option("--per-class/--summary", help="print per-class IoU")] = False,
    device: Annotated[
        str | None, typer.Option("--device", help="torch device (default: cuda if available)")
    ] = None,
    save_predictions: Annotated[
        Path | None,
        typer.Option("--save-predictions", help="also write each label map as DIR/<stem>.png (re-scorable)"),
    ] = None,
    list_classes: Annotated[
        bool,
        typer.Option(
            "--list-classes",
            help="print the class list (index<TAB>name) that predictions index into, and exit",
        ),
    ] = False,
    features: FeaturesOption = None,
    text: TextOption = None,
    sam: SamOption = None,
) -> None:
    """Score a bank (or saved predictions) on a benchmark under the papers' protocol."""
    from protoseg.datasets import DATASET_NAMES, dataset_classes, dataset_preset, open_dataset
    from protoseg.evaluate import PredictionFolder, SegmenterPredictor, evaluate, run_id, write_reports

    if dataset is None:
        raise ProtosegError(f"--dataset is required; choose one of: {', '.join(DATASET_NAMES)}")
    if list_classes:
        for i, name in enumerate(dataset_classes(dataset, data_root)):
            typer.echo(f"{i}\t{name}")
        return
    if (bank is None) == (predictions is None):
        raise ProtosegError(
            "give exactly one of --bank (run a model) or --predictions (score saved label maps)"
        )
    console = Console(stderr=True)
    data = open_dataset(dataset, data_root).limit(limit)
    config: dict[str, Any] = {"dataset": dataset, "limit": limit}
    if predictions is not None:
        predictor: Any = PredictionFolder(predictions, data)
    else:
        from protoseg.bank import PrototypeBank
        from protoseg.models import ModelSet
        from protoseg.segment import Segmenter

        protocol = dataset_preset(dataset)
        name = preset or protocol.model_preset
        model_preset = protocol.apply(name, beta_source=beta_source, **model_overrides(features, text, sam))
        loaded = PrototypeBank.load(bank)
        quiet_model_loading()
        models = ModelSet(model_preset.features, model_preset.text, model_preset.sam, device=device)
        segmenter = Segmenter(model_preset, loaded, models)
        description = {
            "preset": name,
            "bank": str(Path(bank).resolve()),
            "beta_source": beta_source,
            "matcher": model_preset.matcher,
            "matcher_options": model_preset.matcher_options,
            "superpixels": vars(model_preset.superpixels),
            "background_threshold": model_preset.background_threshold,
            "scale": list(model_preset.scale),
            "crop": model_preset.crop,
            "stride": model_preset.stride,
        }
        predictor = SegmenterPredictor(
            segmenter, data, json.loads(json.dumps(description, default=str)), save_predictions
        )
    out = out or Path(f"eval-{dataset}.json")
    run_dir = run_dir or out.parent / f"{out.stem}.run-{run_id(data, predictor, shard_size)}"
    with progress_bar(console) as progress:
        result = evaluate(
            data,
            predictor,
            run_dir=run_dir,
            shard_size=shard_size,
            workers=workers,
            progress=functools.partial(_tracker(progress, f"eval {dataset}"), "images"),
            config=config,
        )
    Console().print(_summary_table(result, per_class))
    json_path, md_path = write_reports(result, out)
    console.print(f"reports: {json_path}, {md_path}")


def ablate_command(
    data_root: Annotated[
        Path | None, typer.Option("--data-root", help="world folder (default ~/.cache/protoseg/<world>-world)")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="evaluate only the first N test images")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="data-loading threads")] = 2,
    out: Annotated[Path | None, typer.Option("--out", help="also write the table as Markdown here")] = None,
    suite: Annotated[
        str, typer.Option("--suite", help="freeda (aggregation, superpixels, pooling) or dpsm (Table 3 + switches)")
    ] = "freeda",
    world: Annotated[str, typer.Option("--world", help="parts or recombined")] = "parts",
    split: Annotated[str, typer.Option("--split", help="test (held out) or dev (for choosing settings)")] = "test",
    proposals: Annotated[
        str, typer.Option("--proposals", help="dpsm rows: superpixels (the preset's) or oracle (object masks)")
    ] = "superpixels",
    rows: Annotated[
        str | None, typer.Option("--rows", help="comma-separated row numbers to run (1-based; default all)")
    ] = None,
    run_root: Annotated[
        Path | None, typer.Option("--run-root", help="keep resumable per-row runs here (reruns skip finished work)")
    ] = None,
) -> None:
    """Run an ablation suite on a procedural world: FreeDA's factors, or every DPSM Table 3 row and switch."""
    from protoseg.ablations import SUITES, ablation_markdown, dpsm_ablation_markdown, run_ablations

    if suite not in SUITES:
        raise ProtosegError(f"--suite must be one of {', '.join(SUITES)}; got {suite!r}")
    chosen = SUITES[suite]
    if rows:
        picked = [i.strip() for i in rows.split(",")]
        if not all(i.isdigit() and 1 <= int(i) <= len(chosen) for i in picked):
            raise ProtosegError(f"--rows takes numbers 1..{len(chosen)} separated by commas; got {rows!r}")
        chosen = tuple(chosen[int(i) - 1] for i in picked)
    console = Console(stderr=True)
    with progress_bar(console) as progress:
        tasks: dict[str, Any] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task("bank" if stage == "bank" else stage, total=total)
            progress.update(tasks[stage], completed=done, total=total)

        results = run_ablations(data_root, chosen, limit=limit, workers=workers, progress=update, world=world,
                                split=split, proposals=proposals, run_root=run_root)
    images = results[0][1].images
    title = f"{suite} ablations on the {world} world ({split}, {images} images, proposals: {proposals})"
    table = Table(title=title)
    for col in ("variant", "mIoU", "mAcc", "aAcc"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for row, res in results:
        s = res.scores
        table.add_row(row.name, f"{s.miou * 100:.2f}", f"{s.macc * 100:.2f}", f"{s.aacc * 100:.2f}")
    Console().print(table)
    if out is not None:
        from protoseg.evaluate import write_atomic

        text = ablation_markdown(results) if suite == "freeda" else dpsm_ablation_markdown(results, title)
        write_atomic(Path(out), text.encode())


def convert_coco_object_command(
    data_root: Annotated[
        Path, typer.Option("--data-root", help="COCO-Stuff 164k root (images/, annotations/)")
    ],
    split: Annotated[
        list[str] | None, typer.Option("--split", help="annotation split folder(s) [default: val2017]")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="threads")] = 4,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="rewrite existing outputs")] = False,
) -> None:
    """Write COCO-Object ground truth (<stem>_instanceTrainIds.png) from COCO-Stuff label maps."""
    from protoseg.datasets.coco_object import convert_coco_object

    console = Console(stderr=True)
    with progress_bar(console) as progress:
        written = convert_coco_object(
            data_root, tuple(split or ["val2017"]), workers, overwrite, _tracker(progress, "convert")
        )
    console.print(f"wrote {written} COCO-Object label maps")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
    app.command("ablate")(ablate_command)
    app.command("convert-coco-object")(convert_coco_object_command)
