"""The offline stage at scale: a vocabulary (captions or class names) in, a :class:`PrototypeBank` out.

:func:`build_bank` plans the work items on the driver, runs them in shards (:mod:`protoseg.runs`:
atomic shard files in a work directory, finished shards skipped on rerun, optionally as Ray tasks) and
reduces the shards into the bank, written atomically with :meth:`PrototypeBank.save`. Because every
item's seed derives from ``(seed, item identity)`` and shards are fixed by ``shard_size``, a killed and
resumed build, a Ray build and a local build give the same bank.

Example::

    from protoseg.offline import build_bank, get_build_preset
    build_bank(get_build_preset("dpsm-tiny"), "banks/cats", classes=["cat", "dog"])
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from protoseg import __version__
from protoseg.classes import validate_classes
from protoseg.config.build import BUILD_PRESETS, BuildPreset, get_build_preset
from protoseg.errors import ProtosegError
from protoseg.offline.common import resolve_tiny
from protoseg.runs import file_stamp, fingerprint_of, load_shard, prepare_work_dir, remove_work_dir, run_shards

__all__ = ["BUILD_PRESETS", "BuildPreset", "build_bank", "default_work_dir", "get_build_preset"]

#: ``progress(stage, done, total)``; stages: ``"descriptions"``, ``"shards"``, ``"reduce"``.
Progress = Callable[[str, int, int], None]


def default_work_dir(out: str | Path) -> Path:
    """``OUT.partial`` next to the bank."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def build_bank(preset: BuildPreset, out: str | Path, *, captions: str | Path | None = None,
               classes: list[str] | None = None, work_dir: str | Path | None = None, shard_size: int = 16,
               seed: int = 0, device: str | None = None, dtype: str | None = None, limit: int | None = None,
               llm: str | None = None, descriptions: str | Path | None = None, ray: bool = False,
               ray_address: str | None = None, ray_init: dict[str, Any] | None = None,
               ray_task_threads: int | None = None,
               keep_work_dir: bool = False, overwrite: bool = False, progress: Progress | None = None,
               on_shard_written: Callable[[int], None] | None = None) -> Path:
    """Build a bank with ``preset`` and write it to ``out``; returns ``out``.

    Args:
        preset: a :class:`BuildPreset` (:func:`get_build_preset`).
        out: bank directory to create.
        captions: FreeDA caption source (COCO-Captions JSON or a text file, one caption a line).
        classes: DPSM class names.
        work_dir: where shards live (default ``OUT.partial``); reusing it resumes the build.
        shard_size: items (captions / support images) per shard; part of the build's identity.
        seed: global seed; every item's synthesis seed derives from it and the item.
        device: ``None``/``"auto"``: CUDA when available. dtype: diffusion dtype (``None``: fp16 on CUDA).
        limit: use only the first ``limit`` captions.
        llm: DPSM LLM spec overriding the preset's. descriptions: the editable description cache
            (default ``OUT.descriptions.json``).
        ray, ray_address, ray_init, ray_task_threads: run the shards as Ray tasks
            (:func:`protoseg.runs.run_shards`; ``ray_task_threads`` is its ``task_threads``).
        keep_work_dir: keep the shards after the bank is written (default: removed).
        overwrite: replace an existing bank at ``out``.
        progress: ``progress(stage, done, total)``.
        on_shard_written: called with each shard index once its file is in place.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise ProtosegError(f"{out} already exists; choose another --out or remove it")
    if shard_size < 1:
        raise ProtosegError("--shard-size must be at least 1")
    work = Path(work_dir) if work_dir is not None else default_work_dir(out)
    settings: dict[str, Any] = {"preset": preset.settings(), "seed": seed, "shard_size": shard_size,
                                "diffusion_dtype": dtype}

    if preset.method == "freeda":
        from protoseg.generate.captions import read_captions
        from protoseg.generate.nouns import get_noun_extractor
        from protoseg.offline.freeda import freeda_shard, plan_freeda, reduce_freeda

        if captions is None or classes is not None:
            raise ProtosegError("a FreeDA bank is built from captions: pass --captions FILE "
                                "(COCO-Captions JSON or one caption a line)")
        source = read_captions(captions)
        if limit is not None:
            source = source[:limit]
        items = plan_freeda(source, get_noun_extractor(preset.nouns), seed)
        settings.update(captions=str(captions), captions_used=len(source), captions_with_nouns=len(items))
        worker = functools.partial(freeda_shard, resolve_tiny(preset), device, dtype)
    elif preset.method == "dpsm":
        from protoseg.offline.dpsm import class_prompts, dpsm_shard, plan_dpsm

        if classes is None or captions is not None:
            raise ProtosegError("a DPSM bank is built from class names: pass --classes \"a, b\" "
                                "or --classes-file F")
        classes = validate_classes(classes)
        cache = (Path(descriptions) if descriptions is not None
                 else out.with_name(out.name + ".descriptions.json"))

        def described(class_name: str, attribute: str) -> None:
            if progress is not None:
                progress("descriptions", classes.index(class_name) + 1, len(classes))

        prompts = class_prompts(classes, preset, llm, cache if preset.prompts == "llm" else None, seed,
                                device, described)
        items = plan_dpsm(prompts, preset, seed)
        settings.update(classes=classes, prompts=preset.prompts,
                        descriptions=str(cache) if preset.prompts == "llm" else None,
                        llm=(llm or preset.llm) if preset.prompts == "llm" else None)
        worker = functools.partial(dpsm_shard, resolve_tiny(preset), device, dtype)
    else:
        raise ProtosegError(f"unknown method {preset.method!r}; use freeda or dpsm")

    shards = _chunks(items, shard_size)
    item_list = [vars(it) for it in items]
    inputs = {"captions": file_stamp(captions)} if captions is not None else {}
    prepare_work_dir(work, {**settings, "items": len(item_list), "items_sha256": fingerprint_of(item_list),
                            "inputs": inputs, "protoseg": __version__})
    paths = run_shards(work, shards, worker, ray=ray, ray_address=ray_address, ray_init=ray_init,
                       task_threads=ray_task_threads,
                       on_shard_written=on_shard_written,
                       progress=(lambda d, t: progress("shards", d, t)) if progress is not None else None)
    if progress is not None:
        progress("reduce", 0, 1)
    if preset.method == "freeda":
        bank = reduce_freeda([load_shard(p) for p in paths], preset, settings)
    else:
        from protoseg.offline.dpsm import reduce_dpsm

        bank = reduce_dpsm(paths, classes, preset, seed, settings)
    bank.save(out, overwrite=overwrite)
    if progress is not None:
        progress("reduce", 1, 1)
    if not keep_work_dir:
        remove_work_dir(work)
    return out

