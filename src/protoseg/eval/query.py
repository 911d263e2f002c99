"""A dataset under an evaluation protocol and a class-name variant: the preset to run and the query to ask.

:func:`benchmark_query` is the one call. It combines

- the benchmark's method settings (:mod:`protoseg.eval.benchmarks`: superpixels, beta, K; the model
  preset when none is named),
- the protocol's test-time settings (:mod:`protoseg.eval.protocols`, as Preset fields through
  :meth:`~protoseg.eval.protocols.ProtocolSettings.preset_overrides`: resize, windows, background rule),
- the class names (:mod:`protoseg.datasets.variants`: one list of synonyms per class),

and returns a :class:`BenchmarkQuery`: the :class:`~protoseg.config.segment.Preset`, the classes to query
(background excluded, each with its synonyms), the background rule and the names queried as background, and
the map from segmentation labels back to the dataset's class indices.

Which names are queried as background: under the ``constant`` rule none (a threshold stands in); under
``probability`` the background class's names of the variant — the SCLIP lists' stuff names ("sky, wall,
tree…") or, under ``mmseg``, the word ``background`` itself. A bank that looks prototypes up by exact label
must then serve one of them (:meth:`protoseg.segment.Segmenter.query`).

Any protocol may be combined with any name variant; the defaults are the protocol's own (``mmseg`` for
``tcl``, the repository's lists for the SCLIP family). Datasets outside the protocol tables (``parts-world``,
``examples``) take the protocol's defaults and their own class names (``names="mmseg"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from protoseg.classes import ClassList, normalize_classes
from protoseg.config.segment import Preset
from protoseg.datasets import dataset_classes, has_background
from protoseg.datasets.mmseg import MMSEG_DATASETS
from protoseg.datasets.variants import class_names
from protoseg.errors import ProtosegError
from protoseg.eval.benchmarks import dataset_preset
from protoseg.eval.protocols import NAME_VARIANTS, ProtocolSettings, protocol_settings


@dataclass(frozen=True)
class BenchmarkQuery:
    """How to segment one dataset under one protocol and class-name variant.

    Attributes:
        dataset: protoseg dataset name.
        settings: the protocol's settings for this dataset.
        names: the class-name variant in use.
        preset_name: the model preset the :attr:`preset` was made from.
        preset: the preset to build the :class:`~protoseg.segment.Segmenter` with (the benchmark's method
            settings, then the protocol's, then the caller's overrides).
        classes: the classes to query, in the dataset's label order, background excluded; each with its
            synonyms.
        background: ``"none"`` (the dataset has no background class), else the preset's background rule.
        background_names: the names queried as background (``probability`` rule only; else empty).
        has_background: the dataset has a background class (:func:`protoseg.datasets.has_background`;
            labels shift by one).
    """

    dataset: str
    settings: ProtocolSettings
    names: str
    preset_name: str
    preset: Preset
    classes: ClassList
    background: Literal["none", "constant", "probability"]
    background_names: tuple[str, ...]
    has_background: bool

    def segment(self, segmenter: Any, image: np.ndarray, return_scores: bool = False) -> Any:
        """``segmenter.segment`` with this query (a :class:`~protoseg.segment.Segmentation`: labels index
        :attr:`classes`, -1 = background)."""
        background: bool | str = False if self.background == "none" else self.background
        extra = {"background_names": self.background_names} if self.background_names else {}
        return segmenter.segment(image, self.classes, background=background, return_scores=return_scores, **extra)

    def to_dataset(self, labels: np.ndarray) -> np.ndarray:
        """Segmentation labels (index into :attr:`classes`, -1 = background) -> the dataset's class indices
        (int64; background is index 0 where the dataset has one, and the classes follow it)."""
        labels = np.asarray(labels, dtype=np.int64)
        if self.has_background:
            return labels + 1
        if labels.size and labels.min() < 0:
            raise ProtosegError(f"{self.dataset} has no background class but the segmentation labelled background")
        return labels

    def predict(self, segmenter: Any, image: np.ndarray) -> np.ndarray:
        """The label map of ``image`` in the dataset's class indices."""
        return self.to_dataset(self.segment(segmenter, image).labels)

    def describe(self) -> dict[str, Any]:
        """JSON-ready identity of the query (protocol, names, rule, the lists themselves), for run records."""
        return {
            "protocol": self.settings.name,
            "family": self.settings.family,
            "protocol_source": self.settings.source,
            "names": self.names,
            "background": self.background,
            "classes": [list(names) for names in self.classes.synonyms],
            "background_names": list(self.background_names),
        }


def benchmark_query(dataset: str, protocol: str = "tcl", names: str | None = None, preset: str | None = None, *,
                    beta_source: str = "paper", data_root: str | Path | None = None,
                    **overrides: Any) -> BenchmarkQuery:
    """The preset and query for ``dataset`` under ``protocol`` with class-name variant ``names``.

    Args:
        dataset: a protoseg dataset name (:data:`protoseg.datasets.DATASET_NAMES`).
        protocol: a key of :data:`protoseg.eval.protocols.PROTOCOLS`.
        names: a class-name variant (:data:`~protoseg.eval.protocols.NAME_VARIANTS`); ``None``: the
            protocol's own for the benchmarks, ``mmseg`` (the dataset's own names) elsewhere.
        preset: model preset name; ``None``: the benchmark's default (``freeda-l``, ``handcrafted`` for the
            parts world).
        beta_source: ``"paper"`` or ``"code"`` (:meth:`~protoseg.eval.benchmarks.DatasetPreset.apply`).
        data_root: the dataset's folder; needed only for ``examples`` (its class list is on disk).
        overrides: Preset fields; they win over the benchmark's and the protocol's settings.

    With ``protocol="tcl"`` and the default names this is exactly today's default evaluation: the same
    preset, the dataset's query classes, a constant background where the dataset has one.

    Raises:
        ProtosegError: unknown dataset, protocol, variant or preset; a variant the dataset has no lists for.
    """
    own = dataset_classes(dataset, data_root)  # also checks the dataset name
    with_background = has_background(own)
    settings = protocol_settings(protocol, dataset, has_background=with_background)
    benchmark = dataset in MMSEG_DATASETS
    variant = names if names is not None else (settings.names if benchmark else "mmseg")
    if variant not in NAME_VARIANTS:
        raise ProtosegError(f"unknown class-name variant {variant!r}; choose one of: {', '.join(NAME_VARIANTS)}")
    if benchmark:
        lists = class_names(dataset, variant)
    elif variant == "mmseg":
        lists = [[name] for name in own]
    else:
        raise ProtosegError(f"class-name variant {variant!r} has lists for the MMSeg benchmarks only; dataset "
                            f"{dataset!r} uses its own class names (names 'mmseg')")
    method = dataset_preset(dataset)
    preset_name = preset or method.model_preset
    built = method.apply(preset_name, beta_source=beta_source, **{**settings.preset_overrides(), **overrides})
    background = built.background_rule if with_background else "none"
    queried = lists[1:] if with_background else lists
    return BenchmarkQuery(
        dataset=dataset, settings=settings, names=variant, preset_name=preset_name, preset=built,
        classes=normalize_classes(queried), background=background,
        background_names=tuple(lists[0]) if background == "probability" else (),
        has_background=with_background,
    )
