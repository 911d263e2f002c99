"""Sharded, resumable execution of a build: shard files written atomically, finished shards skipped.

A build's work directory holds::

    WORK/
      build.json          fingerprint of the build (settings + work items); a rerun must match it
      shards/00000.npz    one file per finished shard (numpy ``.npz``, no pickle)

A shard file appears only complete (written to a temporary file in the same directory, flushed, then
renamed). A rerun loads the fingerprint, skips shards whose file exists and computes the others, so a
killed build resumed gives the same files as an uninterrupted one: every shard's result depends only on
its own items (whose seeds derive from the global seed and the item index), never on the order or the
process in which shards run. With ``ray=True`` the missing shards run as Ray tasks (one GPU per task
when the cluster has GPUs); results come back to the driver, which writes the files, so workers need no
shared file system.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from protoseg.atomic import atomic_path
from protoseg.errors import ProtosegError

T = TypeVar("T")
ShardResult = dict[str, np.ndarray]

#: The one progress signature of long jobs: ``progress(stage, done, total)``.
Progress = Callable[[str, int, int], None]

FINGERPRINT_FILE = "build.json"


def derive_seed(seed: int, *parts: int | str) -> int:
    """A 31-bit seed from the global ``seed`` and an item's identity (``parts``: ints or strings).

    Depends on nothing else (not on sharding, order or process), so a resumed, distributed or partial
    run draws the same random numbers for the same item.
    """
    words = [int(seed) & 0xFFFFFFFF]
    words += [zlib.crc32(p.encode()) if isinstance(p, str) else int(p) & 0xFFFFFFFF for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1)[0] & 0x7FFFFFFF)


def fingerprint_of(description: dict[str, Any]) -> str:
    """A stable hash of a JSON-serialisable build description."""
    text = json.dumps(description, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def shard_path(work_dir: str | Path, index: int) -> Path:
    return Path(work_dir) / "shards" / f"{index:05d}.npz"


def save_shard(path: str | Path, arrays: ShardResult) -> None:
    """Write ``arrays`` to ``path`` (``.npz``) atomically: temp file in the same directory + rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **{k: np.asarray(v) for k, v in arrays.items()})
        handle.flush()
        os.fsync(handle.fileno())


def load_shard(path: str | Path) -> ShardResult:
    """Read a shard file (no pickle)."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def prepare_work_dir(work_dir: str | Path, description: dict[str, Any]) -> Path:
    """Create ``work_dir`` or check that it belongs to the same build.

    Raises:
        ProtosegError: the directory holds shards of a build with other settings or inputs.
    """
    work_dir = Path(work_dir)
    marker = work_dir / FINGERPRINT_FILE
    record = {"fingerprint": fingerprint_of(description), "description": description}
    if marker.is_file():
        try:
            previous = json.loads(marker.read_text())["fingerprint"]
        except (ValueError, KeyError) as exc:
            raise ProtosegError(f"{marker} is damaged ({exc}); remove {work_dir} to start the build "
                                "over") from exc
        if previous != record["fingerprint"]:
            raise ProtosegError(f"{work_dir} holds shards of a build with other settings or inputs; "
                                "remove it (or pass another --work-dir) to start over, or rerun with the "
                                "same options to resume")
        return work_dir
    with atomic_path(marker) as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return work_dir


def run_shards(work_dir: str | Path, shards: Sequence[T], work: Callable[[T], ShardResult], *,
               progress: Progress | None = None, stage: str = "shards",
               on_shard_written: Callable[[int], None] | None = None,
               ray: bool = False, ray_address: str | None = None,
               ray_init: dict[str, Any] | None = None, task_threads: int | None = None) -> list[Path]:
    """Compute every shard whose file is missing and return all shard paths, in shard order.

    Args:
        work_dir: a directory prepared with :func:`prepare_work_dir`.
        shards: the work items of each shard (picklable when ``ray``).
        work: ``work(items) -> {name: array}``; a picklable top-level function (or ``functools.partial``).
        progress: called as ``progress(stage, done, total)`` after each shard (and once at the start).
        on_shard_written: called with the shard index right after its file is in place.
        ray: run the missing shards as Ray tasks.
        ray_address: cluster address for ``ray.init`` (``None``: an existing connection or a local Ray).
        ray_init: extra keyword arguments for ``ray.init`` when this call starts Ray.
        task_threads: CPUs reserved by each Ray task and torch threads it uses (default: 1 CPU, Ray's
            thread default). CPU float results depend on the thread count, so a Ray build matches a
            local build bit for bit when this equals the local ``torch.get_num_threads()``; on GPUs the
            thread count does not matter.
    """
    paths = [shard_path(work_dir, i) for i in range(len(shards))]
    todo = [i for i, p in enumerate(paths) if not p.is_file()]
    total = len(paths)
    done = total - len(todo)
    if progress is not None:
        progress(stage, done, total)

    def finished(index: int, result: ShardResult) -> None:
        nonlocal done
        save_shard(paths[index], result)
        done += 1
        if on_shard_written is not None:
            on_shard_written(index)
        if progress is not None:
            progress(stage, done, total)

    if not todo:
        return paths
    if not ray:
        for i in todo:
            finished(i, work(shards[i]))
        return paths
    _run_on_ray(todo, shards, work, finished, ray_address, ray_init or {}, task_threads)
    return paths


def _call(work: Callable[[T], ShardResult], items: T, threads: int | None) -> ShardResult:
    """The Ray task body: ``work(items)`` (Ray wants a plain function, not a ``functools.partial``)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return work(items)


def _run_on_ray(todo: list[int], shards: Sequence[T], work: Callable[[T], ShardResult],
                finished: Callable[[int, ShardResult], None], address: str | None,
                init_kwargs: dict[str, Any], threads: int | None) -> None:
    try:
        import ray
    except ImportError:
        raise ProtosegError("--ray needs Ray: pip install 'protoseg[ray]'") from None
    started = False
    if not ray.is_initialized():
        package_root = str(Path(__file__).resolve().parents[2])
        env = {"PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
        try:
            ray.init(address=address, runtime_env={"env_vars": env}, include_dashboard=False,
                     log_to_driver=False, **init_kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = address or "a local cluster"
            raise ProtosegError(f"cannot start or reach Ray at {where}: {exc}") from exc
        started = True
    try:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(num_cpus=threads or 1, num_gpus=gpus, max_retries=2)(_call)
        work_ref = ray.put(work)
        pending = {task.remote(work_ref, shards[i], threads): i for i in todo}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                finished(pending.pop(ref), ray.get(ref))
    finally:
        if started:
            ray.shutdown()
