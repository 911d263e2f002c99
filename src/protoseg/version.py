"""protoseg's version, read from the installed package's metadata (``pyproject.toml`` is the one source),
and a digest of its code, so run fingerprints notice a code change even where the version stays the same."""

from __future__ import annotations

import functools
import hashlib
from importlib import metadata
from pathlib import Path

try:
    __version__ = metadata.version("protoseg")
except metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

#: Files whose contents decide protoseg's results: code and packaged data.
_CODE_SUFFIXES = (".py", ".json", ".csv", ".txt")


@functools.cache
def code_digest() -> str:
    """SHA-256 (first 16 hex digits) over the relative path and bytes of every source and data file of the
    imported protoseg package, in path order; computed once per process (~100 files, milliseconds)."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix in _CODE_SUFFIXES and "__pycache__" not in p.parts):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build_id() -> str:
    """The version plus the code digest (``"0.1.0+3f2a…"``): what run fingerprints record."""
    return f"{__version__}+{code_digest()}"
