"""Thin adapters over Hugging Face models, each loadable by hub id or local folder, with device and dtype.

``ModelSet`` loads what a preset needs, lazily, so a matcher that never touches CLIP never loads it.
"""

from __future__ import annotations

from typing import Any

import torch

from protoseg.models.base import DenseFeatureExtractor, resolve_device, resolve_dtype
from protoseg.models.clip import ClipModel
from protoseg.models.dinov2 import Dinov2Features
from protoseg.models.handcrafted import HANDCRAFTED_ID, HandcraftedFeatures
from protoseg.models.hub import resolve_weights
from protoseg.models.sam import SamPredictor

__all__ = ["DenseFeatureExtractor", "ModelSet", "load_features", "resolve_device", "resolve_dtype"]


def load_features(name: str, device: str | torch.device | None = None,
                  dtype: str | torch.dtype | None = None) -> DenseFeatureExtractor:
    """Dense feature backend by name: ``"handcrafted"`` or a DINOv2 hub id / local folder."""
    if name in ("handcrafted", HANDCRAFTED_ID):
        return HandcraftedFeatures(device=device)
    return Dinov2Features(name, device=device, dtype=dtype)


class ModelSet:
    """The models of one preset, loaded on first use and shared by matchers.

    Attributes (lazy): ``features`` (:class:`DenseFeatureExtractor`), ``clip``
    (:class:`~protoseg.models.clip.ClipModel`: text keys, class embeddings and the global image term; or
    ``None``), ``sam`` (:class:`~protoseg.models.sam.SamPredictor` or ``None``). A preset's ``text`` field
    names the CLIP model.
    """

    def __init__(self, features: str, clip: str | None = None, sam: str | None = None,
                 device: str | torch.device | None = None, dtype: str | torch.dtype | None = None):
        self.names = {"features": resolve_weights(features, "features"), "clip": resolve_weights(clip, "text"),
                      "sam": sam}
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self._loaded: dict[str, Any] = {}

    @classmethod
    def for_preset(cls, preset: Any, device: str | torch.device | None = None,
                   dtype: str | torch.dtype | None = None) -> ModelSet:
        """The models a :class:`protoseg.config.segment.Preset` names (features, text, SAM), on ``device``."""
        return cls(preset.features, preset.text, preset.sam, device=device, dtype=dtype)

    def _get(self, role: str) -> Any:
        if role not in self._loaded:
            name = self.names[role]
            if name is None:
                self._loaded[role] = None
            elif role == "features":
                self._loaded[role] = load_features(name, self.device, self.dtype)
            elif role == "clip":
                self._loaded[role] = ClipModel(name, device=self.device, dtype=self.dtype)
            elif role == "sam":
                self._loaded[role] = SamPredictor(name, device=self.device, dtype=self.dtype)
        return self._loaded[role]

    @property
    def features(self) -> DenseFeatureExtractor:
        return self._get("features")

    @property
    def clip(self) -> Any:
        return self._get("clip")

    @property
    def sam(self) -> Any:
        return self._get("sam")
