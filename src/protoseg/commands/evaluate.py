"""``protoseg eval``, ``protoseg ablate`` and ``protoseg convert-coco-object``."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from protoseg.atomic import check_output_file, write_bytes
from protoseg.commands.common import (
    DeviceOption,
    FeaturesOption,
    RayAddressOption,
    SamOption,
    TextOption,
    check_device,
    check_positive,
    model_overrides,
    progress_bar,
)
from protoseg.commands.verbosity import model_library_output
from protoseg.errors import ProtosegError


def _tracker(progress: Progress, description: str):
    task = progress.add_task(description, total=None)

    def update(stage: str, done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    return update


class _LazyBar(AbstractContextManager):
    """A progress bar drawn from the first update on: nothing is drawn while the run checks its inputs and
    loads its models (an error then stays one line)."""

    def __init__(self, console: Console, description: str):
        self.console, self.description = console, description
        self.progress: Progress | None = None
        self.update: Any = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.progress is None:
            self.progress = progress_bar(self.console)
            self.progress.start()
            self.update = _tracker(self.progress, self.description)
        self.update(stage, done, total)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


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


DatasetOption = Annotated[str | None, typer.Option(
    "--dataset", "-d",
    help="voc20, voc, context59, context60, coco-stuff, coco-object, cityscapes, ade20k, parts-world, examples")]
DataRootOption = Annotated[Path | None, typer.Option(
    "--data-root", help="dataset folder (MMSeg layout); optional for parts-world (generated into ~/.cache/protoseg)")]
BankOption = Annotated[Path | None, typer.Option(
    "--bank", help="prototype bank folder (or hf://owner/name, hf://owner/name@revision) to segment with")]
PredictionsOption = Annotated[Path | None, typer.Option(
    "--predictions", help="folder of <stem>.png label maps to score instead of running a model")]
PresetOption = Annotated[str | None, typer.Option(
    "--preset", help="model preset (default: the dataset's, e.g. freeda-l)")]
BetaSourceOption = Annotated[str, typer.Option("--beta-source", help="'paper' (0.7 VOC, 0.8 else) or 'code' (0.8)")]
LimitOption = Annotated[int | None, typer.Option("--limit", help="score only the first N images")]
OutOption = Annotated[Path | None, typer.Option(
    "--out", help="JSON report path (Markdown written next to it); default eval-<dataset>.json")]
RunDirOption = Annotated[Path | None, typer.Option(
    "--run-dir", help="resumable shard folder (default: <out>.run-<hash of dataset, images and predictor>)")]
WorkersOption = Annotated[int, typer.Option("--workers", help="data-loading threads")]
ShardSizeOption = Annotated[int, typer.Option("--shard-size", help="images per resumable shard")]
PerClassOption = Annotated[bool, typer.Option("--per-class/--summary", help="print per-class IoU")]
SavePredictionsOption = Annotated[Path | None, typer.Option(
    "--save-predictions", help="also write each label map as DIR/<stem>.png (re-scorable)")]
ListClassesOption = Annotated[bool, typer.Option(
    "--list-classes", help="print the class list (index<TAB>name) that predictions index into, and exit")]
RayOption = Annotated[bool, typer.Option(
    "--ray", help="run the shards as Ray tasks (one GPU each when the cluster has GPUs); totals equal a local run's")]
ProtocolOption = Annotated[str, typer.Option(
    "--protocol", help="evaluation protocol: tcl (FreeDA/DPSM, default) or the SCLIP family "
                       "(sclip, naclip, proxyclip, corrclip); with --predictions only recorded")]
NamesOption = Annotated[str | None, typer.Option(
    "--names", help="class-name variant: mmseg, sclip, proxyclip, corrclip (default: the protocol's own)")]
PlotsOption = Annotated[Path | None, typer.Option(
    "--plots", help="folder for the per-class IoU chart and the confusion heat map "
                    "(<out stem>_iou.png, <out stem>_confusion.png; default: beside the report)")]
NoPlotsOption = Annotated[bool, typer.Option("--no-plots", help="write no plots")]


def _check_options(settings: Any) -> None:
    """What the user controls and is known without touching a file (an
    :class:`~protoseg.eval.runner.EvalSettings`), checked before anything loads."""
    # numpy and the dataset tables load when a command runs, not at the CLI's start.
    from protoseg.eval.protocols import NAME_VARIANTS, PROTOCOLS

    s = settings
    if (s.bank is None) == (s.predictions is None):
        raise ProtosegError("give exactly one of --bank (run a model) or --predictions (score saved label maps)")
    if s.protocol not in PROTOCOLS:
        raise ProtosegError(f"unknown --protocol {s.protocol!r}; choose one of: {', '.join(PROTOCOLS)}")
    if s.names is not None and s.names not in NAME_VARIANTS:
        raise ProtosegError(f"unknown --names {s.names!r}; choose one of: {', '.join(NAME_VARIANTS)}")
    if s.plots is not None and s.no_plots:
        raise ProtosegError("give --plots DIR or --no-plots, not both")
    check_positive(limit=s.limit, shard_size=s.shard_size)
    if s.workers < 0:
        raise ProtosegError(f"--workers must be 0 or more, got {s.workers}")
    if s.beta_source not in ("paper", "code"):
        raise ProtosegError(f"--beta-source must be 'paper' or 'code', got {s.beta_source!r}")
    if s.bank is None and (s.save_predictions is not None or s.preset is not None or s.device is not None):
        raise ProtosegError("--save-predictions, --preset and --device apply to --bank runs, not to --predictions")
    check_device(s.device)


def eval_command(
    dataset: DatasetOption = None,
    data_root: DataRootOption = None,
    bank: BankOption = None,
    predictions: PredictionsOption = None,
    preset: PresetOption = None,
    beta_source: BetaSourceOption = "paper",
    limit: LimitOption = None,
    out: OutOption = None,
    run_dir: RunDirOption = None,
    workers: WorkersOption = 4,
    shard_size: ShardSizeOption = 50,
    per_class: PerClassOption = False,
    device: DeviceOption = None,
    save_predictions: SavePredictionsOption = None,
    list_classes: ListClassesOption = False,
    features: FeaturesOption = None,
    text: TextOption = None,
    sam: SamOption = None,
    ray: RayOption = False,
    ray_address: RayAddressOption = None,
    protocol: ProtocolOption = "tcl",
    names: NamesOption = None,
    plots: PlotsOption = None,
    no_plots: NoPlotsOption = False,
) -> None:
    """Score a bank (or saved predictions) on a benchmark under a published protocol.

    The Markdown report lists the published numbers of the same dataset and protocol family beside the run;
    the plots show the per-class IoU and the largest confusions.
    Runs resume when rerun unchanged; when an input changed (images, predictions, bank), it starts fresh."""
    # The runner loads torch and the models, rich.markdown its parser: imported when the command runs, not at
    # the CLI's start.
    from rich.markdown import Markdown

    from protoseg.datasets import DATASET_NAMES, dataset_classes
    from protoseg.eval.runner import EvalSettings, run_benchmark

    if dataset is None:
        raise ProtosegError(f"--dataset is required; choose one of: {', '.join(DATASET_NAMES)}")
    if dataset not in DATASET_NAMES:
        raise ProtosegError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASET_NAMES)}")
    if list_classes:
        for i, name in enumerate(dataset_classes(dataset, data_root)):
            typer.echo(f"{i}\t{name}")
        return
    settings = EvalSettings(
        dataset=dataset, data_root=data_root, bank=bank, predictions=predictions, preset=preset,
        beta_source=beta_source, overrides=model_overrides(features, text, sam), limit=limit, out=out,
        run_dir=run_dir, workers=workers, shard_size=shard_size, device=device, save_predictions=save_predictions,
        ray=ray, ray_address=ray_address, protocol=protocol, names=names, plots=plots, no_plots=no_plots)
    _check_options(settings)
    if bank is not None:
        model_library_output()
    console = Console(stderr=True)
    with _LazyBar(console, f"eval {dataset}") as bar:
        report = run_benchmark(settings, progress=bar)
    Console().print(_summary_table(report.result, per_class))
    if report.has_published:
        Console().print(Markdown(report.published))
    console.print(f"reports: {', '.join(map(str, report.written))}")


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
    # The ablations load torch and the models: imported when the command runs, not at the CLI's start.
    from protoseg.eval import ablations

    check_positive(limit=limit)
    if workers < 0:
        raise ProtosegError(f"--workers must be 0 or more, got {workers}")
    if data_root is not None and data_root.exists() and not data_root.is_dir():
        raise ProtosegError(f"--data-root {data_root} is a file; give the world's folder (train/, dev/, test/)")
    if out is not None:
        check_output_file(out)
    chosen = ablations.select_rows(suite, rows)
    with progress_bar(Console(stderr=True)) as progress:
        results = ablations.run_ablations(data_root, chosen, limit=limit, workers=workers,
                                          progress=_stage_tracker(progress), world=world, split=split,
                                          proposals=proposals, run_root=run_root, sam=sam)
    title = ablations.suite_title(suite, world, split, results, proposals)
    Console().print(_ablation_table(title, results))
    if out is not None:
        write_bytes(Path(out), ablations.suite_markdown(suite, results, title).encode())


def _stage_tracker(progress: Progress):
    """A progress callback with one bar per stage (``"bank"``, then each row)."""
    tasks: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task("bank" if stage == "bank" else stage, total=total)
        progress.update(tasks[stage], completed=done, total=total)

    return update


def _ablation_table(title: str, results: list[Any]) -> Table:
    table = Table(title=title)
    for col in ("variant", "mIoU", "mAcc", "aAcc"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for row, res in results:
        s = res.scores
        table.add_row(row.name, f"{s.miou * 100:.2f}", f"{s.macc * 100:.2f}", f"{s.aacc * 100:.2f}")
    return table


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
    from protoseg.datasets.coco_object import convert_coco_object  # numpy: loaded when the command runs

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
