"""The online stage: an image and a class list in, a label map out.

Protocol (MMSegmentation, as both papers evaluate): keep-ratio resize to short side 448, sliding
windows 448 / stride 224, per-window matcher scores (+ a constant background channel when requested),
overlap averaging, bilinear resize back to the original size, argmax.

Classes may have synonyms (``["person", "man", "woman"]``, :func:`protoseg.classes.normalize_classes`).
The matcher scores every *name*; names are averaged over windows and resized back as their own channels,
and only then is a class's score the max over its synonyms' — SCLIP's order (scores per query name through
``forward_slide``, the max per class in ``postprocess_result``), which the probability background rule
needs, since its softmax runs over names before the max.

Background rules (``Segmenter.segment(..., background=...)``, numbers from the preset):

- ``"constant"`` (FreeDA): a channel of constant score ``background_threshold`` is placed before the class
  scores in every window; a pixel whose best class score is not above it is background.
- ``"probability"`` (SCLIP family; wangf3014/SCLIP@b56bd30 ``clip_segmentor.py``, ``postprocess_result``,
  identical in NACLIP, ProxyCLIP and CorrCLIP except for the area rule): background is queried as a class
  of its own names (class 0); at the original size the scores of *all* queried names, background's first,
  are multiplied by ``logit_scale`` and softmaxed over names; a class's probability is the max over its
  names; with ``area_threshold``, a class whose argmax area is not above ``area_threshold`` × the area of
  all non-background classes has its probabilities zeroed; the label is the argmax, and background where
  the best probability (background's included) is below ``background_threshold``. Ties go to the lower
  index, background first (SCLIP's ``argmax``) — SCLIP's COCO-Object lists name ``bed`` both as a
  background synonym and as a class, and the bed class can then never win; protoseg keeps that.

The rules apply to whatever the matcher returns. SCLIP's numbers were tuned on CLIP patch-text cosines;
the FreeDA matcher returns ``S = beta * sigmoid(max cos(region, prototypes)) + (1 - beta) * cos(CLIP image,
text)`` (:mod:`protoseg.match.freeda`), whose spread is different (the local term lies in (0.27, 0.73)), so
``logit_scale`` × ``S`` is a differently peaked softmax and SCLIP's thresholds carry over only as settings
of the same rule, not as tuned values.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from protoseg.bank import PrototypeBank
from protoseg.bank_preset import check_preset_fits, preset_for_bank
from protoseg.bank_source import open_bank
from protoseg.classes import ClassList, ClassSpec, normalize_background, normalize_classes
from protoseg.config.segment import Preset, get_preset
from protoseg.errors import ProtosegError
from protoseg.images import ImageInput, as_rgb_array
from protoseg.match import Matcher, build_matcher
from protoseg.models import ModelSet
from protoseg.offline.ondemand import generate_missing, missing_classes
from protoseg.pipeline import WindowPipeline, default_workers, prepare_image
from protoseg.runs import Progress
from protoseg.windows import slide, slide_batches

#: Label value for pixels assigned to background (no class scored above the threshold).
BACKGROUND = -1

#: Background rules of :meth:`Segmenter.segment` (``"none"``: every pixel gets a class).
BACKGROUND_RULES = ("none", "constant", "probability")


@dataclass(frozen=True)
class Query:
    """A prepared query: what the matcher scores and how its channels become classes.

    Attributes:
        classes: the classes as given (their first names label the output).
        served: the classes with only the names the matcher can serve (:meth:`ClassList.keep`).
        background: names queried as background (the probability rule), served ones only; may be empty.
        names: the distinct strings the matcher scores, in first-appearance order.
        columns: for each entry of ``background + served.names``, its channel in ``names``.
    """

    classes: ClassList
    served: ClassList
    background: tuple[str, ...]
    names: tuple[str, ...]
    columns: tuple[int, ...]

    @classmethod
    def build(cls, classes: ClassList, served: ClassList, background: tuple[str, ...]) -> Query:
        names: dict[str, int] = {}
        columns = tuple(names.setdefault(name, len(names)) for name in (*background, *served.names))
        return cls(classes, served, background, tuple(names), columns)

    @property
    def direct(self) -> bool:
        """The matcher's channels are the classes' scores as they stand (one name per class, no background
        names): no reduction."""
        return not self.background and self.served.plain

    def entries(self, scores: torch.Tensor) -> torch.Tensor:
        """Per-name channels ``[len(names), ...]`` -> one channel per entry of ``background + served.names``
        (a name that is both a background name and a class name is repeated, as SCLIP queries it twice)."""
        if self.columns == tuple(range(len(self.names))):
            return scores
        return scores[torch.tensor(self.columns, device=scores.device)]


@dataclass
class Segmentation:
    """Result of :meth:`Segmenter.segment`.

    Attributes:
        labels: int64 ``[H, W]``: index into ``classes``, or :data:`BACKGROUND` (-1).
        classes: the class list, in query order, one name per class (the first of its synonyms).
        scores: float32 ``[C, H, W]`` class scores at the original size — the max over each class's
            names; class probabilities (after the area rule) with the probability background rule;
            background excluded — or ``None`` unless ``return_scores=True``.
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

        seg = Segmenter.from_pretrained("freeda-l")  # FreeDA's released bank, fetched once; or a folder, hf://…
        result = seg.segment("photo.jpg", ["road", "car", "tree", "sky"])
    """

    def __init__(self, preset: Preset, bank: PrototypeBank, models: ModelSet | None = None):
        self.preset = preset
        self.models = models or ModelSet.for_preset(preset)
        self._use_bank(bank)

    def _use_bank(self, bank: PrototypeBank) -> None:
        features = self.models.features
        text = self.models.names["clip"]
        uses_keys = bank.keys is not None and text is not None
        bank.check_compatible(features.encoder_id, features.dim, text if uses_keys else None)
        self.bank = bank
        self.matcher: Matcher = build_matcher(self.preset.matcher, bank, self.models, self.preset.matcher_options,
                                              superpixels=self.preset.superpixels)
        self._prepared: tuple[tuple[ClassList, tuple[str, ...]], Query] | None = None

    def ensure_classes(self, classes: Sequence[ClassSpec] | ClassList, *, diffusion: str | None = None,
                       llm: str | None = None, dtype: str | None = None, progress: Progress | None = None) -> list[str]:
        """Generate prototypes for the ``classes`` the bank cannot serve, with the bank's own build recipe,
        add them to the bank folder (atomically) and segment with the grown bank from now on; returns the
        class names generated — empty when the bank already serves every class (checked on the bank in
        memory; then nothing is done, so a second call never regenerates). This is protoseg's one way to
        grow a bank on demand (the CLI's ``--generate-missing`` and the demo's switch call it); see
        :mod:`protoseg.offline.ondemand`.

        The recipe's feature and text models are this segmenter's (``preset.features`` / ``preset.text``);
        ``diffusion`` and ``llm`` replace the recipe's diffusion model and DPSM LLM (e.g. local folders),
        ``dtype`` is the diffusion dtype, ``progress(stage, done, total)`` reports the work.

        Raises:
            ProtosegError: classes are missing and the bank is on the Hub or only in memory, records no usable
                recipe (built from labelled examples, imported), or the recipe's models cannot be loaded.
        """
        if not missing_classes(self.bank, classes):
            return []
        if self.bank.source is None:
            raise ProtosegError("this bank exists only in memory; save it to a folder and load it from there to "
                                "add generated classes")
        made = generate_missing(self.bank.source, classes, device=str(self.device), dtype=dtype,
                                diffusion=diffusion, features=self.preset.features, text=self.preset.text,
                                llm=llm, progress=progress)
        self._use_bank(PrototypeBank.load(self.bank.source))  # grown now, or in the folder since this bank loaded
        return made

    @classmethod
    def from_preset(cls, name: str, bank: str | Path | PrototypeBank, device: str | torch.device | None = None,
                    dtype: str | torch.dtype | None = None, **overrides: Any) -> Segmenter:
        """Build from a named preset (:data:`protoseg.config.segment.PRESETS`); ``overrides`` replace preset fields
        (``matcher_options`` entries are merged). ``bank``: a loaded bank, a bank folder, ``hf://owner/name``
        or a published bank's name (:func:`protoseg.bank_source.open_bank`)."""
        preset = get_preset(name, **overrides)
        bank = open_bank(bank)
        return cls(preset, bank, ModelSet.for_preset(preset, device=device, dtype=dtype))

    @classmethod
    def from_pretrained(cls, bank_or_name: str | Path | PrototypeBank, device: str | torch.device | None = None,
                        dtype: str | torch.dtype | None = None, **overrides: Any) -> Segmenter:
        """Build for a bank with the preset its manifest calls for (:func:`protoseg.bank_preset.preset_for_bank`:
        the preset its build recorded, else the first in ``PRESETS`` whose encoders and matcher fit it).

        ``bank_or_name``: a loaded bank, a bank folder, ``hf://owner/name[@revision]``, or a published bank's
        name such as ``"freeda-l"`` (downloaded into protoseg's cache on first use). ``overrides`` replace
        fields of that preset as in :meth:`from_preset` (e.g. ``features="/models/dinov2-large"``).

        Raises:
            ProtosegError: the bank cannot be read or fetched, no preset fits it, or ``overrides`` contradict
                it (another feature encoder, text encoder or matcher).
        """
        bank = open_bank(bank_or_name)
        preset = get_preset(preset_for_bank(bank.manifest), **overrides)
        check_preset_fits(preset, bank.manifest, bank.source or "in memory")
        return cls(preset, bank, ModelSet.for_preset(preset, device=device, dtype=dtype))

    def segment_many(self, images: Iterable[ImageInput], classes: Sequence[ClassSpec] | ClassList,
                     background: bool | str = False, return_scores: bool = False,
                     background_names: Sequence[str] = (),
                     proposals: Iterable[np.ndarray | torch.Tensor | None] | None = None, *,
                     workers: int | None = None, batch_size: int | None = None,
                     prefetch: int = 4) -> Iterator[Segmentation]:
        """:meth:`segment` for each of ``images`` (any iterable of what :meth:`segment` takes, read as needed on a
        background thread): yields one :class:`Segmentation` per image, in order, each the one :meth:`segment`
        gives that image with the same options. ``proposals``: one item (bool ``[N, H, W]`` masks, or
        ``None``) per image.

        The images go through :class:`protoseg.pipeline.WindowPipeline`: ``prefetch`` images read and resized
        ahead, windows of several images ``batch_size`` at a time per model forward (default: the
        matcher's), the region work in ``workers`` processes (default: the cores this process may use;
        0: in this thread) while the models run.

        Raises:
            ProtosegError: ``images`` is one image rather than an iterable of them, an image is not one
                :meth:`segment` takes, or ``proposals`` has another length.
        """
        if isinstance(images, str | Path | np.ndarray | Image.Image):
            raise ProtosegError(f"segment_many takes an iterable of images; got one image "
                                f"({type(images).__name__}): use segment(), or put it in a list")
        rule = self._rule(background, background_names)
        query = self.query(classes, background_names)
        preset = self.preset
        pipeline = WindowPipeline(self.matcher, preset.crop, preset.stride, preset.scale, self.device,
                                  batch_size=self.matcher.batch_size if batch_size is None else batch_size,
                                  workers=default_workers() if workers is None else workers, prefetch=prefetch)
        constant = preset.background_threshold if rule == "constant" else None
        channels = len(query.names) + int(constant is not None)
        arrays = (as_rgb_array(image) for image in images)  # read on the pipeline's prefetch thread
        for shape, scores, stats in pipeline.run(arrays, proposals, channels, constant):
            yield self._result(shape, scores, query, rule, return_scores, stats)

    @property
    def device(self) -> torch.device:
        return self.models.device

    def prepare(self, classes: Sequence[ClassSpec] | ClassList,
                background_names: Sequence[str] = ()) -> list[str]:
        """Validate ``classes`` (names or lists of synonyms) and let the matcher set up for them (cached for
        repeated calls); returns one name per class. See :meth:`query`."""
        return self.query(classes, background_names).classes.labels

    def query(self, classes: Sequence[ClassSpec] | ClassList, background_names: Sequence[str] = ()) -> Query:
        """The prepared :class:`Query` of ``classes`` (and of ``background_names``, queried as background).

        The matcher gets only the names it can serve (:meth:`protoseg.match.Matcher.serves`, e.g. banks that look
        prototypes up by exact label): a class is served when any of its synonyms is. A class none of
        whose names is served is passed on whole, and the matcher's error names it.
        """
        given = normalize_classes(classes)
        background = normalize_background(background_names)
        key = (given, background)
        if self._prepared is not None and self._prepared[0] == key:
            return self._prepared[1]
        served = given.keep(self.matcher.serves(given.names))
        kept_background = background
        if background:
            kept_background = ClassList((background,)).keep(self.matcher.serves(list(background))).synonyms[0]
        query = Query.build(given, served, kept_background)
        self.matcher.prepare(list(query.names))
        self._prepared = (key, query)
        return query

    def _rule(self, background: bool | str | None, background_names: Sequence[str] = ()) -> str:
        """The background rule ``background`` asks for; ``background_names`` need the probability rule."""
        if background is None or background is False:
            rule = "none"
        elif background is True:
            rule = self.preset.background_rule
        elif isinstance(background, str) and background in BACKGROUND_RULES:
            rule = background
        else:
            raise ProtosegError(f"background must be True/False or one of {', '.join(BACKGROUND_RULES)}; "
                                f"got {background!r}")
        if background_names and rule != "probability":
            raise ProtosegError("background names are queried only by the probability background rule; "
                                f"this segmentation uses {rule!r}")
        return rule

    def window_scores(self, image: np.ndarray, classes: Sequence[ClassSpec] | ClassList,
                      background: bool | str = False, background_names: Sequence[str] = (),
                      proposals: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
        """Scores after resizing, sliding and averaging, at the *resized* size: one channel per distinct
        name the matcher scores (:attr:`Query.names`), after a constant background channel with the
        ``constant`` rule.

        ``image``: uint8 ``[H, W, 3]`` -> ``[len(names) (+1 background first), h, w]``. ``proposals``: bool
        ``[N, H, W]`` masks of the image for matchers that take them (DPSM ``proposals="given"``); they
        are resized like the image (nearest) and cropped with every window.
        """
        return self._slide(image, self.query(classes, background_names), self._rule(background) == "constant",
                           proposals)

    def _slide(self, image: np.ndarray, query: Query, constant: bool,
               proposals: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
        threshold = self.preset.background_threshold
        self.matcher.check_proposals(proposals is not None)
        prepared = prepare_image(image, proposals, self.preset.scale)
        resized = prepared.resized.to(self.device)
        masks = prepared.masks
        if masks is None:  # a matcher that proposes regions once per image (DPSM sam_scope="image"), or None
            masks = self.matcher.image_proposals(resized)

        channels = len(query.names) + int(constant)
        if masks is None:  # windows in batches of the matcher's size
            def score_batch(crops: torch.Tensor) -> torch.Tensor:
                s = self.matcher.score_windows(crops)
                if constant:
                    s = torch.cat([torch.full_like(s[:, :1], threshold), s], 1)
                return s

            return slide_batches(resized, score_batch, channels, self.preset.crop, self.preset.stride,
                                 self.matcher.batch_size)

        def score(crop: torch.Tensor) -> torch.Tensor:  # the image's channels, then its proposals
            s = self.matcher(crop[:3], proposals=crop[3:] > 0.5)
            if constant:
                s = torch.cat([torch.full_like(s[:1], threshold), s])
            return s

        resized = torch.cat([resized, masks.to(resized)])  # proposals are cropped together with the image
        return slide(resized, score, channels, self.preset.crop, self.preset.stride)

    @torch.no_grad()
    def segment(self, image: ImageInput, classes: Sequence[ClassSpec] | ClassList,
                background: bool | str = False, return_scores: bool = False,
                background_names: Sequence[str] = (),
                proposals: np.ndarray | torch.Tensor | None = None) -> Segmentation:
        """Label every pixel of ``image`` with one of ``classes``.

        Args:
            image: a uint8 ``[H, W, 3]`` RGB array, a PIL image of mode ``"RGB"``, or an image file's path
                (read with :func:`protoseg.images.load_image`); anything else is an error, never converted
                silently (:func:`protoseg.images.as_rgb_array`).
            classes: class names, or lists of synonyms (a class scores the max over its names).
            background: ``False`` / ``"none"``: every pixel gets a class; ``True``: the preset's
                ``background_rule``; ``"constant"`` or ``"probability"``: that rule (module docstring).
                Background pixels get :data:`BACKGROUND`.
            background_names: names queried as background (the probability rule only; with none, only the
                probability threshold makes background).
            return_scores: keep the per-class scores (:class:`Segmentation`).
            proposals: bool ``[N, H, W]`` region proposals of this image, for a DPSM preset with
                ``proposals="given"`` (e.g. an external mask generator's masks, or a test world's object
                masks).

        Raises:
            ProtosegError: an image that is not one of those (naming what it got and how to convert it), an
                unreadable file, bad classes, background options or proposals.
        """
        image = as_rgb_array(image)
        rule = self._rule(background, background_names)
        query = self.query(classes, background_names)
        self.matcher.reset_stats()
        scores = self._slide(image, query, rule == "constant", proposals)
        return self._result(image.shape[:2], scores, query, rule, return_scores, dict(self.matcher.stats))

    def _result(self, shape: tuple[int, int], scores: torch.Tensor, query: Query, rule: str, return_scores: bool,
                diagnostics: dict[str, int]) -> Segmentation:
        """The :class:`Segmentation` of an image of ``shape (H, W)`` from its window-averaged ``scores`` at the
        resized size (:meth:`window_scores`) under background ``rule``."""
        scores = F.interpolate(scores[None], size=tuple(shape), mode="bilinear", align_corners=False)[0]
        if rule == "probability":
            labels, kept = self._probability(scores, query)
        else:
            offset = int(rule == "constant")  # the constant background channel comes first
            if not query.direct:
                scores = torch.cat([scores[:offset], query.served.reduce(query.entries(scores[offset:]))])
            labels = scores.argmax(0) - offset
            kept = scores[offset:]
        return Segmentation(labels=labels.cpu().numpy().astype(np.int64), classes=query.classes.labels,
                            scores=kept.float().cpu() if return_scores else None, diagnostics=diagnostics)

    def _probability(self, scores: torch.Tensor, query: Query) -> tuple[torch.Tensor, torch.Tensor]:
        """SCLIP's ``postprocess_result`` on per-name scores at the original size -> (labels with -1 for
        background, class probabilities ``[C, H, W]``)."""
        preset = self.preset
        logits = query.entries(scores)  # [background names + class names, H, W]
        probs = (logits * preset.logit_scale).softmax(0)
        nb = len(query.background)
        classes = query.served.reduce(probs[nb:])
        background = probs[:nb].amax(0, keepdim=True) if nb else torch.zeros_like(classes[:1])
        probs = torch.cat([background, classes])  # [1 + C, H, W], class 0 = background
        if preset.area_threshold is not None:
            # SCLIP: one-hot of the argmax summed per class (background excluded), compared in float32.
            area = torch.bincount(probs.argmax(0).flatten(), minlength=len(probs))[1:].to(probs.dtype)
            keep = (area > preset.area_threshold * area.sum()).to(probs.dtype)
            probs[1:] *= keep[:, None, None]
        labels = probs.argmax(0)
        labels[probs.amax(0) < preset.background_threshold] = 0
        return labels - 1, probs[1:]
