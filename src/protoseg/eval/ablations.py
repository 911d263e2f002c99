"""Ablations on the procedural worlds: FreeDA's factors and DPSM's Table 3 with the switches beyond it.

A support bank is built once from a world's ``train`` split (labelled examples, hand-crafted features,
area pooling); every row then evaluates a held-out split (``test``; ``dev`` for choosing settings) with
its segmentation preset plus that row's matcher options, under the full protocol (resize, sliding
windows, dataset-wide mIoU and per-class IoU).

**FreeDA** (:data:`ABLATIONS`, preset ``handcrafted``; rows vary one factor at a time against the first):

- prototype aggregation: mean of the class's prototypes vs k-means centroids (max over centroids);
- superpixels: region-pooled scores vs the dense patch map;
- region pooling: area-weighted vs FreeDA's point sampling (bilinear, ``align_corners=True``).

**DPSM** (:data:`DPSM_ABLATIONS`, preset ``handcrafted-dpsm``): every matching column of DPSM's Table 3
in the paper's setting (:data:`DPSM_PAPER`: capacity 1, one supply unit per class, Sinkhorn at ε 0.05),
then the switches beyond the paper — ε fixed / ``"auto"`` / exact transport, class capacity τ, supply
per support view or per coarse cluster — the nearest-part vote (τ → ∞), the ``handcrafted-dpsm``
preset itself and FreeDA's local matching for reference. Proposals are the preset's superpixels or,
with ``proposals="oracle"``, the world's object masks (a perfect class-agnostic proposal generator,
``objects/<stem>.png``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from protoseg.bank import PrototypeBank
from protoseg.config.segment import get_preset
from protoseg.datasets import SegDataset, open_parts_world
from protoseg.errors import ProtosegError
from protoseg.eval.benchmarks import dataset_preset
from protoseg.eval.result import EvalResult
from protoseg.eval.segmenter_predictor import SegmenterPredictor
from protoseg.eval.shards import evaluate, run_id
from protoseg.models import ModelSet
from protoseg.offline import ExamplesSource, build_bank, examples_preset
from protoseg.runs import Progress
from protoseg.segment import Segmenter
from protoseg.worlds import read_objects
from protoseg.worlds.cache import (
    WORLD_DATASETS,
    WORLD_SPLITS,
    default_parts_world_root,
    ensure_parts_world_split,
    support_bank_folder,
)

#: Sources of proposals for DPSM rows: the preset's own, or the world's object masks.
PROPOSAL_SOURCES = ("superpixels", "oracle")


@dataclass(frozen=True)
class Ablation:
    """One table row: a name, the matcher options it sets and the segmentation preset it starts from."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    preset: str = "handcrafted"


ABLATIONS: tuple[Ablation, ...] = (
    Ablation(
        "mean · superpixels · area", {"aggregation": "mean", "use_superpixels": True, "pooling": "area"}
    ),
    Ablation(
        "k-means (4) · superpixels · area",
        {"aggregation": "kmeans", "clusters": 4, "use_superpixels": True, "pooling": "area"},
    ),
    Ablation("mean · no superpixels", {"aggregation": "mean", "use_superpixels": False, "pooling": "area"}),
    Ablation(
        "k-means (4) · no superpixels",
        {"aggregation": "kmeans", "clusters": 4, "use_superpixels": False, "pooling": "area"},
    ),
    Ablation(
        "mean · superpixels · point", {"aggregation": "mean", "use_superpixels": True, "pooling": "point"}
    ),
)

#: DPSM's own setting of every switch the rows vary (Table 3's sub-region OT row).
#: Transport is solved unpruned (``prune_keep=0``) in every DPSM row: the rows measure the method, not the
#: speed-up (``prune_keep`` is measured in ``benchmarks/transport.py``).
DPSM_PAPER: dict[str, Any] = {"mode": "subregion-ot", "epsilon": 0.05, "emd_solver": "sinkhorn",
                              "capacity": 1.0, "supply": "class", "composition": "mean", "prune_keep": 0.0}


def _dpsm(name: str, **changes: Any) -> Ablation:
    return Ablation(name, {**DPSM_PAPER, **changes}, preset="handcrafted-dpsm")


