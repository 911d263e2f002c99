"""Class-name variants: the strings a method encodes for each class of a benchmark.

``mmseg`` (the default, FreeDA's) is the MMSegmentation ``CLASSES`` list (:mod:`protoseg.datasets.names`),
one name per class. The SCLIP protocol family renames classes and gives some several synonyms (a class's
score is the max over its synonyms). Every list ships as package data in ``protoseg/data/names/<variant>/``;
the SCLIP family's are byte-identical to the repositories' ``configs/cls_<dataset>.txt`` (sources in that
folder's README).

A list's index is the dataset's label index: for benchmarks with background, entry 0 is the background
class — ``["background"]`` under ``mmseg`` (never queried by FreeDA: a constant threshold stands in), but
under the SCLIP variants of VOC and COCO-Object a list of stuff names that *is* queried.
"""

from __future__ import annotations

from dataclasses import dataclass

from protoseg.datasets.mmseg import MMSEG_DATASETS
from protoseg.datasets.names import read_names
from protoseg.errors import ProtosegError


@dataclass(frozen=True)
class NameVariant:
    """One family of class lists.

    Attributes:
        separator: what separates synonyms on a line (the source repository's split string); ``None``: one
            name a line.
        source: repository @ commit : folder the files were copied from.
    """

    separator: str | None
    source: str


#: variant -> how its files are read.
VARIANTS: dict[str, NameVariant] = {
    "mmseg": NameVariant(None, "open-mmlab/mmsegmentation@v0.27.0:mmseg/datasets (CLASSES)"),
    "sclip": NameVariant(", ", "wangf3014/SCLIP@b56bd30:configs (= sinahmr/NACLIP@0cac3a6:configs)"),
    "proxyclip": NameVariant("; ", "mc-lan/ProxyCLIP@e7b767f:configs"),
    "corrclip": NameVariant("; ", "zdk258/CorrCLIP@103bc18:CorrCLIPv1/configs"),
}


def _mmseg_classes(dataset: str) -> tuple[str, ...]:
    try:
        return MMSEG_DATASETS[dataset].classes
    except KeyError:
        raise ProtosegError(
            f"no class-name variants for dataset {dataset!r}; choose one of: {', '.join(MMSEG_DATASETS)}"
        ) from None


def class_names(dataset: str, variant: str = "mmseg") -> list[list[str]]:
    """The names of every class of ``dataset`` under ``variant``: one list of synonyms per class, in label
    order (``mmseg``: one name each). The list has as many entries as the dataset has classes.

    Raises:
        ProtosegError: unknown variant or dataset.
    """
    if variant not in VARIANTS:
        raise ProtosegError(f"unknown class-name variant {variant!r}; choose one of: {', '.join(VARIANTS)}")
    mmseg = _mmseg_classes(dataset)
    if variant == "mmseg":
        return [[name] for name in mmseg]
    lists = read_names(variant, dataset, VARIANTS[variant].separator)
    if len(lists) != len(mmseg):  # a damaged install; the shipped files are checked by the tests
        raise ProtosegError(
            f"class-name list {variant}/{dataset}.txt has {len(lists)} classes, the dataset {len(mmseg)}"
        )
    return [list(synonyms) for synonyms in lists]


def query_names(dataset: str, variant: str = "mmseg") -> tuple[list[str], list[int]]:
    """The flat list of strings to encode and, for each, the index of its class (SCLIP's ``get_cls_idx``):
    a class's score is the max over its synonyms' scores."""
    names: list[str] = []
    index: list[int] = []
    for i, synonyms in enumerate(class_names(dataset, variant)):
        names += synonyms
        index += [i] * len(synonyms)
    return names, index
