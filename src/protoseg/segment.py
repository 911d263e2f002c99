"""The online stage: an image and a class list in, a label map out.

Protocol (MMSegmentation, as both papers evaluate): keep-ratio resize to short side 448, sliding
windows 448 / stride 224, per-window matcher scores (+ a constant background channel when requested),
overlap averaging, bilinear resize back to the original size, argmax.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from protoseg.bank import PrototypeBank
from protoseg.classes import validate_classes
from protoseg.config.segment import Preset, get_preset
from protoseg.errors import ProtosegError
from protoseg.match import Matcher, build_matcher
from protoseg.models import ModelSet
from protoseg.windows import rescale_size, resize_image, slide

#: Label value for pixels assigned to background (no class scored above the threshold).
BACKGROUND = -1


@dataclass
class Segmentation:
    """Result of :meth:`Segmenter.segment`.

    Attributes:
        labels: int64 ``[H, W]``: index into ``classes``, or :data:`BACKGROUND` (-1).
        classes: the class list, in query order.
        scores: float32 ``[C, H, W]`` class scores at the original size (background channel excluded),
            or ``None`` unless ``return_scores=True``.
        diagnostics: the matcher's counts for this image (its ``stats``, e.g. DPSM's
            ``transport_problems`` / ``transport_not_converged``); empty for matchers that keep none.
    """

    labels: np.ndarray
    classes: list[str]
    scores: torch.Tensor | None = None
    diagnostics: dict[str, int] = field(default_factory=dict)


class Segmenter:
    """Segments images with a preset's models and matcher against a prototype bank.

    Example::

        seg = Segmenter.from_preset("freeda-b", bank="banks/coco-freeda-b")
        result = seg.segment(load_image("photo.jpg"), ["road", "car", "tree", "sky"])
    """

    def __init__(self, preset: Preset, bank: PrototypeBank, models: ModelSet | None = None):
        self.preset = preset
        self.bank = bank
        self.models = models or ModelSet(preset.features, preset.text, preset.sam)
        features = self.models.features
        text = self.models.names["clip"]
        uses_keys = bank.keys is not None and text is not None
        bank.check_compatible(features.encoder_id, features.dim, text if uses_keys else None)
        self.matcher: Matcher = build_matcher(preset.matcher, bank, self.models, preset.matcher_options,
                                              superpixels=preset.superpixels)
        self._prepared: tuple[str, ...] | None = None

    @classmethod
    def from_preset(cls, name: str, bank: str | Path | PrototypeBank, device: str | torch.device | None = None,
                    dtype: str | torch.dtype | None = None, **overrides: Any) -> Segmenter:
        """Build from a named preset (:data:`protoseg.config.segment.PRESETS`); ``overrides`` replace preset fields
        (``matcher_options`` entries are merged)."""
        preset = get_preset(name, **overrides)
        if not isinstance(bank, PrototypeBank):
            bank = PrototypeBank.load(bank)
        return cls(preset, bank, ModelSet(preset.features, preset.text, preset.sam, device=device, dtype=dtype))

    @property
    def device(self) -> torch.device:
        return self.models.device

    def prepare(self, classes: Sequence[str]) -> list[str]:
        """Validate ``classes`` and let the matcher set up for them (cached for repeated calls)."""
        names = validate_classes(classes)
        if self._prepared != tuple(names):
            self.matcher.prepare(names)
            self._prepared = tuple(names)
        return names

    def window_scores(self, image: np.ndarray, classes: Sequence[str], background: bool = False,
                      proposals: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
        """Scores after resizing, sliding and averaging, at the *resized* size.

        ``image``: uint8 ``[H, W, 3]`` -> ``[C (+1 background first), h, w]``. ``proposals``: bool
        ``[N, H, W]`` masks of the image for matchers that take them (DPSM ``proposals="given"``); they
        are resized like the image (nearest) and cropped with every window.
        """
        names = self.prepare(classes)
        size = rescale_size(*image.shape[:2], self.preset.scale)
        resized = resize_image(image, size).to(self.device)
        threshold = self.preset.background_threshold
        if proposals is not None:
            masks = torch.as_tensor(np.asarray(proposals)).bool()
            if masks.ndim != 3 or tuple(masks.shape[1:]) != tuple(image.shape[:2]):
                raise ProtosegError(f"proposals must be bool [N, H, W] masks of the {image.shape[1]}x"
                                    f"{image.shape[0]} image; got shape {tuple(masks.shape)}")
            masks = F.interpolate(masks[None].float(), size=tuple(resized.shape[-2:]), mode="nearest")[0]
            resized = torch.cat([resized, masks.to(resized)])  # cropped together with the image

        def score(crop: torch.Tensor) -> torch.Tensor:
            s = self.matcher(crop) if proposals is None else self.matcher(crop[:3], proposals=crop[3:] > 0.5)
            if background:
                s = torch.cat([torch.full_like(s[:1], threshold), s])
            return s

        return slide(resized, score, len(names) + int(background), self.preset.crop, self.preset.stride)

    @torch.no_grad()
    def segment(self, image: np.ndarray, classes: Sequence[str], background: bool = False,
                return_scores: bool = False, proposals: np.ndarray | torch.Tensor | None = None) -> Segmentation:
        """Label every pixel of ``image`` (uint8 ``[H, W, 3]`` RGB) with one of ``classes``.

        With ``background=True`` a pixel whose best class score is not above the preset's
        ``background_threshold`` gets :data:`BACKGROUND`. ``proposals``: bool ``[N, H, W]`` region
        proposals of this image, for a DPSM preset with ``proposals="given"`` (e.g. an external mask
        generator's masks, or a test world's object masks).
        """
        names = self.prepare(classes)
        reset_stats = getattr(self.matcher, "reset_stats", None)
        if reset_stats is not None:
            reset_stats()
        scores = self.window_scores(image, names, background, proposals)
        H, W = image.shape[:2]
        scores = F.interpolate(scores[None], size=(H, W), mode="bilinear", align_corners=False)[0]
        labels = scores.argmax(0).cpu().numpy().astype(np.int64) - int(background)
        kept = scores[int(background):].float().cpu() if return_scores else None
        diagnostics = dict(getattr(self.matcher, "stats", None) or {})
        return Segmentation(labels=labels, classes=names, scores=kept, diagnostics=diagnostics)