DPSM_ABLATIONS: tuple[Ablation, ...] = (
    Ablation("FreeDA local (reference)", {}, preset="handcrafted"),
    _dpsm("Table 3 · img-to-img", mode="image-to-image"),
    _dpsm("Table 3 · single (EMD)", mode="single", emd_solver="exact"),
    _dpsm("Table 3 · img-to-cls (EMD)", mode="image-to-class", emd_solver="exact"),
    _dpsm("Table 3 · sub-region OT (paper)"),
    _dpsm("OT · ε 0.01", epsilon=0.01),
    _dpsm("OT · ε auto", epsilon="auto"),
    _dpsm("OT · exact", emd_solver="exact"),
    _dpsm("OT · exact · τ 2", emd_solver="exact", capacity=2.0),
    _dpsm("OT · exact · τ 4", emd_solver="exact", capacity=4.0),
    _dpsm("OT · exact · τ 8", emd_solver="exact", capacity=8.0),
    _dpsm("OT · exact · τ 16", emd_solver="exact", capacity=16.0),
    _dpsm("OT · exact · per-view supply", emd_solver="exact", supply="view"),
    _dpsm("OT · exact · per-cluster supply", emd_solver="exact", supply="cluster"),
    _dpsm("nearest part (τ → ∞)", mode="nearest-part"),
    Ablation("handcrafted-dpsm (chosen)", {}, preset="handcrafted-dpsm"),
    Ablation("handcrafted-dpsm · Sinkhorn ε 0.01", {"emd_solver": "sinkhorn", "epsilon": 0.01, "prune_keep": 0.0},
             preset="handcrafted-dpsm"),
    Ablation("handcrafted-dpsm · Sinkhorn ε auto", {"emd_solver": "sinkhorn", "epsilon": "auto", "prune_keep": 0.0},
             preset="handcrafted-dpsm"),
)

#: Ablation suites by name (``protoseg ablate --suite``).
#: SAM's prompt grid (8 / 16 / 32 points per side, the paper's thresholds) as DPSM's proposals, on the
#: ``handcrafted-dpsm`` preset; needs SAM weights (``run_ablations(sam=...)``, ``protoseg ablate --sam``).
SAM_GRID_ABLATIONS: tuple[Ablation, ...] = tuple(
    Ablation(f"SAM grid {side}x{side}", {"proposals": "sam", "sam_options": {"points_per_side": side}},
             preset="handcrafted-dpsm")
    for side in (8, 16, 32))

SUITES: dict[str, tuple[Ablation, ...]] = {"freeda": ABLATIONS, "dpsm": DPSM_ABLATIONS, "sam-grid": SAM_GRID_ABLATIONS}


def select_rows(suite: str, rows: str | None = None) -> tuple[Ablation, ...]:
    """The rows of suite ``suite`` (a key of :data:`SUITES`) that ``rows`` names: 1-based row numbers separated
    by commas (``"2,16"``); ``None`` or empty: every row.

    Raises:
        ProtosegError: an unknown suite or a row number outside the suite.
    """
    if suite not in SUITES:
        raise ProtosegError(f"--suite must be one of {', '.join(SUITES)}; got {suite!r}")
    chosen = SUITES[suite]
    if not rows:
        return chosen
    picked = [i.strip() for i in rows.split(",")]
    if not all(i.isdigit() and 1 <= int(i) <= len(chosen) for i in picked):
        raise ProtosegError(f"--rows takes numbers 1..{len(chosen)} separated by commas; got {rows!r}")
    return tuple(chosen[int(i) - 1] for i in picked)


class ObjectProposalPredictor(SegmenterPredictor):
    """A segmenter fed the world's object masks as proposals (``objects/<stem>.png`` beside ``masks/``):
    the oracle of a perfect class-agnostic proposal generator, for DPSM presets with ``proposals="given"``."""

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "proposals": "objects"}

    def __call__(self, index: int, image: np.ndarray | None) -> np.ndarray:
        assert image is not None
        label = self.dataset.samples[index].label
        path = label.parent.parent / "objects" / label.name
        if not path.is_file():
            raise ProtosegError(f"oracle proposals need {path} (object masks, written by `protoseg partsworld`); "
                                "regenerate the world")
        result = self._segmenter().segment(image, self.dataset.query_classes, proposals=read_objects(path))
        self.diagnostics["images"] = self.diagnostics.get("images", 0) + 1
        for key, count in result.diagnostics.items():
            self.diagnostics[key] = self.diagnostics.get(key, 0) + count
        return result.labels


