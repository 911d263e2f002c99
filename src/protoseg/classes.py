"""Validating and parsing class lists."""

from __future__ import annotations

from collections.abc import Sequence

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
