"""Class-name lists of the eight benchmarks, read from package data (``protoseg/data/names/<variant>/``).

``mmseg/<dataset>.txt`` holds the ``CLASSES`` tuple of MMSegmentation 0.27.0, one name a line, byte-identical:
the exact strings FreeDA encodes (e.g. ADE20K's ``'bed '`` with a trailing space). Lists whose first entry is
``'background'`` belong to benchmarks with a background class (:func:`protoseg.datasets.base.has_background`).
The other folders hold the SCLIP family's lists, synonyms of a class on one line
(:mod:`protoseg.datasets.variants`; sources in the folder's README).
"""

from __future__ import annotations

import functools
from importlib import resources

from protoseg.errors import ProtosegError


@functools.cache
def read_names(variant: str, dataset: str, separator: str | None = None) -> tuple[tuple[str, ...], ...]:
    """The lines of ``data/names/<variant>/<dataset>.txt``, each split on ``separator`` (``None``: one name a
    line), exactly as stored: nothing stripped; a final newline ends the last line, it starts no class.

    Raises:
        ProtosegError: no such list.
    """
    path = resources.files("protoseg") / "data" / "names" / variant / f"{dataset}.txt"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProtosegError(f"class-name variant {variant!r} has no list for dataset {dataset!r}") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return tuple((line,) if separator is None else tuple(line.split(separator)) for line in lines)


def mmseg_names(dataset: str) -> tuple[str, ...]:
    """MMSegmentation's class list of ``dataset`` (one name per class, label order)."""
    return tuple(line[0] for line in read_names("mmseg", dataset))


#: ``PascalVOCDataset``: background + 20 classes.
VOC_CLASSES: tuple[str, ...] = mmseg_names("voc")
#: ``PascalContextDataset``: background + 59 classes.
CONTEXT60_CLASSES: tuple[str, ...] = mmseg_names("context60")
#: ``COCOStuffDataset``: 171 classes (80 things, then 91 stuff).
COCO_STUFF_CLASSES: tuple[str, ...] = mmseg_names("coco-stuff")
#: ``CityscapesDataset``: 19 classes.
CITYSCAPES_CLASSES: tuple[str, ...] = mmseg_names("cityscapes")
#: ``ADE20KDataset``: 150 classes.
ADE20K_CLASSES: tuple[str, ...] = mmseg_names("ade20k")
#: VOC without background (``reduce_zero_label``).
VOC20_CLASSES: tuple[str, ...] = mmseg_names("voc20")
#: ``PascalContextDataset59``: Context without background.
CONTEXT59_CLASSES: tuple[str, ...] = mmseg_names("context59")
#: COCO-Object: background + COCO-Stuff's 80 thing classes.
COCO_OBJECT_CLASSES: tuple[str, ...] = mmseg_names("coco-object")