def build_parts_world_bank(
    data_root: str | Path | None = None,
    preset_name: str = "handcrafted",
    progress: Progress | None = None,
    world: str = "parts",
) -> Any:
    """Support bank from a world's ``train`` split (both generated on first use).

    The bank is cached in protoseg's cache folder (``$PROTOSEG_CACHE/support-banks``), named by the preset
    and the contents of the train split (file sizes and modification times), and built by the examples
    builder; later runs on the same split load it instead of rebuilding. A ``data_root`` the user gave is
    only read.
    """
    root = Path(data_root).expanduser() if data_root else default_parts_world_root(world)
    spec = WORLD_SPLITS[world]["train"]
    train = ensure_parts_world_split(root, "train", int(spec["count"]), int(spec["seed"]), world,
                                     str(spec["combos"]), renew=not data_root)
    cached = support_bank_folder(preset_name, train)
    if cached.is_dir():
        return PrototypeBank.load(cached)
    preset = dataset_preset(WORLD_DATASETS[world]).apply(preset_name)
    try:
        build_bank(examples_preset(preset), ExamplesSource(train), cached, progress=progress)
    except ProtosegError:  # another process built it first
        if not cached.is_dir():
            raise
    return PrototypeBank.load(cached)


def run_ablations(
    data_root: str | Path | None = None,
    ablations: tuple[Ablation, ...] = ABLATIONS,
    limit: int | None = None,
    workers: int = 2,
    bank: Any = None,
    dataset: SegDataset | None = None,
    progress: Progress | None = None,
    world: str = "parts",
    split: str = "test",
    proposals: str = "superpixels",
    run_root: str | Path | None = None,
    sam: str | None = None,
) -> list[tuple[Ablation, EvalResult]]:
    """Evaluate every ablation row on a world's ``split``; returns ``(row, result)`` pairs.

    ``bank`` / ``dataset`` replace the world's support bank / split (e.g. smaller ones in tests).
    ``proposals="oracle"`` feeds DPSM rows the world's object masks (their option ``proposals`` becomes
    ``"given"``); other rows are unaffected. ``run_root``: keep each row's resumable run folder there
    (a rerun skips finished shards). ``progress(stage, done, total)`` reports bank building
    (``stage="bank"``) and each row (its name). Each result's ``config`` records the row, the proposal
    source and ``seconds_per_image`` (wall time over the images this call segmented; ``None`` when a
    resumed run segmented none). ``sam``: SAM weights (hub id or folder) for rows with SAM proposals.
    """
    if proposals not in PROPOSAL_SOURCES:
        raise ProtosegError(f"proposals must be one of {', '.join(PROPOSAL_SOURCES)}; got {proposals!r}")
    if sam is None and any(row.options.get("proposals") == "sam" for row in ablations):
        raise ProtosegError("rows with SAM proposals (the sam-grid suite) need SAM weights: --sam HUB_ID_OR_FOLDER")
    if bank is None:
        bank_progress = (lambda stage, d, t: stage == "shards" and progress("bank", d, t)) if progress else None
        bank = build_parts_world_bank(data_root, progress=bank_progress, world=world)
    dataset = (dataset or open_parts_world(data_root, split, world)).limit(limit)
    protocol = dataset_preset(WORLD_DATASETS[world])
    models = None
    results = []
    for row in ablations:
        options = dict(row.options)
        preset = protocol.apply(row.preset, matcher_options=options)
        if options.get("proposals") == "sam":
            preset = replace(preset, sam=sam)
        oracle = proposals == "oracle" and preset.matcher == "dpsm" and options.get("proposals") != "sam"
        if oracle:
            preset = preset.with_options(proposals="given")
        if models is None or (preset.sam is not None and models.names.get("sam") is None):
            models = ModelSet.for_preset(preset)
        segmenter = Segmenter(preset, bank, models)
        description = {"preset": row.preset, "options": options, "proposals": "objects" if oracle else "own"}
        predictor = (ObjectProposalPredictor if oracle else SegmenterPredictor)(segmenter, dataset, description)
        cb = (lambda stage, d, t, name=row.name: progress(name, d, t)) if progress else None
        run_dir = None
        if run_root is not None:
            run_dir = Path(run_root) / f"{dataset.name}-{run_id(dataset, predictor, 10)}"
        start = time.perf_counter()
        result = evaluate(dataset, predictor, run_dir=run_dir, shard_size=10, workers=workers, progress=cb,
                          config={"ablation": row.name, "proposals": proposals})
        images = predictor.diagnostics.get("images", 0)
        result.config["seconds_per_image"] = (time.perf_counter() - start) / images if images else None
        results.append((row, result))
    return results


