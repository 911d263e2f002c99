"""A benchmark evaluation as one call: :func:`run_benchmark` takes an :class:`EvalSettings` record and returns
a :class:`BenchmarkReport` (the scores, the published numbers beside them, the files written).

It does what ``protoseg eval`` does: the dataset under its protocol and class-name variant
(:func:`~protoseg.eval.query.benchmark_query`), a bank segmented by the preset's models (or a folder of saved
label maps), the sharded resumable run (:func:`~protoseg.eval.shards.evaluate`, optionally on Ray), then the
JSON and Markdown reports and the plots. Everything the caller controls is checked before a model loads, data
is generated or an image is read; outputs never overwrite an input, and files that are not protoseg's are
never replaced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protoseg.atomic import check_not_inputs, check_output_dir, check_output_file
from protoseg.bank import PrototypeBank
from protoseg.bank_source import open_bank
from protoseg.config.fields import to_dict
from protoseg.datasets import SegDataset, open_dataset
from protoseg.errors import ProtosegError
from protoseg.eval.labelmaps import PredictionFolder
from protoseg.eval.plots import confusion_heatmap, per_class_iou_chart
from protoseg.eval.protocols import BENCHMARKS, protocol_family
from protoseg.eval.published import side_by_side
from protoseg.eval.query import BenchmarkQuery, benchmark_query
from protoseg.eval.result import EvalResult, write_reports
from protoseg.eval.segmenter_predictor import SegmenterPredictor
from protoseg.eval.shards import RUN_FILE, Predictor, evaluate, run_id
from protoseg.models import ModelSet
from protoseg.models.base import resolve_device
from protoseg.runs import Progress, check_work_dir
from protoseg.segment import Segmenter
from protoseg.version import __version__
from protoseg.viz import read_label_classes


@dataclass(frozen=True)
class EvalSettings:
    """One benchmark evaluation (the options of ``protoseg eval``).

    Attributes:
        dataset: a protoseg dataset name (:data:`protoseg.datasets.DATASET_NAMES`).
        data_root: the dataset's folder (optional for the procedural worlds).
        bank: prototype bank to segment with (folder, ``hf://`` address, or a published bank's name such as
            ``freeda-l``); exactly one of ``bank`` and ``predictions``.
        predictions: folder of ``<stem>.png`` label maps to score instead of running a model.
        preset: model preset (``None``: the dataset's); ``beta_source``: ``"paper"`` or ``"code"``.
        overrides: Preset fields for model weights (``features``, ``text``, ``sam``: hub id or folder).
        limit: score only the first ``limit`` images.
        out: JSON report path (Markdown beside it); ``None``: ``eval-<dataset>.json``.
        run_dir: resumable shard folder; ``None``: ``<out stem>.run-<hash>`` beside the report.
        workers, shard_size: data-loading threads, images per shard.
        device: torch device of the models.
        save_predictions: also write every label map as ``<folder>/<stem>.png``.
        ray, ray_address: run the shards as Ray tasks.
        protocol, names: the evaluation protocol and class-name variant (``None``: the protocol's own).
        plots: folder of the per-class IoU chart and confusion heat map (``None``: beside the report);
            ``no_plots``: write none.
    """

    dataset: str
    data_root: Path | None = None
    bank: Path | None = None
    predictions: Path | None = None
    preset: str | None = None
    beta_source: str = "paper"
    overrides: dict[str, str] = field(default_factory=dict)
    limit: int | None = None
    out: Path | None = None
    run_dir: Path | None = None
    workers: int = 4
    shard_size: int = 50
    device: str | None = None
    save_predictions: Path | None = None
    ray: bool = False
    ray_address: str | None = None
    protocol: str = "tcl"
    names: str | None = None
    plots: Path | None = None
    no_plots: bool = False

    @property
    def report_path(self) -> Path:
        """The JSON report's path."""
        return self.out or Path(f"eval-{self.dataset}.json")

    @property
    def plot_paths(self) -> list[Path]:
        """The per-class IoU chart and the confusion heat map (none with ``no_plots``)."""
        if self.no_plots:
            return []
        out = self.report_path
        folder = self.plots if self.plots is not None else out.parent
        return [folder / f"{out.stem}_iou.png", folder / f"{out.stem}_confusion.png"]


@dataclass
class BenchmarkReport:
    """What :func:`run_benchmark` produced.

    Attributes:
        result: the scores (:class:`~protoseg.eval.result.EvalResult`).
        query: the dataset under its protocol and class-name variant.
        published: Markdown: the published numbers of the same dataset and protocol family beside the run
            (``## Published numbers`` and a table), or one line saying there are none.
        written: the reports and plots written.
    """

    result: EvalResult
    query: BenchmarkQuery
    published: str
    written: list[Path]

    @property
    def has_published(self) -> bool:
        """Whether :attr:`published` is a table (the dataset is one of the benchmarks)."""
        return self.result.dataset in BENCHMARKS


def check_outputs(settings: EvalSettings) -> None:
    """Check the report, plot, run and prediction paths and the input folders before anything is read.

    Raises:
        ProtosegError: a path that is not protoseg's to write, or an input that is not a folder.
    """
    out = settings.report_path
    if out.suffix.lower() == ".md":
        raise ProtosegError(f"--out {out} is the JSON report; the Markdown report is written next to it (.md)")
    check_output_file(out)
    for path in settings.plot_paths:
        check_output_file(path, "--plots")
    if settings.run_dir is not None:
        check_work_dir(settings.run_dir, marker=RUN_FILE, what="evaluation")
    if settings.save_predictions is not None:
        check_output_dir(settings.save_predictions, "--save-predictions")
    if settings.predictions is not None and not settings.predictions.is_dir():
        raise ProtosegError(f"--predictions {settings.predictions} is not a folder of <stem>.png label maps")
    data_root = settings.data_root
    if data_root is not None and data_root.exists() and not data_root.is_dir():
        raise ProtosegError(f"--data-root {data_root} is a file; give the dataset's folder")


def _saved_predictions(settings: EvalSettings, data: SegDataset) -> list[Path]:
    """The label maps ``save_predictions`` will hold; refuses files protoseg did not write."""
    if settings.save_predictions is None:
        return []
    saved = [settings.save_predictions / f"{sample.stem}.png" for sample in data.samples]
    for path in saved:
        if path.exists() and read_label_classes(path) is None:
            raise ProtosegError(f"{path} exists and was not written by protoseg; protoseg replaces only its "
                                "own outputs: choose another --save-predictions folder")
    return saved


def _bank_reference(settings: EvalSettings, bank: PrototypeBank) -> str:
    """How a Ray worker finds the bank: ``hf://`` banks by their address (each worker downloads its own
    copy), folders by their absolute path."""
    return bank.source if bank.source.startswith("hf://") else str(Path(bank.source).resolve())


def segmenter_predictor(settings: EvalSettings, query: BenchmarkQuery, bank: PrototypeBank,
                        data: SegDataset) -> SegmenterPredictor:
    """The query's preset with its models on ``settings.device`` over ``bank``, as a predictor that also
    carries the recipe to rebuild it in a Ray worker (the query, plain data, travels with it).

    Raises:
        ProtosegError: the bank does not serve a queried class or background name.
    """
    bank.check_classes([n for synonyms in query.classes.synonyms for n in synonyms] + list(query.background_names))
    preset = query.preset
    models = ModelSet.for_preset(preset, device=resolve_device(settings.device))
    bank_ref = _bank_reference(settings, bank)
    save = settings.save_predictions
    description = {
        "preset": query.preset_name,
        "bank": bank_ref,
        "beta_source": settings.beta_source,
        "settings": preset.to_dict(),
        "device": str(models.device),
        "dtype": str(models.dtype),
        "save_predictions": str(save.resolve()) if save is not None else None,
    }
    recipe = {"preset": preset.to_dict(), "bank": bank_ref, "device": settings.device}
    return SegmenterPredictor(Segmenter(preset, bank, models), data, description, save, recipe=recipe,
                              query=query)


def _predictor(settings: EvalSettings, query: BenchmarkQuery, bank: PrototypeBank | None,
               data: SegDataset) -> Predictor:
    """The predictor of the run, after checking that no output is one of its inputs (the images and
    ground truth, the bank's files, the predictions)."""
    inputs = [p for p in bank.path.rglob("*") if p.is_file()] if bank is not None else []
    inputs += [p for sample in data.samples for p in (sample.image, sample.label)]
    out = settings.report_path
    outputs = [out, out.with_suffix(".md"), *settings.plot_paths, *_saved_predictions(settings, data)]
    if bank is None:
        assert settings.predictions is not None
        folder = PredictionFolder(settings.predictions, data)
        folder.check_sizes()
        check_not_inputs(outputs, inputs + folder.paths, "--out/--plots")
        return folder
    check_not_inputs(outputs, inputs, "--out/--plots/--save-predictions")
    return segmenter_predictor(settings, query, bank, data)


def published_markdown(report: dict[str, Any], query: BenchmarkQuery, settings: EvalSettings) -> str:
    """The published numbers of the dataset and protocol family beside the run ``report``
    (:meth:`EvalResult.to_dict`), or a line saying protoseg's table has none for this dataset."""
    dataset, protocol = settings.dataset, settings.protocol
    if dataset not in BENCHMARKS:
        return (f"No published numbers for `{dataset}` (protoseg's table covers the benchmarks "
                f"{', '.join(BENCHMARKS)}; {protocol_family(protocol)} protocol family).\n")
    if settings.bank is not None:
        label = {"method": "protoseg", "backbone": query.preset_name}
    else:
        label = {"method": f"predictions ({settings.predictions.name})" if settings.predictions is not None
                 else "this run"}
    return "## Published numbers\n\n" + side_by_side(report | label, dataset, protocol)


def write_plots(result: EvalResult, paths: list[Path], title: str) -> list[Path]:
    """The per-class IoU chart and the confusion heat map (top confusions named) of ``result``, written
    atomically to ``paths`` (IoU chart, heat map); returns the paths written."""
    iou = [row["IoU"] for row in result.to_dict()["per_class"]]
    per_class_iou_chart(result.classes, iou, paths[0], title=f"{title}: per-class IoU")
    if result.confusion is None:
        return [paths[0]]
    c = len(result.classes)
    confusion_heatmap(result.confusion[:c, :c], result.classes, paths[1], title=f"{title}: confusion")
    return paths


def run_benchmark(settings: EvalSettings, progress: Progress | None = None) -> BenchmarkReport:
    """Score a bank (or saved predictions) on a benchmark under a protocol and write the reports.

    ``progress("images", done, total)`` follows the images. The run resumes from ``run_dir`` when rerun
    unchanged and starts fresh when an input changed (images, predictions, bank). The Markdown report ends
    with the published numbers of the same dataset and protocol family.

    Raises:
        ProtosegError: anything the caller controls that is wrong, found before the work starts where it can be.
    """
    check_outputs(settings)
    query = benchmark_query(settings.dataset, settings.protocol, settings.names, settings.preset,
                            beta_source=settings.beta_source, data_root=settings.data_root, **settings.overrides)
    bank = open_bank(settings.bank) if settings.bank is not None else None
    data = open_dataset(settings.dataset, settings.data_root).limit(settings.limit)
    data.check_files(images=bank is not None)
    config: dict[str, Any] = {
        "dataset": settings.dataset,
        "limit": settings.limit,
        "protocol": to_dict(query.settings),
        "names": query.names,
        "preset": query.preset_name if bank is not None else None,
        "bank_id": bank.manifest.bank_id if bank is not None else None,
        "protoseg": __version__,
    }
    predictor = _predictor(settings, query, bank, data)
    out = settings.report_path
    run_dir = settings.run_dir or out.parent / f"{out.stem}.run-{run_id(data, predictor, settings.shard_size)}"
    result = evaluate(data, predictor, run_dir=run_dir, shard_size=settings.shard_size, workers=settings.workers,
                      progress=progress, config=config, ray=settings.ray, ray_address=settings.ray_address)
    published = published_markdown(result.to_dict(), query, settings)
    written = list(write_reports(result, out, extra_markdown=published))
    if settings.plot_paths:
        written += write_plots(result, settings.plot_paths, f"{settings.dataset}, {settings.protocol} protocol")
    return BenchmarkReport(result, query, published, written)
