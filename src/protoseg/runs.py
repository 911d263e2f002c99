"""Fingerprinted, resumable, atomic shard runs: the machinery of builds and evaluations.

A run's work directory holds::

    WORK/
      build.json          fingerprint of the run (settings + the contents of its inputs); ``run.json`` for evals
      shards/00000.npz    one file per finished shard (numpy ``.npz``, no pickle)

A run resumes only what is provably the same: its fingerprint covers every content that decides the
result — settings, work items, the sizes and modification times of input files (:func:`file_stamp`,
:func:`files_digest`), bank ids and the protoseg version. A work directory holding another fingerprint
is protoseg's own (it carries the fingerprint file), so its shards are discarded and the run starts
fresh, saying so in one line through the ``protoseg`` logger (the CLI prints it); a folder that is not
protoseg's is never written into.

A shard file appears only complete (written to a temporary file in the same directory, flushed, then
renamed). A rerun loads the fingerprint, skips shards whose file exists and computes the others, so a
killed build resumed gives the same files as an uninterrupted one: every shard's result depends only on
its own items (whose seeds derive from the global seed and the item index), never on the order or the
process in which shards run. With ``ray=True`` the missing shards run on Ray workers
(:mod:`protoseg.ray_shards`: one per GPU when the cluster has GPUs, workers of the same protoseg build);
results come back to the driver, which writes the files, so workers need no shared file system.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from protoseg.atomic import atomic_path, check_output_dir, dir_mode
from protoseg.errors import ProtosegError
from protoseg.ray_shards import run_on_ray

T = TypeVar("T")
ShardResult = dict[str, np.ndarray]

#: The one progress signature of long jobs: ``progress(stage, done, total)``.
Progress = Callable[[str, int, int], None]

FINGERPRINT_FILE = "build.json"

#: Notices (a run starting fresh, ...) go to this logger; the CLI prints them as ``note: ...`` lines.
log = logging.getLogger("protoseg")
log.addHandler(logging.NullHandler())  # library code never prints: silent unless the application listens

def derive_seed(seed: int, *parts: int | str) -> int:
    """A 31-bit seed from the global ``seed`` and an item's identity (``parts``: ints or strings).

    Depends on nothing else (not on sharding, order or process), so a resumed, distributed or partial
    run draws the same random numbers for the same item.
    """
    words = [int(seed) & 0xFFFFFFFF]
    words += [zlib.crc32(p.encode()) if isinstance(p, str) else int(p) & 0xFFFFFFFF for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1)[0] & 0x7FFFFFFF)



def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: dataclasses become dicts, tuples lists, paths and the rest strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.loads(json.dumps(value, sort_keys=True, default=lambda v: jsonable(v)
                                 if dataclasses.is_dataclass(v) and not isinstance(v, type) else str(v)))


def fingerprint_of(description: Any) -> str:
    """A stable hash of a JSON-serialisable description (dict key order does not matter)."""
    text = json.dumps(jsonable(description), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def file_stamp(path: str | Path) -> dict[str, Any]:
    """What identifies the contents of a file cheaply: resolved path, size and modification time (ns).

    Raises:
        ProtosegError: the file is missing.
    """
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise ProtosegError(f"cannot read {path}: {exc.strerror or exc}") from None
    return {"path": os.path.realpath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def files_digest(paths: Iterable[str | Path]) -> str:
    """One hash of the stamps (:func:`file_stamp`) of many files, in the given order."""
    h = hashlib.sha256()
    for path in paths:
        s = file_stamp(path)
        h.update(f"{s['path']}\0{s['size']}\0{s['mtime_ns']}\n".encode())
    return h.hexdigest()


def tree_digest(folder: str | Path) -> str:
    """:func:`files_digest` of every file under ``folder`` (sorted; e.g. a bank directory)."""
    folder = Path(folder)
    return files_digest(sorted(p for p in folder.rglob("*") if p.is_file()))


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


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Keys whose values differ between two descriptions, one level into nested dicts (``inputs.bank``)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return [prefix.rstrip(".") or "description"]
    out: list[str] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a != b:
            nested = not prefix and isinstance(a, dict) and isinstance(b, dict)
            out += _differences(a, b, f"{key}.") if nested else [f"{prefix}{key}"]
    return out


def check_work_dir(work_dir: str | Path, *, marker: str = FINGERPRINT_FILE, what: str = "build") -> Path:
    """Check, writing nothing, that ``work_dir`` can hold a run's work files: missing (and creatable), an
    empty folder, or a folder protoseg made (it holds ``marker``).

    Raises:
        ProtosegError: ``work_dir`` is a file, a non-empty folder protoseg did not make, or not writable.
    """
    work_dir = Path(work_dir)
    if work_dir.exists() and not work_dir.is_dir():
        raise ProtosegError(f"{work_dir} is a file; pass a folder for the {what}'s work files")
    if work_dir.is_dir() and not (work_dir / marker).is_file() and any(work_dir.iterdir()):
        raise ProtosegError(f"{work_dir} is not empty and holds no protoseg {what}; protoseg writes its work "
                            "files only into folders it made: pass another folder or an empty one")
    check_output_dir(work_dir, f"{what} folder")
    return work_dir


def prepare_work_dir(work_dir: str | Path, description: dict[str, Any], *, marker: str = FINGERPRINT_FILE,
                     owned: Sequence[str] = ("shards",), what: str = "build") -> Path:
    """Create ``work_dir`` for the run described by ``description``, or reuse it when it holds the same run.

    - missing (or an empty folder): created and stamped with the fingerprint (``marker``);
    - stamped with the same fingerprint: kept, so finished shards are skipped;
    - stamped with another fingerprint (settings or input contents changed) or an unreadable stamp:
      protoseg's own files in it (``marker`` and the ``owned`` glob patterns) are removed and the run
      starts fresh; one notice on the ``protoseg`` logger names what changed.

    Raises:
        ProtosegError: ``work_dir`` is a file, or a non-empty folder protoseg did not make.
    """
    work_dir = Path(work_dir)
    stamp = work_dir / marker
    description = jsonable(description)
    record = {"fingerprint": fingerprint_of(description), "description": description}
    check_work_dir(work_dir, marker=marker, what=what)
    created = not work_dir.exists()
    if stamp.is_file():
        try:
            previous = json.loads(stamp.read_text())
            same = previous["fingerprint"] == record["fingerprint"]
            changed = _differences(previous.get("description"), description)
            created = bool(previous.get("created", False))
        except (ValueError, KeyError, TypeError):
            same, changed = False, ["its fingerprint file is unreadable"]
        if same:
            return work_dir
        for pattern in owned:
            for path in work_dir.glob(pattern):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        for leftover in work_dir.glob(".*.tmp"):  # temporary files of a killed run
            leftover.unlink(missing_ok=True)
        log.warning("%s in %s was made with other inputs or settings (%s changed); starting fresh",
                    what, work_dir, ", ".join(changed))
    work_dir.mkdir(parents=True, exist_ok=True)
    if created:
        work_dir.chmod(dir_mode())
    with atomic_path(stamp) as tmp:
        tmp.write_text(json.dumps({**record, "created": created}, indent=2, sort_keys=True) + "\n")
    return work_dir


def remove_work_dir(work_dir: str | Path, *, marker: str = FINGERPRINT_FILE,
                    owned: Sequence[str] = ("shards",)) -> None:
    """Remove what :func:`prepare_work_dir` and the run put into ``work_dir``, and the folder itself when
    protoseg created it and nothing else is left in it."""
    work_dir = Path(work_dir)
    stamp = work_dir / marker
    try:
        created = bool(json.loads(stamp.read_text()).get("created", False))
    except (OSError, ValueError, AttributeError):
        return  # not a folder prepared by protoseg: leave it alone
    for pattern in owned:
        for path in work_dir.glob(pattern):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    stamp.unlink(missing_ok=True)
    if created:
        try:
            work_dir.rmdir()
        except OSError:
            pass  # someone put other files there: keep them


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
        ray: run the missing shards on Ray workers (:func:`protoseg.ray_shards.run_on_ray`).
        ray_address: cluster address for ``ray.init`` (``None``: an existing connection or a local Ray).
        ray_init: extra keyword arguments for ``ray.init`` when this call starts Ray.
        task_threads: CPUs reserved by each Ray worker and torch threads it uses (default: 1 CPU, Ray's
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
    run_on_ray(shards, functools.partial(_same, work), finished, address=ray_address, init_kwargs=ray_init,
               threads=task_threads, todo=todo)
    return paths


def _same(work: Callable[[T], ShardResult]) -> Callable[[T], ShardResult]:
    """The work function as its own factory (:func:`protoseg.ray_shards.run_on_ray` builds one per worker)."""
    return work
