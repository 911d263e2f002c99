"""The offline stage: a source record in, a :class:`~protoseg.bank.PrototypeBank` out, by a registered builder.

Every way a bank is made (FreeDA and DPSM synthesis, labelled examples, FreeDA's released data) is a
:class:`Builder` in :data:`BUILDERS`, chosen by the build preset's ``method``, with the one source record
it reads (:class:`FreedaSource`, :class:`DpsmSource`, :class:`ExamplesSource`, :class:`FreedaImportSource`),
and runs the same way (:func:`build_bank`): the builder *plans* work items on the driver, the items run in
*shards* (:mod:`protoseg.runs`: atomic shard files in a fingerprinted work directory, finished shards
skipped on rerun, optionally as Ray tasks) and the builder *reduces* the shard files into the bank, written
atomically. Because every item's seed derives from ``(seed, item identity)`` and shards are fixed by
``shard_size``, a killed and resumed build, a Ray build and a local build give the same bank.

Example::

    from protoseg.offline import DpsmSource, build_bank, get_build_preset
    build_bank(get_build_preset("dpsm-tiny"), DpsmSource(classes=("cat", "dog")), "banks/cats")
"""

from __future__ import annotations

from protoseg.config.build import (
    BUILD_PRESETS,
    BuildPreset,
    BuildSource,
    DpsmSource,
    ExamplesSource,
    FreedaImportSource,
    FreedaSource,
    examples_preset,
    get_build_preset,
    resolve_build_preset,
)
from protoseg.offline.base import Builder, Plan, ReducingBuilder
from protoseg.offline.build import (
    RunOptions,
    build_bank,
    build_examples_bank,
    default_work_dir,
    import_freeda,
    run_build,
)
from protoseg.offline.registry import BUILDERS, get_builder, register_builder, source_record

__all__ = ["BUILDERS", "BUILD_PRESETS", "BuildPreset", "BuildSource", "Builder", "DpsmSource", "ExamplesSource",
           "FreedaImportSource", "FreedaSource", "Plan", "ReducingBuilder", "RunOptions", "build_bank",
           "build_examples_bank", "default_work_dir", "examples_preset", "get_build_preset", "get_builder",
           "import_freeda", "register_builder", "resolve_build_preset", "run_build", "source_record"]
