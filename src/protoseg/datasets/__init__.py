"""Evaluation datasets: the eight MMSegmentation benchmarks, the examples layout and the procedural worlds.

``open_dataset(name, data_root)`` is the one entry point; ``dataset_classes(name)`` gives the scored
class list without touching the disk; :func:`has_background` is the one rule for a background class.
"""

from __future__ import annotations

from pathlib import Path

from protoseg.datasets.base import BACKGROUND, Sample, SegDataset, has_background
from protoseg.datasets.examples import open_examples, open_parts_world
from protoseg.datasets.mmseg import MMSEG_DATASETS, open_mmseg
from protoseg.errors import ProtosegError
from protoseg.worlds.canvas import PARTS_WORLD_CLASSES

#: All dataset names ``open_dataset`` accepts.
DATASET_NAMES: tuple[str, ...] = (*MMSEG_DATASETS, "parts-world", "recombined-world", "examples")

__all__ = [
    "BACKGROUND",
    "SegDataset",
    "Sample",
    "open_dataset",
    "dataset_classes",
    "DATASET_NAMES",
    "has_background",
    "open_examples",
    "open_parts_world",
]


def _check_name(name: str) -> None:
    if name not in DATASET_NAMES:
        raise ProtosegError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASET_NAMES)}")


def open_dataset(name: str, data_root: str | Path | None = None) -> SegDataset:
    """Open dataset ``name``. ``data_root`` is required except for the procedural worlds ``parts-world``
    and ``recombined-world`` (their test split, generated into a cache folder when omitted)."""
    _check_name(name)
    if name == "parts-world":
        return open_parts_world(data_root)
    if name == "recombined-world":
        return open_parts_world(data_root, world="recombined")
    if data_root is None:
        raise ProtosegError(f"--data-root is required for {name}")
    if name == "examples":
        return open_examples(data_root)
    return open_mmseg(name, data_root)


def dataset_classes(name: str, data_root: str | Path | None = None) -> tuple[str, ...]:
    """The scored class list of ``name`` (index = label value); no disk access for the MMSeg benchmarks and
    the procedural worlds."""
    _check_name(name)
    if name in MMSEG_DATASETS:
        return MMSEG_DATASETS[name].classes
    if name in ("parts-world", "recombined-world"):
        return tuple(PARTS_WORLD_CLASSES)
    return open_dataset(name, data_root).classes
