"""The builder interface and registry: every way a bank is made is a :class:`Builder` chosen by name.

A builder turns a :class:`BuildSource` into a bank in three steps, so that every build is sharded,
resumable and distributable the same way (:mod:`protoseg.runs`):

- ``plan(source, seed, progress)`` (driver): the work items (small, picklable, each with its seed) and
  the settings recorded in the bank manifest;
- ``shard(items)`` (worker, maybe a Ray task): ``{name: array}`` results of a slice of the items;
- ``reduce(shards, plan, seed)`` (driver): the shard files in order -> a :class:`PrototypeBank`;
  ``write(...)`` saves it (or, for a builder that streams, writes the bank folder itself).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protoseg.bank import PrototypeBank
from protoseg.config.build import BuildPreset
from protoseg.runs import Progress, ShardResult


@dataclass(frozen=True)
class BuildSource:
    """What a bank is made from; each builder reads the fields it needs and rejects the others.

    Attributes:
        captions: FreeDA: COCO-Captions JSON or a text file, one caption a line.
        nouns: FreeDA: nouns to make prototypes of without a caption source (captions written for them,
            :func:`protoseg.generate.captions.noun_captions`; prototypes made on demand).
        limit: FreeDA: use only the first ``limit`` captions.
        classes: DPSM: class names.
        llm: DPSM: chat model spec overriding the preset's.
        descriptions: DPSM: the editable description cache (default ``OUT.descriptions.json``).
        examples: examples: a folder with ``classes.txt``, ``images/`` and ``masks/``.
        embeddings, index: FreeDA release import: the ``prototype_embeddings/`` folder and ``knn.index``.
    """

    captions: Path | None = None
    nouns: tuple[str, ...] | None = None
    limit: int | None = None
    classes: tuple[str, ...] | None = None
    llm: str | None = None
    descriptions: Path | None = None
    examples: Path | None = None
    embeddings: Path | None = None
    index: Path | None = None

    def given(self) -> set[str]:
        """Names of the fields that are set."""
        return {k for k, v in vars(self).items() if v is not None}


@dataclass
class Plan:
    """A builder's plan: ``items`` (picklable, one unit of work each), ``settings`` (JSON-ready; recorded
    in the manifest and, with the items, the run's fingerprint), ``inputs`` (stamps of the files the
    build reads, :func:`protoseg.runs.file_stamp`: part of the fingerprint, so a changed input file starts
    the build fresh) and builder-specific ``context``."""

    items: list[Any]
    settings: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)


class Builder:
    """Base of the builders. Subclasses set ``method`` and ``sources`` (the :class:`BuildSource` fields
    they read) and implement :meth:`plan`, :meth:`shard` and :meth:`reduce`.

    A builder is picklable (its preset, device and dtype are plain data), so ``builder.shard`` can run
    as a Ray task; models are loaded inside ``shard`` and cached per process.
    """

    method: str = ""
    sources: frozenset[str] = frozenset()
    needs: str = ""

    def __init__(self, preset: BuildPreset, device: str | None = None, dtype: str | None = None):
        self.preset, self.device, self.dtype = preset, device, dtype

    def check_source(self, source: BuildSource) -> None:
        """Reject a source that lacks what this builder reads or names what it does not."""
        from protoseg.errors import ProtosegError

        given = source.given()
        if not given & self.sources or given - self.sources - {"limit", "llm", "descriptions"}:
            raise ProtosegError(f"a {self.method} bank is built from {self.needs}")

    def plan(self, source: BuildSource, seed: int, progress: Progress | None = None) -> Plan:
        raise NotImplementedError

    def shard(self, items: list[Any]) -> ShardResult:
        raise NotImplementedError

    def reduce(self, shards: list[Path], plan: Plan, seed: int) -> PrototypeBank:
        raise NotImplementedError

    def write(self, shards: list[Path], plan: Plan, seed: int, out: Path, overwrite: bool = False) -> Path:
        """Reduce and save the bank atomically at ``out`` (a builder may stream instead)."""
        self.reduce(shards, plan, seed).save(out, overwrite=overwrite)
        return out


#: method name -> ``"module:class"`` of its :class:`Builder` (imported on use, like the matchers).
BUILDERS: dict[str, str] = {
    "freeda": "protoseg.offline.freeda:FreedaBuilder",
    "dpsm": "protoseg.offline.dpsm:DpsmBuilder",
    "examples": "protoseg.offline.examples:ExamplesBuilder",
    "freeda-import": "protoseg.offline.freeda_import:FreedaImportBuilder",
}


def register_builder(method: str, target: str) -> None:
    """Register a builder class by ``"module:attribute"`` path."""
    BUILDERS[method] = target


def get_builder(preset: BuildPreset, device: str | None = None, dtype: str | None = None) -> Builder:
    """The builder of ``preset.method``."""
    from protoseg.errors import ProtosegError

    try:
        module, attr = BUILDERS[preset.method].split(":")
    except KeyError:
        raise ProtosegError(f"unknown build method {preset.method!r}; known: {', '.join(BUILDERS)}") from None
    cls: Callable[..., Builder] = getattr(importlib.import_module(module), attr)
    return cls(preset, device, dtype)