def ablation_markdown(results: list[Any]) -> str:
    """The FreeDA ablation table in Markdown (mIoU, mAcc, aAcc in percent)."""
    lines = [
        "| variant | aggregation | superpixels | pooling | mIoU | mAcc | aAcc |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for row, res in results:
        o, s = row.options, res.scores
        agg = o.get("aggregation", "mean") + (
            f" (k={o['clusters']})" if o.get("aggregation") == "kmeans" else ""
        )
        lines.append(
            f"| {row.name} | {agg} | {'yes' if o.get('use_superpixels', True) else 'no'} | "
            f"{o.get('pooling', 'area') if o.get('use_superpixels', True) else '–'} | "
            f"{s.miou * 100:.2f} | {s.macc * 100:.2f} | {s.aacc * 100:.2f} |"
        )
    return "\n".join(lines) + "\n"


def _settings(row: Ablation) -> str:
    """The DPSM settings a row runs with, in words (``mode · solver · ε · τ · supply``)."""
    preset = get_preset(row.preset)
    if preset.matcher != "dpsm":
        return f"{preset.matcher} ({row.preset})"
    o = preset.with_options(**row.options).matcher_options
    if o.mode == "image-to-image":
        return "whole-prototype cosine"
    if o.mode == "nearest-part":
        return "nearest part vote"
    solver = "exact" if o.emd_solver == "exact" else f"Sinkhorn ε {o.epsilon}"
    if o.mode != "subregion-ot":
        return solver
    return f"{solver} · τ {o.capacity:g} · per {o.supply}"


def dpsm_ablation_markdown(results: list[tuple[Ablation, EvalResult]], title: str | None = None) -> str:
    """A DPSM ablation table in Markdown: settings, mIoU, per-class IoU (percent) and seconds per image."""
    classes = list(results[0][1].classes)
    lines = [f"**{title}**", ""] if title else []
    lines += ["| row | settings | mIoU | " + " | ".join(classes) + " | s / image |",
              "|---|---|---:|" + "---:|" * len(classes) + "---:|"]
    for row, res in results:
        iou = " | ".join("–" if np.isnan(x) else f"{100 * x:.1f}" for x in res.scores.iou)
        sec = res.config.get("seconds_per_image")
        lines.append(f"| {row.name} | {_settings(row)} | {100 * res.scores.miou:.1f} | {iou} | "
                     f"{'–' if sec is None else f'{sec:.2f}'} |")
    return "\n".join(lines) + "\n"


def suite_title(suite: str, world: str, split: str, results: list[tuple[Ablation, EvalResult]],
                proposals: str) -> str:
    """The title of a suite's table: suite, world, split, number of images and proposal source."""
    images = results[0][1].images
    return f"{suite} ablations on the {world} world ({split}, {images} images, proposals: {proposals})"


def suite_markdown(suite: str, results: list[tuple[Ablation, EvalResult]], title: str) -> str:
    """A suite's results as Markdown: :func:`ablation_markdown` for ``freeda``, else
    :func:`dpsm_ablation_markdown` under ``title``."""
    return ablation_markdown(results) if suite == "freeda" else dpsm_ablation_markdown(results, title)
