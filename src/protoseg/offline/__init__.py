"""The offline stage: a :class:`BuildSource` in, a :class:`PrototypeBank` out, by a registered builder.

Every way a bank is made (FreeDA and DPSM synthesis, labelled examples, FreeDA's released data) is a :class:`Builder` in
:data:`BUILDERS`, chosen by the build preset's ``method``, and runs the same way: the builder *plans*
work items on the driver, the items run in *shards* (:mod:`protoseg.runs`: atomic shard files in a
fingerprinted work directory, finished shards skipped on rerun, optionally as Ray tasks) and the
builder *reduces* the shard files into the bank, written atomically. Because every item's seed derives
from ``(seed, item identity)`` and shards are fixed by ``shard_size``, a killed and resumed build, a
Ray build and a local build give the same bank.

Example::

    from protoseg.offline import BuildSource, build_bank, get_build_preset
    build_bank(get_build_preset("dpsm-tiny"), BuildSource(classes=("cat", "dog")), "banks/cats")
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protoseg import __version__
from protoseg.config.build import BUILD_PRESETS, BuildPreset, examples_preset, get_build_preset
from protoseg.errors import ProtosegError
from protoseg.offline.base import BUILDERS, Builder, BuildSource, Plan, get_builder, register_builder
from protoseg.runs import Progress, fingerprint_of, prepare_work_dir, remove_work_dir, run_shards

__all__ = ["BUILDERS", "BUILD_PRESETS", "BuildPreset", "BuildSource", "Builder", "Plan", "RunOptions",
           "build_bank", "default_work_dir", "examples_preset", "get_build_preset", "register_builder", "run_build"]


def default_work_dir(out: str | Path) -> Path:
    """``OUT.partial`` next to the bank."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


@dataclass(frozen=True)
class RunOptions:
    """How a build runs (none of it changes the bank except ``seed`` and ``shard_size``).

    Attributes:
        work_dir: where shards live (default ``OUT.partial``); reusing it resumes the build.
        shard_size: items (captions / support images / examples) per shard; part of the build's identity.
        seed: global seed; every item's seed derives from it and the item.
        device: ``None``/``"auto"``: CUDA when available. dtype: diffusion dtype (``None``: fp16 on CUDA).
        ray, ray_address, ray_init, ray_task_threads: run the shards as Ray tasks
            (:func:`protoseg.runs.run_shards`; ``ray_task_threads`` is its ``task_threads``).
        keep_work_dir: keep the shards after the bank is written (default: removed).
        overwrite: replace an existing bank at ``out``.
    """

    work_dir: Path | None = None
    shard_size: int = 16
    seed: int = 0
    device: str | None = None
    dtype: str | None = None
    ray: bool = False
    ray_address: str | None = None
    ray_init: dict[str, Any] | None = None
    ray_task_threads: int | None = None
    keep_work_dir: bool = False
    overwrite: bool = False


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def build_bank(preset: BuildPreset, source: BuildSource, out: str | Path, run: RunOptions = RunOptions(),
               progress: Progress | None = None,
               on_shard_written: Callable[[int], None] | None = None) -> Path:
    """Build a bank with ``preset`` from ``source`` and write it to ``out``; returns ``out``.

    ``progress(stage, done, total)`` reports ``"descriptions"`` (DPSM), ``"shards"`` and ``"reduce"``;
    ``on_shard_written(index)`` is called once each shard's file is in place.
    """
    out = Path(out)
    if out.exists() and not run.overwrite:
        raise ProtosegError(f"{out} already exists; choose another --out or remove it")
    builder, shards, plan, work = run_build(preset, source, out, run, progress, on_shard_written)
    if progress is not None:
        progress("reduce", 0, 1)
    builder.write(shards, plan, run.seed, out, overwrite=run.overwrite)
    if progress is not None:
        progress("reduce", 1, 1)
    if not run.keep_work_dir:
        remove_work_dir(work)
    return out


def run_build(preset: BuildPreset, source: BuildSource, out: Path, run: RunOptions,
              progress: Progress | None = None, on_shard_written: Callable[[int], None] | None = None
              ) -> tuple[Builder, list[Path], Plan, Path]:
    """Plan and run the shards of a build (resuming finished ones); returns ``(builder, shard files, plan,
    work dir)`` for the caller to reduce. ``out`` is where the bank will live (DPSM keeps its description
    cache beside it); nothing is written there."""
    if run.shard_size < 1:
        raise ProtosegError("--shard-size must be at least 1")
    builder = get_builder(preset, run.device, run.dtype)

    plan = builder.plan(source, out, run.seed, progress)
    plan.settings = {"preset": preset.settings(), "seed": run.seed, "shard_size": run.shard_size,
                     "diffusion_dtype": run.dtype, **plan.settings}
    items = [vars(item) for item in plan.items]
    work = prepare_work_dir(run.work_dir or default_work_dir(out),
                            {**plan.settings, "items": len(items), "items_sha256": fingerprint_of(items),
                             "inputs": plan.inputs, "protoseg": __version__})

    shards = run_shards(work, _chunks(plan.items, run.shard_size), builder.shard, progress=progress,
                        on_shard_written=on_shard_written, ray=run.ray, ray_address=run.ray_address,
                        ray_init=run.ray_init, task_threads=run.ray_task_threads)
    return builder, shards, plan, work
