"""Writing files safely: atomic writes, the output-path guard, and the marker of folders protoseg generated.

Three rules every command follows:

- a file or folder appears complete under its final name, or not at all (:func:`atomic_path`,
  :func:`atomic_dir`), with the permissions the user's umask gives (``0644`` / ``0755`` typically);
- an output path is checked before any work starts (:func:`check_output_dir`, :func:`check_output_file`)
  and never names one of the command's inputs (:func:`check_not_inputs`);
- generated data (the parts world, tiny models) lives only in folders protoseg created and marked as its
  own (:func:`generated_dir`); anything else is read-only to protoseg.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from protoseg.errors import ProtosegError
from protoseg.version import __version__

#: Marker file of a folder protoseg generated (JSON: what generated it and the files it wrote).
GENERATED_MARKER = ".protoseg-generated"

_umask_lock = threading.Lock()


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode of a newly created file under the user's umask (``0o644`` for the usual ``022``)."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """Mode of a newly created folder under the user's umask (``0o755`` for the usual ``022``)."""
    return 0o777 & ~_umask()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (hidden, ending in ``.tmp``, so no glob of finished files
    picks it up); when the block succeeds it is renamed to ``path``, when it fails it is removed.

    The file gets the permissions of any file the user creates (umask), not ``mkstemp``'s private ``0600``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, file_mode())
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(target: str | Path, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; when the block succeeds it becomes ``target``.

    With ``replace`` an existing ``target`` is swapped out and deleted; without it, an existing
    ``target`` makes the final rename fail (``OSError``). On failure the temporary folder is removed.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    tmp.chmod(dir_mode())  # mkdtemp makes it private; the result is an ordinary folder
    try:
        yield tmp
        if replace and target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing left once renamed


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | Path, data: object) -> Path:
    """Write ``data`` as indented UTF-8 JSON (non-ASCII kept, trailing newline) atomically."""
    return write_bytes(path, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


# ---------------------------------------------------------------------------------------------- guards
def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def check_output_dir(path: str | Path, option: str = "--out") -> Path:
    """Check that ``path`` is a folder protoseg can write into, or can be created; creates nothing.

    Raises:
        ProtosegError: ``path`` (or a parent) is a file, or the place cannot be written (read-only,
            permission, a virtual file system such as ``/proc``).
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ProtosegError(f"{option} {path} is a file, not a folder; give a folder (it is created if missing)")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise ProtosegError(f"{option} {path} cannot be created: {base} is a file, not a folder")
    _probe(base, f"{option} {path}")
    return path


def _probe(folder: Path, what: str) -> None:
    """Make and remove an empty folder in ``folder`` — the only reliable test of writability (root passes
    ``os.access`` everywhere, virtual file systems refuse only when tried) — then put back the folder's
    times, so the probe leaves no trace."""
    st = folder.stat()
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".protoseg-probe-", dir=folder))
    except OSError as exc:
        raise ProtosegError(f"cannot write {what}: {exc.strerror or exc} in {folder}; "
                            "choose a folder you can write to") from None
    try:
        os.utime(folder, ns=(st.st_atime_ns, st.st_mtime_ns))
    except OSError:
        pass


def check_output_file(path: str | Path, option: str = "--out") -> Path:
    """Check that file ``path`` can be written (its folder exists or can be created); creates nothing.

    Raises:
        ProtosegError: ``path`` is a folder, or its folder cannot be written.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise ProtosegError(f"{option} {path} is a folder; give a file name")
    check_output_dir(path.parent, option=f"{option} {path}: folder")
    return path


def _identity(path: Path) -> tuple[str, tuple[int, int] | None]:
    real = os.path.realpath(path)
    try:
        st = os.stat(path)
        return real, (st.st_dev, st.st_ino)
    except OSError:
        return real, None


def check_not_inputs(outputs: Iterable[str | Path], inputs: Iterable[str | Path], option: str = "--out") -> None:
    """Refuse outputs that would overwrite an input (same path after resolving links, or the same file).

    Raises:
        ProtosegError: naming the first input an output would replace.
    """
    paths: dict[str, Path] = {}
    nodes: dict[tuple[int, int], Path] = {}
    for inp in inputs:
        real, node = _identity(Path(inp))
        paths[real] = Path(inp)
        if node is not None:
            nodes[node] = Path(inp)
    for out in outputs:
        real, node = _identity(Path(out))
        hit = paths.get(real) or (nodes.get(node) if node is not None else None)
        if hit is not None:
            raise ProtosegError(f"{option} would overwrite the input {hit} (with {out}); protoseg never "
                                f"replaces its inputs: choose another {option}")


# ---------------------------------------------------------------------------------------------- ownership
def generated_record(folder: str | Path) -> dict[str, Any] | None:
    """The marker of a folder protoseg generated (``{"by": "protoseg", "spec": ..., "files": [...]}``),
    or ``None`` when ``folder`` is not marked."""
    try:
        record = json.loads((Path(folder) / GENERATED_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("by") == "protoseg" else None


def _files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def mark_generated(folder: str | Path, spec: dict[str, Any]) -> None:
    """Write the marker into ``folder`` (listing every file in it now) — call it last, inside the temporary
    folder of :func:`atomic_dir`."""
    folder = Path(folder)
    record = {"by": "protoseg", "version": __version__, "spec": spec,
              "files": [f for f in _files_under(folder) if f != GENERATED_MARKER]}
    (folder / GENERATED_MARKER).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def check_generated_dir(target: str | Path, spec: dict[str, Any]) -> bool:
    """Whether :func:`generated_dir` would (re)write ``target`` for ``spec``; writes nothing.

    Raises:
        ProtosegError: ``target`` exists and is not protoseg's to replace.
    """
    target = Path(target)
    if not target.exists():
        return True
    record = generated_record(target) if target.is_dir() else None
    if record is None:
        raise ProtosegError(f"{target} exists and was not generated by protoseg; protoseg writes generated "
                            "data only into folders it made: choose another folder or move it away")
    if record.get("spec") == json.loads(json.dumps(spec)):
        return False
    foreign = sorted(set(_files_under(target)) - set(record.get("files", [])) - {GENERATED_MARKER})
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise ProtosegError(f"{target} was generated by protoseg with other settings but now also holds "
                            f"{target / foreign[0]}{more}; move those files away or choose another folder")
    return True


def generated_dir(target: str | Path, spec: dict[str, Any], write: Callable[[Path], None]) -> bool:
    """Make ``target`` a folder generated by ``write(folder)`` for ``spec``; returns whether it wrote.

    - ``target`` missing: ``write`` fills a temporary folder, which is marked and renamed into place;
    - ``target`` marked with the same ``spec``: left as it is;
    - ``target`` marked with another ``spec`` and holding only the files protoseg wrote: replaced;
    - anything else (a folder protoseg did not make, or one where the user added files): refused.

    Raises:
        ProtosegError: ``target`` exists and is not protoseg's to replace.
    """
    if not check_generated_dir(target, spec):
        return False
    with atomic_dir(target, replace=True) as tmp:
        write(tmp)
        mark_generated(tmp, spec)
    return True
