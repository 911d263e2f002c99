"""Running a build: plan on the driver, shards run resumably (:mod:`protoseg.runs`), reduce into the bank.

:func:`build_bank` is the one way a bank is built from a preset and a source record;
:func:`build_examples_bank` and :func:`import_freeda` are it for labelled examples and FreeDA's release.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protoseg.bank.storage import check_bank_out
from protoseg.config.build import BuildPreset, BuildSource, ExamplesSource, FreedaImportSource, examples_preset
from protoseg.config.segment import Preset
from protoseg.errors import ProtosegError
from protoseg.offline.base import Builder, Plan
from protoseg.offline.freeda_import import release_preset
from protoseg.offline.registry import check_source, get_builder
from protoseg.runs import Progress, check_work_dir, fingerprint_of, prepare_work_dir, remove_work_dir, run_shards
from protoseg.version import build_id


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
    """Build a bank with ``preset`` from ``source`` (the source record of ``preset.method``) and write it
    to ``out``; returns ``out``. Everything the caller controls is checked before a model loads.

    ``progress(stage, done, total)`` reports ``"descriptions"`` (DPSM), ``"shards"`` and ``"reduce"``;
    ``on_shard_written(index)`` is called once each shard's file is in place.

    Raises:
        ProtosegError: ``out`` exists (without ``run.overwrite``) or cannot be written, a work folder
            protoseg did not make, a source of another builder, or a problem of the inputs.
    """
    out = check_bank_out(out, run.overwrite)
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
    work_dir = check_work_dir(run.work_dir or default_work_dir(out), what="build")
    check_source(preset.method, source)
    builder = get_builder(preset, run.device, run.dtype)

    plan = builder.plan(source, out, run.seed, progress)
    plan.settings = {"preset": preset.settings(), "seed": run.seed, "shard_size": run.shard_size,
                     "diffusion_dtype": run.dtype, **plan.settings}
    items = [vars(item) for item in plan.items]
    work = prepare_work_dir(work_dir, {**plan.settings, "items": len(items), "items_sha256": fingerprint_of(items),
                                       "inputs": plan.inputs, "protoseg": build_id()})

    shards = run_shards(work, _chunks(plan.items, run.shard_size), builder.shard, progress=progress,
                        on_shard_written=on_shard_written, ray=run.ray, ray_address=run.ray_address,
                        ray_init=run.ray_init, task_threads=run.ray_task_threads)
    return builder, shards, plan, work


def build_examples_bank(examples: str | Path, out: str | Path, preset: Preset, *, dtype: str = "float16",
                        device: str | None = None, progress: Progress | None = None) -> Path:
    """Write at ``out`` the bank of the labelled examples folder ``examples`` for segmentation preset
    ``preset`` (its feature and CLIP models, superpixels, pooling and windows), one example a shard:
    interrupted builds resume. Returns ``out``."""
    return build_bank(examples_preset(preset, bank_dtype=dtype), ExamplesSource(Path(examples)), out,
                      RunOptions(shard_size=1, device=device), progress=progress)


def import_freeda(embeddings_dir: str | Path, index_path: str | Path, out: str | Path, *,
                  feature_encoder: str = "facebook/dinov2-large", text_encoder: str = "openai/clip-vit-large-patch14",
                  dtype: str = "float16", chunk: int = 4096, progress: Progress | None = None) -> Path:
    """Write a bank at ``out`` from FreeDA's ``prototype_embeddings/`` folder and ``knn.index``
    (:func:`build_bank` with the ``freeda-import`` builder: interrupted imports resume)."""
    return build_bank(release_preset(feature_encoder, text_encoder, dtype, chunk),
                      FreedaImportSource(Path(embeddings_dir), Path(index_path)), out,
                      RunOptions(shard_size=1), progress=progress)
