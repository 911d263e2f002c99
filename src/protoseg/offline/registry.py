"""The builders by name: ``BUILDERS[method] = ("module:Builder", source record class)``.

A build preset's ``method`` picks the builder; the builder reads exactly one kind of source record
(:mod:`protoseg.config.build`), which declares ``method`` and ``needs`` (what it is made from, for
messages). Builder classes are named by import path and imported when a build of theirs starts: their
modules import the synthesis, model and clustering stacks (scikit-learn, transformers), about 4 s
measured, which reading, merging or importing a bank never needs.
"""

from __future__ import annotations

import importlib
from typing import Any

from protoseg.config.build import (
    BuildPreset,
    BuildSource,
    DpsmSource,
    ExamplesSource,
    FreedaImportSource,
    FreedaSource,
)
from protoseg.config.fields import field_names, given
from protoseg.errors import ProtosegError
from protoseg.offline.base import Builder

#: method name -> (``"module:attribute"`` of its :class:`Builder` class, the source record it reads).
BUILDERS: dict[str, tuple[str, type[Any]]] = {
    "freeda": ("protoseg.offline.freeda:FreedaBuilder", FreedaSource),
    "dpsm": ("protoseg.offline.dpsm:DpsmBuilder", DpsmSource),
    "examples": ("protoseg.offline.examples:ExamplesBuilder", ExamplesSource),
    "freeda-import": ("protoseg.offline.freeda_import:FreedaImportBuilder", FreedaImportSource),
}


def register_builder(method: str, builder: str, source: type[Any]) -> None:
    """Register the builder class at ``builder`` (``"module:attribute"``) under ``method``, reading source
    records of class ``source``."""
    BUILDERS[method] = (builder, source)


def _entry(method: str) -> tuple[str, type[Any]]:
    try:
        return BUILDERS[method]
    except KeyError:
        raise ProtosegError(f"unknown build method {method!r}; known: {', '.join(BUILDERS)}") from None


def get_builder(preset: BuildPreset, device: str | None = None, dtype: str | None = None) -> Builder:
    """The builder of ``preset.method``."""
    module, attribute = _entry(preset.method)[0].split(":")
    builder: type[Builder] = getattr(importlib.import_module(module), attribute)
    return builder(preset, device, dtype)


def check_source(method: str, source: BuildSource) -> None:
    """Raise :class:`ProtosegError` unless ``source`` is the source record builder ``method`` reads."""
    record = _entry(method)[1]
    if not isinstance(source, record):
        raise ProtosegError(f"a {method} bank is built from {record.needs}")


def source_record(method: str, **fields: Any) -> BuildSource:
    """The source record of builder ``method`` made of ``fields`` (``None``: not given), e.g. from the
    options of a command line.

    Raises:
        ProtosegError: a field the builder does not read is given, or the record is invalid.
    """
    record = _entry(method)[1]
    values = given(**fields)
    extra = sorted(set(values) - set(field_names(record)))
    if extra:
        raise ProtosegError(f"a {method} bank is built from {record.needs}; it does not read "
                            f"{', '.join(extra)}")
    return record(**values)
