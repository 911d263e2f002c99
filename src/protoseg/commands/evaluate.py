"""``protoseg eval``, ``protoseg ablate`` and ``protoseg convert-coco-object``."""

from __future__ import annotations

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
    check_device,
    check_positive,
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

    protocol = (result.config.get("protocol") or {}).get("name")
    table = Table(title=f"{result.dataset}: {result.images} images",
                  caption=f"{protocol} protocol, {result.config.get('names')} names" if protocol else None)
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
    bank: Annotated[Path | None, typer.Option(
        "--bank", help="prototype bank folder (or hf://owner/name, hf://owner/name@revision) to segment with")] = None,
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
    ray: Annotated[bool, typer.Option("--ray", help="run the shards as Ray tasks (one GPU each when the "
                                                    "cluster has GPUs); totals equal a local run's")] = False,
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", help="Ray cluster address (default: a running cluster or a local Ray)")] = None,
    protocol: Annotated[str, typer.Option(
        "--protocol", help="evaluation protocol: tcl (FreeDA/DPSM, default) or the SCLIP family "
                           "(sclip, naclip, proxyclip, corrclip); with --predictions only recorded")] = "tcl",
    names: Annotated[str | None, typer.Option(
        "--names", help="class-name variant: mmseg, sclip, proxyclip, corrclip (default: the protocol's own)")] = None,
    plots: Annotated[Path | None, typer.Option(
        "--plots", help="folder for the per-class IoU chart and the confusion heat map "
                        "(<out stem>_iou.png, <out stem>_confusion.png; default: beside the report)")] = None,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="write no plots")] = False,
) -> None:
    """Score a bank (or saved predictions) on a benchmark under a published protocol.

    The Markdown report lists the published numbers of the same dataset and protocol family beside the run;
    the plots show the per-class IoU and the largest confusions.
    Runs resume when rerun unchanged; when an input changed (images, predictions, bank), it starts fresh."""
    from protoseg import __version__
    from protoseg.atomic import check_not_inputs, check_output_dir, check_output_file
    from protoseg.config.fields import to_dict
    from protoseg.datasets import DATASET_NAMES, dataset_classes, open_dataset
    from protoseg.eval.labelmaps import PredictionFolder
    from protoseg.eval.protocols import BENCHMARKS, NAME_VARIANTS, PROTOCOLS, protocol_family
    from protoseg.eval.query import benchmark_query
    from protoseg.eval.result import write_reports
    from protoseg.eval.segmenter_predictor import SegmenterPredictor
    from protoseg.eval.shards import RUN_FILE, evaluate, run_id
    from protoseg.runs import check_work_dir
    from protoseg.viz import read_label_classes

    if dataset is None:
        raise ProtosegError(f"--dataset is required; choose one of: {', '.join(DATASET_NAMES)}")
    if dataset not in DATASET_NAMES:
        raise ProtosegError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASET_NAMES)}")
    if list_classes:
        for i, name in enumerate(dataset_classes(dataset, data_root)):
            typer.echo(f"{i}\t{name}")
        return
    if (bank is None) == (predictions is None):
        raise ProtosegError(
            "give exactly one of --bank (run a model) or --predictions (score saved label maps)"
        )
    # Everything the user controls is checked before a model loads, data is generated or an image is read.
    if protocol not in PROTOCOLS:
        raise ProtosegError(f"unknown --protocol {protocol!r}; choose one of: {', '.join(PROTOCOLS)}")
    if names is not None and names not in NAME_VARIANTS:
        raise ProtosegError(f"unknown --names {names!r}; choose one of: {', '.join(NAME_VARIANTS)}")
    if plots is not None and no_plots:
        raise ProtosegError("give --plots DIR or --no-plots, not both")
    check_positive(limit=limit, shard_size=shard_size)
    if workers < 0:
        raise ProtosegError(f"--workers must be 0 or more, got {workers}")
    if beta_source not in ("paper", "code"):
        raise ProtosegError(f"--beta-source must be 'paper' or 'code', got {beta_source!r}")
    if bank is None and (save_predictions is not None or preset is not None or device is not None):
        raise ProtosegError("--save-predictions, --preset and --device apply to --bank runs, not to --predictions")
    resolved = check_device(device)
    out = out or Path(f"eval-{dataset}.json")
    if out.suffix.lower() == ".md":
        raise ProtosegError(f"--out {out} is the JSON report; the Markdown report is written next to it (.md)")
    check_output_file(out)
    plot_paths: list[Path] = []
    if not no_plots:
        folder = plots if plots is not None else out.parent
        plot_paths = [folder / f"{out.stem}_iou.png", folder / f"{out.stem}_confusion.png"]
        for path in plot_paths:
            check_output_file(path, "--plots")
    if run_dir is not None:
        check_work_dir(run_dir, marker=RUN_FILE, what="evaluation")
    if save_predictions is not None:
        check_output_dir(save_predictions, "--save-predictions")
    if predictions is not None and not predictions.is_dir():
        raise ProtosegError(f"--predictions {predictions} is not a folder of <stem>.png label maps")
    if data_root is not None and data_root.exists() and not data_root.is_dir():
        raise ProtosegError(f"--data-root {data_root} is a file; give the dataset's folder")
    console = Console(stderr=True)
    inputs: list[Path] = []
    # The preset, classes (with synonyms) and background rule of the dataset under the protocol; with
    # --predictions only the protocol's settings and the name variant are recorded.
    query = benchmark_query(dataset, protocol, names, preset, beta_source=beta_source, data_root=data_root,
                            **model_overrides(features, text, sam))
    if bank is not None:
        from protoseg.bank import PrototypeBank

        name = query.preset_name
        model_preset = query.preset
        loaded = PrototypeBank.load(bank)
        # hf:// banks are named by their address (a Ray worker downloads its own copy), folders by their path
        bank_ref = loaded.source if loaded.source.startswith("hf://") else str(Path(bank).resolve())
        inputs += [p for p in loaded.path.rglob("*") if p.is_file()]
    data = open_dataset(dataset, data_root).limit(limit)
    data.check_files(images=bank is not None)
    inputs += [p for sample in data.samples for p in (sample.image, sample.label)]
    config: dict[str, Any] = {
        "dataset": dataset,
        "limit": limit,
        "protocol": to_dict(query.settings),
        "names": query.names,
        "preset": query.preset_name if bank is not None else None,
        "bank_id": loaded.manifest.bank_id if bank is not None else None,
        "protoseg": __version__,
    }
    outputs = [out, out.with_suffix(".md"), *plot_paths]
    if save_predictions is not None:
        saved = [save_predictions / f"{sample.stem}.png" for sample in data.samples]
        outputs += saved
        for path in saved:
            if path.exists() and read_label_classes(path) is None:
                raise ProtosegError(f"{path} exists and was not written by protoseg; protoseg replaces only its "
                                    "own outputs: choose another --save-predictions folder")
    if predictions is not None:
        predictor: Any = PredictionFolder(predictions, data)
        predictor.check_sizes()
        inputs += predictor.paths
        check_not_inputs(outputs, inputs, "--out/--plots")
    else:
        from protoseg.models import ModelSet
        from protoseg.segment import Segmenter

        check_not_inputs(outputs, inputs, "--out/--plots/--save-predictions")
        loaded.check_classes([n for synonyms in query.classes.synonyms for n in synonyms]
                             + list(query.background_names))
        quiet_model_loading()
        models = ModelSet.for_preset(model_preset, device=resolved)
        segmenter = Segmenter(model_preset, loaded, models)
        description = {
            "preset": name,
            "bank": bank_ref,
            "beta_source": beta_source,
            "settings": model_preset.to_dict(),
            "device": str(models.device),
            "dtype": str(models.dtype),
            "save_predictions": str(save_predictions.resolve()) if save_predictions is not None else None,
        }
        # The recipe rebuilds the segmenter in a Ray worker; the query (plain data) travels with the predictor.
        recipe = {"preset": model_preset.to_dict(), "bank": bank_ref, "device": device}
        predictor = SegmenterPredictor(segmenter, data, description, save_predictions, recipe=recipe, query=query)
    run_dir = run_dir or out.parent / f"{out.stem}.run-{run_id(data, predictor, shard_size)}"
    with progress_bar(console) as progress:
        result = evaluate(
            data,
            predictor,
            run_dir=run_dir,
            shard_size=shard_size,
            workers=workers,
            progress=_tracker(progress, f"eval {dataset}"),
            config=config,
            ray=ray,
            ray_address=ray_address,
        )
    Console().print(_summary_table(result, per_class))
    if dataset in BENCHMARKS:
        from rich.markdown import Markdown

        from protoseg.eval.published import side_by_side

        label = {"method": "protoseg", "backbone": query.preset_name} if bank is not None else {
            "method": f"predictions ({predictions.name})" if predictions is not None else "this run"}
        published = "## Published numbers\n\n" + side_by_side(result.to_dict() | label, dataset, protocol)
        Console().print(Markdown(published))
    else:
        published = (f"No published numbers for `{dataset}` (protoseg's table covers the benchmarks "
                     f"{', '.join(BENCHMARKS)}; {protocol_family(protocol)} protocol family).\n")
    json_path, md_path = write_reports(result, out, extra_markdown=published)
    written = [json_path, md_path]
    if plot_paths:
        written += _write_plots(result, plot_paths, f"{dataset}, {protocol} protocol")
    console.print(f"reports: {', '.join(map(str, written))}")


