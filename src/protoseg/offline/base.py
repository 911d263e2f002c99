"""The builder interface: every way a bank is made is a :class:`Builder` of one source record.

A builder turns its source record (:mod:`protoseg.config.build`: ``FreedaSource``, ``DpsmSource``,
``ExamplesSource``, ``FreedaImportSource``) into a bank in three steps, so that every build is sharded,
resumable and distributable the same way (:mod:`protoseg.runs`):

- ``plan(source, out, seed, progress)`` (driver): the work items (small, picklable, each with its seed) and
  the settings recorded in the bank manifest; ``out`` is where the bank will live (a builder may keep a
  cache beside it, nothing is written there);
- ``shard(items)`` (worker, maybe a Ray task): ``{name: array}`` results of a slice of the items;
- ``reduce(shards, plan, seed)`` (driver): the shard files in order -> a :class:`PrototypeBank`;
  ``write(...)`` saves it (:class:`ReducingBuilder`), or a builder that streams writes the bank folder
  itself.

Builders are chosen by name in :data:`protoseg.offline.registry.BUILDERS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protoseg.bank import PrototypeBank
from protoseg.config.build import BuildPreset, BuildSource
from protoseg.runs import Progress, ShardResult


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


class Builder(ABC):
    """Base of the builders: :meth:`plan`, :meth:`shard` and :meth:`write`.

    A builder is picklable (its preset, device and dtype are plain data), so ``builder.shard`` can run
    as a Ray task; models are loaded inside ``shard`` and cached per process.
    """

    def __init__(self, preset: BuildPreset, device: str | None = None, dtype: str | None = None):
        self.preset, self.device, self.dtype = preset, device, dtype

    @abstractmethod
    def plan(self, source: BuildSource, out: Path, seed: int, progress: Progress | None = None) -> Plan:
        """The work items of ``source`` (this builder's source record) for a bank at ``out``."""

    @abstractmethod
    def shard(self, items: list[Any]) -> ShardResult:
        """The results of one shard of work items."""

    @abstractmethod
    def write(self, shards: Sequence[Path], plan: Plan, seed: int, out: Path, overwrite: bool = False) -> Path:
        """Write the bank of the shard files (in shard order) atomically at ``out``; returns ``out``."""


class ReducingBuilder(Builder):
    """A builder whose shards reduce to a bank in memory (:meth:`reduce`), then saved; a bank can so also
    be grown by a build's new classes."""

    @abstractmethod
    def reduce(self, shards: Sequence[Path | ShardResult], plan: Plan, seed: int) -> PrototypeBank:
        """The bank of the shard files (or results), in shard order."""

    def write(self, shards: Sequence[Path], plan: Plan, seed: int, out: Path, overwrite: bool = False) -> Path:
        self.reduce(shards, plan, seed).save(out, overwrite=overwrite)
        return out
