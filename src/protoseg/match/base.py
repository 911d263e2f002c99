"""The matcher interface and its registry."""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from protoseg.bank import PrototypeBank
from protoseg.config.matchers import MATCHER_OPTIONS, DpsmOptions, FreedaOptions, matcher_options
from protoseg.errors import ProtosegError


class Matcher(abc.ABC):
    """Scores windows of one image against a class list.

    A matcher is constructed from its bank, the loaded models and its options record
    (:mod:`protoseg.config.matchers`): ``Matcher(bank, models, options, superpixels=...)``.

    ``prepare`` runs once per class list (retrieval, prototype aggregation); ``__call__`` once per
    window. Scores are "higher is more likely", comparable across classes, and on the scale the
    background threshold is defined on (for FreeDA: ``beta * sigmoid(cos) + (1 - beta) * cos``).

    ``prepare`` gets plain strings, one per score channel: a class with synonyms contributes each of its
    names, and :class:`protoseg.segment.Segmenter` takes the max over a class's channels after window
    averaging (SCLIP's order).

    Everything else :class:`~protoseg.segment.Segmenter` uses is declared here with a default a matcher
    overrides when it has the capability:

    - :meth:`serves`: which names it can score (banks that look prototypes up by exact label); the
      segmenter drops a class's unserved synonyms, so a class is served when any of its names is.
    - :attr:`proposes_per_image` / :meth:`image_proposals`: region proposals made once on the whole
      (resized) image, cropped with every window and passed to ``__call__``.
    - :attr:`takes_proposals` / :meth:`check_proposals`: region proposals given by the caller.
    - :meth:`score_windows` and :attr:`batch_size`: several windows per model forward.
    - :meth:`window_regions`, :meth:`forward_windows` and :meth:`finish_window`: a window's scoring split
      into its CPU-only region work (a picklable function of the window's pixels, run in worker
      processes by :class:`protoseg.pipeline.WindowPipeline`), the model forward of a batch of windows
      (of any images) and the rest; ``finish_window(crop, forward_windows(crops)[i], regions(pixels))``
      equals ``__call__(crop)``.
    - :meth:`reset_stats` / :attr:`stats`: counts of what it did, reset per image and reported as
      ``Segmentation.diagnostics``.
    """

    #: Windows per :meth:`score_windows` call.
    batch_size: int = 1

    @abc.abstractmethod
    def prepare(self, classes: list[str]) -> None:
        """Set up for ``classes`` (one score channel each)."""

    @abc.abstractmethod
    def __call__(self, crop: torch.Tensor, proposals: torch.Tensor | None = None) -> torch.Tensor:
        """``crop``: float ``[3, h, w]`` RGB 0-255 -> scores ``[C, h, w]`` (C = len(classes)).

        ``proposals``: bool ``[N, h, w]`` region proposals of this window, passed only to a matcher that
        takes them (:attr:`takes_proposals`) or made them (:meth:`image_proposals`).
        """

    def serves(self, names: list[str]) -> list[bool]:
        """Which ``names`` :meth:`prepare` can score (default: all)."""
        return [True] * len(names)

    @property
    def proposes_per_image(self) -> bool:
        """Whether :meth:`image_proposals` proposes regions once per image (default: no)."""
        return False

    def image_proposals(self, image: torch.Tensor) -> torch.Tensor | None:
        """Region proposals bool ``[N, H, W]`` of the whole resized image ``[3, H, W]``, or ``None``
        (default) when the matcher makes none per image."""
        return None

    @property
    def takes_proposals(self) -> bool:
        """Whether the caller gives region proposals of every image (default: no)."""
        return False

    def check_proposals(self, given: bool) -> None:
        """Raise :class:`ProtosegError` unless proposals being ``given`` (or not) for an image suits this
        matcher."""
        if given and not self.takes_proposals:
            raise ProtosegError(f"{type(self).__name__} takes no region proposals")

    def score_windows(self, crops: torch.Tensor) -> torch.Tensor:
        """Windows of one size ``crops`` float ``[B, 3, h, w]`` -> ``[B, C, h, w]`` (default: one at a time)."""
        return torch.stack([self(crop) for crop in crops])

    def window_regions(self) -> Callable[[np.ndarray], Any] | None:
        """The CPU-only part of scoring a window: a picklable function of its pixels (uint8 ``[h, w, 3]``,
        :func:`protoseg.windows.crop_pixels`) whose result :meth:`finish_window` takes; ``None`` (default)
        when there is none."""
        return None

    def forward_windows(self, crops: torch.Tensor) -> list[Any]:
        """The model outputs of windows of one size ``crops`` float ``[B, 3, h, w]``, one item per window
        (default: ``None`` each, :meth:`finish_window` runs the models)."""
        return [None] * len(crops)

    def finish_window(self, crop: torch.Tensor, forwarded: Any, regions: Any = None,
                      proposals: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``[C, h, w]`` of one window ``crop [3, h, w]`` from its :meth:`forward_windows` item and the
        result of :meth:`window_regions` on its pixels (``None``: computed here); default: ``__call__``."""
        return self(crop, proposals=proposals)

    def reset_stats(self) -> None:  # noqa: B027 (a capability with a do-nothing default, not abstract)
        """Zero :attr:`stats` (default: nothing to zero)."""

    @property
    def stats(self) -> dict[str, int]:
        """Counts since the last :meth:`prepare` / :meth:`reset_stats` (default: none)."""
        return {}


@dataclass(frozen=True)
class Registration:
    """A registered matcher: its class and its options record.

    Attributes:
        target: the class, or its ``"module:Class"`` path (imported when first built, so naming a
            matcher loads no model code).
        options: its options record (a frozen dataclass; :mod:`protoseg.config.fields`).
    """

    target: type[Matcher] | str
    options: type

    def matcher_class(self) -> type[Matcher]:
        if isinstance(self.target, str):
            module, attr = self.target.split(":")
            return getattr(importlib.import_module(module), attr)
        return self.target


#: name -> registered matcher.
MATCHERS: dict[str, Registration] = {
    "freeda": Registration("protoseg.match.freeda:FreeDAMatcher", FreedaOptions),
    "dpsm": Registration("protoseg.match.dpsm:DPSMMatcher", DpsmOptions),
}


def register_matcher(name: str, target: type[Matcher] | str, options: type) -> None:
    """Register a matcher class (or its ``"module:Class"`` path) by ``name`` with its options record (a
    frozen dataclass; see :mod:`protoseg.config.fields`); presets then name it in ``matcher``."""
    MATCHERS[name] = Registration(target, options)
    MATCHER_OPTIONS[name] = options


def build_matcher(name: str, bank: PrototypeBank, models: Any, options: Any = None, **extra: Any) -> Matcher:
    """Instantiate matcher ``name`` on ``bank`` with loaded ``models`` (:class:`protoseg.models.ModelSet`).

    ``options``: the matcher's typed options (:mod:`protoseg.config.matchers`) or a dict of overrides of
    their defaults, validated there; ``extra``: keyword arguments every matcher takes (``superpixels``).
    """
    try:
        registration = MATCHERS[name]
    except KeyError:
        raise ProtosegError(f"unknown matcher {name!r}; known: {', '.join(sorted(MATCHERS))}") from None
    return registration.matcher_class()(bank, models, matcher_options(name, options), **extra)