def _write_plots(result: Any, paths: list[Path], title: str) -> list[Path]:
    """The per-class IoU chart and the confusion heat map (top confusions named) of ``result``, written
    atomically to ``paths`` (IoU chart, heat map); returns the paths written."""
    from protoseg.eval.plots import confusion_heatmap, per_class_iou_chart

    iou = [row["IoU"] for row in result.to_dict()["per_class"]]
    per_class_iou_chart(result.classes, iou, paths[0], title=f"{title}: per-class IoU")
    if result.confusion is None:
        return [paths[0]]
    c = len(result.classes)
    confusion_heatmap(result.confusion[:c, :c], result.classes, paths[1], title=f"{title}: confusion")
    return paths


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
        str, typer.Option("--suite", help="freeda (aggregation, superpixels, pooling), dpsm (Table 3 + switches) or "
                                       "sam-grid (SAM 8/16/32 points per side; needs --sam)")
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
    sam: Annotated[
        str | None, typer.Option("--sam", help="SAM weights (hub id or folder) for the sam-grid suite")
    ] = None,
) -> None:
    """Run an ablation suite on a procedural world: FreeDA's factors, or every DPSM Table 3 row and switch."""
    from protoseg.atomic import check_output_file
    from protoseg.eval.ablations import SUITES, ablation_markdown, dpsm_ablation_markdown, run_ablations

    check_positive(limit=limit)
    if workers < 0:
        raise ProtosegError(f"--workers must be 0 or more, got {workers}")
    if data_root is not None and data_root.exists() and not data_root.is_dir():
        raise ProtosegError(f"--data-root {data_root} is a file; give the world's folder (train/, dev/, test/)")
    if out is not None:
        check_output_file(out)

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
                                split=split, proposals=proposals, run_root=run_root, sam=sam)
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
        from protoseg.atomic import write_bytes

        text = ablation_markdown(results) if suite == "freeda" else dpsm_ablation_markdown(results, title)
        write_bytes(Path(out), text.encode())


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

    check_positive(workers=workers)
    if not data_root.is_dir():
        raise ProtosegError(f"--data-root {data_root} is not a folder; give the COCO-Stuff 164k root "
                            "(images/, annotations/)")
    if any(not s.strip() or "/" in s or s in (".", "..") for s in split or []):
        raise ProtosegError(f"--split takes annotation folder names such as val2017, got {split!r}")
    for name in split or ["val2017"]:
        if not (data_root / "annotations" / name).is_dir():
            raise ProtosegError(f"{data_root / 'annotations' / name} is missing; expected COCO-Stuff 164k as "
                                "DATA_ROOT/{images,annotations}/<split>/ (MMSeg layout)")

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
