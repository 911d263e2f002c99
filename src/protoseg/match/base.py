"""The matcher interface and its registry."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol

import torch

from protoseg.bank import PrototypeBank
from protoseg.errors import ProtosegError


class Matcher(Protocol):
    """Scores windows of one image against a class list.

    ``prepare`` runs once per class list (retrieval, prototype aggregation); ``__call__`` once per
    window. Scores are "higher is more likely", comparable across classes, and on the scale the
    background threshold is defined on (for FreeDA: ``beta * sigmoid(cos) + (1 - beta) * cos``).

    ``prepare`` gets plain strings, one per score channel: a class with synonyms contributes each of its
    names, and :class:`protoseg.segment.Segmenter` takes the max over a class's channels after window
    averaging (SCLIP's order).

    A matcher may also keep counts of what it did (``stats``: ``dict[str, int]``, zeroed by
    ``reset_stats()``); :class:`protoseg.segment.Segmenter` resets them per image and reports them as
    ``Segmentation.diagnostics``. And it may say which names it can score (``serves(names) -> list[bool]``,
    for banks that look prototypes up by exact label): the segmenter then drops a class's unserved
    synonyms, so a class is served when any of its names is. A matcher that can score several windows at
    once has ``score_windows(crops [B, 3, h, w]) -> [B, C, h, w]`` and ``batch_size``; the segmenter then
    passes it its windows in batches of that size.
    """

    def prepare(self, classes: list[str]) -> None: ...

    def __call__(self, crop: torch.Tensor) -> torch.Tensor:
        """``crop``: float ``[3, h, w]`` RGB 0-255 -> scores ``[C, h, w]`` (C = len(classes))."""
        ...


#: name -> "module:factory". A factory takes ``(bank, models, **options, superpixels=...)`` and returns a
#: Matcher; its options record is registered in :data:`protoseg.config.matchers.MATCHER_OPTIONS`.
MATCHERS: dict[str, str] = {
    "freeda": "protoseg.match.freeda:FreeDAMatcher",
    "dpsm": "protoseg.match.dpsm:DPSMMatcher",
}


def register_matcher(name: str, target: str, options: type) -> None:
    """Register a matcher factory by ``"module:attribute"`` path with its options record (a frozen
    dataclass whose fields are the factory's keyword options; see :mod:`protoseg.config.fields`)."""
    from protoseg.config.matchers import MATCHER_OPTIONS

    MATCHERS[name] = target
    MATCHER_OPTIONS[name] = options


def build_matcher(name: str, bank: PrototypeBank, models: Any, options: Any = None, **extra: Any) -> Matcher:
    """Instantiate matcher ``name`` on ``bank`` with loaded ``models`` (:class:`protoseg.models.ModelSet`).

    ``options``: the matcher's typed options (:mod:`protoseg.config.matchers`) or a dict of overrides of
    their defaults, validated here; ``extra``: keyword arguments every matcher takes (``superpixels``).
    """
    from dataclasses import fields

    from protoseg.config.matchers import matcher_options

    try:
        target = MATCHERS[name]
    except KeyError:
        raise ProtosegError(f"unknown matcher {name!r}; known: {', '.join(sorted(MATCHERS))}") from None
    module, attr = target.split(":")
    factory: Callable[..., Matcher] = getattr(importlib.import_module(module), attr)
    record = matcher_options(name, options)
    return factory(bank, models, **{f.name: getattr(record, f.name) for f in fields(record)}, **extra)
