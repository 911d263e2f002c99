"""A :class:`~protoseg.segment.Segmenter` as an evaluation predictor, locally or rebuilt in a Ray worker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from protoseg.bank import PrototypeBank
from protoseg.config.segment import Preset
from protoseg.datasets.base import SegDataset
from protoseg.errors import ProtosegError
from protoseg.eval.labelmaps import save_label_png
from protoseg.models import ModelSet
from protoseg.segment import Segmenter

#: Segmenters rebuilt from recipes in this process (a Ray worker keeps its models between shards).
_SEGMENTERS: dict[str, Any] = {}


class SegmenterPredictor:
    """A :class:`~protoseg.segment.Segmenter` queried with ``dataset.query_classes``.

    With ``save_dir`` every label map is also written as ``save_dir/<stem>.png`` (the format
    :class:`~protoseg.eval.labelmaps.PredictionFolder` reads), so a run can be re-scored or compared later.
    ``diagnostics`` sums the segmentations' counts (e.g. transport problems that did not converge) over the
    images segmented by this predictor (``images``; a resumed run does not segment finished shards again).

    With a ``query`` (a :class:`~protoseg.eval.query.BenchmarkQuery`) the segmenter is asked the query's
    classes (with their synonyms) under its background rule, and the labels are mapped to the dataset's
    class indices (:meth:`~protoseg.eval.query.BenchmarkQuery.to_dataset`); without one, ``dataset.query_classes``
    with a constant background where the dataset has one. The query is part of :meth:`describe` (the run
    fingerprint).

    With a ``recipe`` (``{"preset": Preset.to_dict(), "bank": path, "device": ..., "dtype": ...}``) the
    predictor pickles without its models and rebuilds the segmenter where it lands (a Ray task); the query
    is plain data and travels with the predictor, so the worker asks the same query.
    """

    needs_image = True
    in_loader = False

    def __init__(
        self,
        segmenter: Any,
        dataset: SegDataset,
        description: dict[str, Any] | None = None,
        save_dir: str | Path | None = None,
        recipe: dict[str, Any] | None = None,
        query: Any = None,
    ):
        self.segmenter = segmenter
        self.query = query
        self.dataset = dataset
        self.description = description or {}
        self.save_dir = Path(save_dir) if save_dir is not None else None
        self.recipe = recipe
        self.diagnostics: dict[str, int] = {}

    def __getstate__(self) -> dict[str, Any]:
        if self.recipe is None:
            raise ProtosegError("this evaluation cannot run on Ray: its segmenter was built without a recipe "
                                "(SegmenterPredictor(..., recipe=...))")
        return {**self.__dict__, "segmenter": None}

    def _segmenter(self) -> Any:
        if self.segmenter is None:  # unpickled in a worker: build from the recipe, once per process
            key = json.dumps(self.recipe, sort_keys=True, default=str)
            if key not in _SEGMENTERS:
                r = self.recipe
                preset = Preset.from_dict(r["preset"])
                models = ModelSet.for_preset(preset, device=r.get("device"), dtype=r.get("dtype"))
                _SEGMENTERS[key] = Segmenter(preset, PrototypeBank.load(r["bank"]), models)
            self.segmenter = _SEGMENTERS[key]
        return self.segmenter

    def describe(self) -> dict[str, Any]:
        own = {"query": self.query.describe()} if self.query is not None else {}
        return {"kind": "segmenter", **self.description, **own}

    def inputs(self) -> dict[str, Any]:
        bank = getattr(self.segmenter, "bank", None)
        return {"bank": bank.fingerprint() if bank is not None else None}

    def __call__(self, index: int, image: np.ndarray | None) -> np.ndarray:
        assert image is not None
        background = self.dataset.has_background
        if self.query is not None:
            result = self.query.segment(self._segmenter(), image)
        else:
            result = self._segmenter().segment(image, self.dataset.query_classes, background=background)
        self.diagnostics["images"] = self.diagnostics.get("images", 0) + 1
        for key, count in getattr(result, "diagnostics", {}).items():
            self.diagnostics[key] = self.diagnostics.get(key, 0) + count
        if self.query is not None:
            labels = self.query.to_dataset(result.labels)
        else:
            labels = result.labels + 1 if background else result.labels  # BACKGROUND (-1) -> 0, class i -> i + 1
        if self.save_dir is not None:
            save_label_png(labels, self.save_dir / f"{self.dataset.samples[index].stem}.png", self.dataset.classes)
        return labels

