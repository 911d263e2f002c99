"""FreeDA's ablations on the parts-world benchmark.

A support bank is built once from the parts-world ``train`` split (labelled examples, hand-crafted
features, area pooling); every row then evaluates the held-out ``test`` split with preset
``handcrafted`` plus that row's matcher options, under the full protocol (resize, sliding windows,
dataset-wide mIoU). Rows vary one factor at a time against the first row:

- prototype aggregation: mean of the class's prototypes vs k-means centroids (max over centroids);
- superpixels: region-pooled scores vs the dense patch map;
- region pooling: area-weighted vs FreeDA's point sampling (bilinear, ``align_corners=True``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protoseg.datasets import SegDataset, dataset_preset, open_parts_world
from protoseg.datasets.examples import PARTS_WORLD_TRAIN, default_parts_world_root, ensure_parts_world_split
from protoseg.errors import ProtosegError
from protoseg.evaluate import EvalResult, SegmenterPredictor, evaluate
from protoseg.runs import Progress


@dataclass(frozen=True)
class Ablation:
    """One table row: a name and the matcher options it sets."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


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


def build_parts_world_bank(
    data_root: str | Path | None = None,
    preset_name: str = "handcrafted",
    progress: Progress | None = None,
) -> Any:
    """Support bank from the parts-world ``train`` split (both generated on first use).

    The bank is cached in protoseg's cache folder (``$PROTOSEG_CACHE/support-banks``), named by the preset
    and the contents of the train split (file sizes and modification times), and built by the examples
    builder; later runs on the same split load it instead of rebuilding. A ``data_root`` the user gave is
    only read.
    """
    from protoseg.bank import PrototypeBank
    from protoseg.offline import BuildSource, build_bank, examples_preset
    from protoseg.runs import files_digest

    root = Path(data_root).expanduser() if data_root else default_parts_world_root()
    train = ensure_parts_world_split(
        root, "train", int(PARTS_WORLD_TRAIN["count"]), int(PARTS_WORLD_TRAIN["seed"])
    )
    digest = files_digest(sorted(p for p in train.rglob("*") if p.is_file()))[:16]
    cached = default_parts_world_root().parent / "support-banks" / f"{preset_name}-{digest}"
    if cached.is_dir():
        return PrototypeBank.load(cached)
    preset = dataset_preset("parts-world").apply(preset_name)
    try:
        build_bank(examples_preset(preset), BuildSource(examples=train), cached, progress=progress)
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
) -> list[tuple[Ablation, EvalResult]]:
    """Evaluate every ablation row on the parts-world test split; returns ``(row, result)`` pairs.

    ``bank`` / ``dataset`` replace the parts-world support bank / test split (e.g. smaller ones in tests).
    ``progress(stage, done, total)`` reports bank building (``stage="bank"``) and each row (its name).
    """
    from protoseg.models import ModelSet
    from protoseg.segment import Segmenter

    if bank is None:
        bank = build_parts_world_bank(
            data_root, progress=(lambda stage, d, t: stage == "shards" and progress("bank", d, t)) if progress else None
        )
    dataset = (dataset or open_parts_world(data_root, "test")).limit(limit)
    protocol = dataset_preset("parts-world")
    models = None
    results = []
    for row in ablations:
        preset = protocol.apply("handcrafted", matcher_options=row.options)
        models = models or ModelSet(preset.features, preset.text, preset.sam)
        segmenter = Segmenter(preset, bank, models)
        predictor = SegmenterPredictor(segmenter, dataset, {"preset": "handcrafted", "options": row.options})
        cb = (lambda stage, d, t, name=row.name: progress(name, d, t)) if progress else None
        results.append(
            (row, evaluate(dataset, predictor, workers=workers, progress=cb, config={"ablation": row.name}))
        )
    return results


def ablation_markdown(results: list[tuple[Ablation, EvalResult]]) -> str:
    """The ablation table in Markdown (mIoU, mAcc, aAcc in percent)."""
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
