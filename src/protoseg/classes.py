"""Validating, parsing and reading class lists."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from protoseg.errors import ProtosegError


def parse_class_list(text: str) -> list[str]:
    """``"road, car,  sky"`` -> ``["road", "car", "sky"]`` (comma-separated, whitespace stripped)."""
    return validate_classes([part.strip() for part in text.split(",")])


def validate_classes(classes: Sequence[str]) -> list[str]:
    """Check a class list: non-empty, no empty names, no duplicates. Names are kept byte-identical.

    Raises:
        ProtosegError: with the offending names.
    """
    if isinstance(classes, str):
        raise ProtosegError("classes must be a list of names, not one string; use parse_class_list()")
    names = list(classes)
    if not names:
        raise ProtosegError("no classes given; name at least one, e.g. --classes \"cat, sofa, floor\"")
    empty = [i for i, name in enumerate(names) if not isinstance(name, str) or not name.strip()]
    if empty:
        raise ProtosegError(f"empty class name at position(s) {', '.join(str(i + 1) for i in empty)} of "
                            f"{names!r}; remove stray commas")
    seen: set[str] = set()
    dupes = sorted({n for n in names if n in seen or seen.add(n)})  # type: ignore[func-returns-value]
    if dupes:
        raise ProtosegError(f"duplicate class name(s): {', '.join(dupes)}; each class must appear once")
    if "background" in names:
        raise ProtosegError("'background' is not a class to query; use --background (a score threshold) "
                            "to label pixels that match no class")
    return names


def read_class_file(path: str | Path, indexed: bool = False) -> list[str]:
    """The class names in a text file, one a line.

    - ``indexed=False`` (a query list, ``--classes-file``): blank lines and ``#`` comments are skipped and
      names are stripped.
    - ``indexed=True`` (an examples folder's ``classes.txt``): line ``i`` names mask value ``i``, so every
      line counts and names are kept byte-identical apart from the line ending (trailing blank lines
      are dropped; a blank line before the last name is an error).

    Raises:
        ProtosegError: missing file, or an invalid list (:func:`validate_classes`).
    """
    path = Path(path)
    if not path.is_file():
        raise ProtosegError(f"class list {path} is missing" if indexed else f"classes file not found: {path}")
    lines = [line.rstrip("\r\n") for line in path.read_text(encoding="utf-8").splitlines()]
    if not indexed:
        return validate_classes([s for s in (line.strip() for line in lines) if s and not s.startswith("#")])
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines or any(not n.strip() for n in lines):
        raise ProtosegError(f"{path} must list one non-empty class name per line")
    if len(set(lines)) != len(lines):
        raise ProtosegError(f"{path} lists a class twice")
    return lines
