"""Validating, parsing and reading class lists.

A query class is a name (``"car"``) or a sequence of synonyms (``["person", "man", "woman"]``, the
SCLIP-family class lists); :func:`normalize_classes` turns a list of them into a :class:`ClassList`, the one
form the online stage works with. A class's score is the max over its names' scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from protoseg.errors import ProtosegError

if TYPE_CHECKING:
    import torch

#: One query class: a name, or a non-empty sequence of synonyms.
ClassSpec = str | Sequence[str]


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


@dataclass(frozen=True)
class ClassList:
    """A validated class list: each class has one or more names (synonyms).

    Attributes:
        synonyms: per class, its names in query order (the first names the class in outputs).
    """

    synonyms: tuple[tuple[str, ...], ...]

    def __len__(self) -> int:
        return len(self.synonyms)

    @property
    def labels(self) -> list[str]:
        """One name per class (its first): what outputs call the class."""
        return [names[0] for names in self.synonyms]

    @property
    def names(self) -> list[str]:
        """Every name, class by class (the strings a matcher scores)."""
        return [name for names in self.synonyms for name in names]

    @property
    def owners(self) -> list[int]:
        """The class index of each of :attr:`names` (SCLIP's ``query_idx``)."""
        return [i for i, names in enumerate(self.synonyms) for _ in names]

    @property
    def plain(self) -> bool:
        """Every class has exactly one name (the reduction is the identity)."""
        return all(len(names) == 1 for names in self.synonyms)

    def keep(self, served: Sequence[bool]) -> ClassList:
        """Drop the names that are not ``served`` (one flag per :attr:`names`), except that a class none of
        whose names is served keeps them all: whatever cannot serve it reports the class as a whole.

        This is the rule for banks that look prototypes up by exact label: a class is served when any of
        its synonyms is.
        """
        flags = list(served)
        if len(flags) != len(self.names):
            raise ValueError(f"{len(flags)} flags for {len(self.names)} names")
        kept, at = [], 0
        for names in self.synonyms:
            mine = flags[at:at + len(names)]
            at += len(names)
            kept.append(tuple(n for n, ok in zip(names, mine, strict=True) if ok) if any(mine) else names)
        return ClassList(tuple(kept))

    def reduce(self, scores: torch.Tensor) -> torch.Tensor:
        """Per-name scores ``[len(names), ...]`` -> per-class ``[len(self), ...]``: max over each class's
        synonyms (the input itself when every class has one name)."""
        import torch  # import time: protoseg.config imports this module and loads no torch

        if scores.shape[0] != len(self.names):
            raise ValueError(f"{scores.shape[0]} score channels for {len(self.names)} names")
        if self.plain:
            return scores
        out, at = [], 0
        for names in self.synonyms:
            out.append(scores[at] if len(names) == 1 else scores[at:at + len(names)].amax(0))
            at += len(names)
        return torch.stack(out)


def normalize_classes(classes: Sequence[ClassSpec] | ClassList) -> ClassList:
    """The :class:`ClassList` of ``classes``: each element a name or a sequence of synonyms.

    Rules (as :func:`validate_classes` for plain names): at least one class; every name a non-empty string
    (kept byte-identical); no name twice, within a class or across classes; ``"background"`` is not a
    class to query (background is a rule of :meth:`protoseg.segment.Segmenter.segment`).

    Raises:
        ProtosegError: with the offending names.
    """
    if isinstance(classes, ClassList):
        return classes
    if isinstance(classes, str):
        raise ProtosegError("classes must be a list of names, not one string; use parse_class_list()")
    synonyms: list[tuple[str, ...]] = []
    for i, spec in enumerate(classes):
        if isinstance(spec, str):
            synonyms.append((spec,))
            continue
        if not isinstance(spec, Sequence) or not spec:
            raise ProtosegError(f"class {i + 1} of the class list must be a name or a non-empty list of synonyms; "
                                f"got {spec!r}")
        synonyms.append(tuple(spec))
    flat = [name for names in synonyms for name in names]
    if len(flat) != len(synonyms):  # synonyms given: say which names repeat, and where
        odd = [name for name in flat if not isinstance(name, str)]
        if odd:
            raise ProtosegError(f"class names must be strings; got {odd!r}")
        seen: dict[str, int] = {}
        repeated = []
        for i, names in enumerate(synonyms):
            for name in names:
                if name in seen:
                    repeated.append(f"{name!r} (class {seen[name] + 1} and class {i + 1})" if seen[name] != i
                                    else f"{name!r} (twice in class {i + 1})")
                seen.setdefault(name, i)
        if repeated:
            raise ProtosegError(f"a name may appear once in a class list: {', '.join(repeated)}")
    validate_classes(flat)
    return ClassList(tuple(synonyms))


def normalize_background(names: Sequence[str]) -> tuple[str, ...]:
    """Validate the names queried *as background* (the probability rule): strings, non-empty, none twice.

    ``"background"`` itself is allowed here, and a background name may also name a class (SCLIP's COCO-Object
    list has ``bed`` in both; see :meth:`protoseg.segment.Segmenter.segment` for how a tie is decided).
    """
    if isinstance(names, str):
        raise ProtosegError("background names must be a list of names, not one string")
    out = tuple(names)
    bad = [i for i, name in enumerate(out) if not isinstance(name, str) or not name.strip()]
    if bad:
        raise ProtosegError(f"empty background name at position(s) {', '.join(str(i + 1) for i in bad)} of "
                            f"{list(out)!r}")
    if len(set(out)) != len(out):
        raise ProtosegError(f"a background name appears twice in {list(out)!r}")
    return out


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
