"""String columns of a bank table as categories: integer codes into a list of distinct names.

A bank of two million prototypes names perhaps twenty thousand nouns; holding one Python string per row
costs seconds to load and hundreds of megabytes, and looking a label up compares strings row by row.
:class:`Categories` keeps ``codes`` (int32, one per row) and the distinct ``names`` (an Arrow string
array, turned into Python strings only when asked), so ``column == "cat"`` is one integer comparison.

It behaves like the 1-d object array it replaces where the code base uses one: ``col == name`` /
``col != name`` give bool arrays, ``col[i]`` a string, ``col[rows]`` / ``col[mask]`` a
:class:`Categories`, ``len``, iteration, ``tolist()``, ``astype(str)`` and ``np.asarray(col)`` (an object
array) work as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from protoseg.errors import ProtosegError


class Categories:
    """A string column: ``codes [n]`` int32 indexing ``names`` (distinct strings).

    Args:
        codes: int ``[n]`` in ``0..len(names)-1``.
        names: the distinct names (an Arrow string array or any sequence of ``str``; must not repeat).
    """

    __slots__ = ("codes", "_arrow", "_names", "_lookup")
    __hash__ = None  # type: ignore[assignment]  # mutable-array semantics, like numpy

    def __init__(self, codes: np.ndarray, names: pa.Array | Sequence[str]):
        self.codes = np.asarray(codes, dtype=np.int32)
        if self.codes.ndim != 1:
            raise ProtosegError(f"category codes must be 1-d, got shape {self.codes.shape}")
        self._arrow = names if isinstance(names, pa.Array) else pa.array(list(names), pa.string())
        self._names: np.ndarray | None = None
        self._lookup: dict[str, int] | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def encode(cls, values: Any) -> Categories:
        """Categories of any sequence of strings (a :class:`Categories` is returned as is)."""
        if isinstance(values, Categories):
            return values
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        if not isinstance(values, pa.Array):
            values = pa.array(np.asarray(values, dtype=object) if not isinstance(values, list) else values,
                              pa.string())
        if pa.types.is_dictionary(values.type):
            return cls.from_arrow(values)
        encoded = values.dictionary_encode()
        return cls(encoded.indices.to_numpy(zero_copy_only=False), encoded.dictionary)

    @classmethod
    def from_arrow(cls, array: pa.Array | pa.ChunkedArray) -> Categories:
        """From an Arrow dictionary (or string) column, e.g. one read from parquet with ``read_dictionary``."""
        if isinstance(array, pa.ChunkedArray):
            if not pa.types.is_dictionary(array.type):
                return cls.encode(array.combine_chunks())
            chunks = array.unify_dictionaries().chunks
            if not chunks:
                return cls(np.zeros(0, np.int32), pa.array([], pa.string()))
            codes = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in chunks])
            names = chunks[0].dictionary
        elif pa.types.is_dictionary(array.type):
            codes, names = array.indices.to_numpy(zero_copy_only=False), array.dictionary
        else:
            return cls.encode(array)
        if pa.types.is_large_string(names.type):
            names = names.cast(pa.string())
        distinct = pc.unique(names)
        if len(distinct) != len(names):  # a dictionary that repeats a name: map codes to one entry each
            codes = pc.index_in(names, distinct).to_numpy(zero_copy_only=False)[codes]
            names = distinct
        return cls(codes, names)

    @classmethod
    def concat(cls, columns: Iterable[Categories | Sequence[str]]) -> Categories:
        """One column of the rows of ``columns`` in order (names unified)."""
        parts = [cls.encode(c) for c in columns]
        if not parts:
            return cls(np.zeros(0, np.int32), [])
        chunked = pa.chunked_array([p.to_arrow() for p in parts], type=pa.dictionary(pa.int32(), pa.string()))
        return cls.from_arrow(chunked)

    def to_arrow(self) -> pa.DictionaryArray:
        return pa.DictionaryArray.from_arrays(pa.array(self.codes, pa.int32()), self._arrow)

    # ------------------------------------------------------------------ names and codes
    @property
    def names(self) -> np.ndarray:
        """The distinct names, object ``[len(names)]`` (made on first use)."""
        if self._names is None:
            self._names = np.asarray(self._arrow.to_pylist(), dtype=object).reshape(-1)
        return self._names

    def code(self, name: str) -> int:
        """The code of ``name``, or -1 when no row has it."""
        if self._lookup is None:
            if len(self._arrow) < 64:
                return int(pc.index(self._arrow, pa.scalar(name, pa.string())).as_py())
            self._lookup = {n: i for i, n in enumerate(self.names.tolist())}
        return self._lookup.get(name, -1)

    def isin(self, names: Iterable[str]) -> np.ndarray:
        """bool ``[n]``: whether each row's name is one of ``names``."""
        wanted = [c for c in (self.code(str(n)) for n in names) if c >= 0]
        return np.isin(self.codes, np.asarray(wanted, dtype=np.int32))

    def counts(self) -> dict[str, int]:
        """Rows per name, for the names some row has (in the order of the names)."""
        counts = np.bincount(self.codes, minlength=len(self._arrow))
        present = np.flatnonzero(counts)
        return dict(zip(self.names[present].tolist(), counts[present].tolist(), strict=True))

    # ------------------------------------------------------------------ array behaviour
    @property
    def shape(self) -> tuple[int, ...]:
        return self.codes.shape

    @property
    def ndim(self) -> int:
        return 1

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(object)

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, np.integer)):
            return self.names[self.codes[key]]
        return Categories(self.codes[key], self._arrow)._share(self)

    def _share(self, other: Categories) -> Categories:
        self._names, self._lookup = other._names, other._lookup
        return self

    def __eq__(self, other: object) -> np.ndarray:  # type: ignore[override]
        if isinstance(other, str):
            return self.codes == self.code(other)
        return np.asarray(self) == np.asarray(other, dtype=object)

    def __ne__(self, other: object) -> np.ndarray:  # type: ignore[override]
        return ~self.__eq__(other)

    def __iter__(self) -> Iterator[str]:
        return iter(self.tolist())

    def tolist(self) -> list[str]:
        return self.names[self.codes].tolist()

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.names[self.codes]
        return out if dtype is None else out.astype(dtype)

    def astype(self, dtype: Any) -> np.ndarray:
        return np.asarray(self).astype(dtype)

    def __repr__(self) -> str:
        head = ", ".join(map(repr, self[: min(len(self), 5)].tolist()))
        return f"Categories([{head}{', …' if len(self) > 5 else ''}], {len(self)} rows, {len(self._arrow)} names)"
