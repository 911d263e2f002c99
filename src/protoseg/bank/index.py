"""Text-key retrieval: inner product on L2-normalised keys (= cosine).

- :class:`FlatKeys` is the exact search of a flat bank: it reads the keys (``keys.npy``, memory-mapped or
  in memory) in blocks of rows, scores each block with one matrix product (float32 accumulation, also for
  float16 keys) and keeps the running top-``k``; nothing is read whole, so a bank of millions of keys
  opens at once and its search holds one block in memory. It returns what faiss ``IndexFlatIP`` returns
  on the same keys, with ties ordered by row (lower first).
- :class:`KeyIndex` wraps a faiss index — the approximate HNSW graph of a bank built with
  ``index_kind="hnsw"`` (or FreeDA's released ``knn.index``), read with its vectors memory-mapped.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np

from protoseg.errors import ProtosegError

INDEX_KINDS = ("flat", "hnsw")

#: Bytes of keys one search step reads (and holds) at a time.
BLOCK_BYTES = 64 << 20


class KeyIndex:
    """A faiss index over L2-normalised text keys ``[P, Dk]``.

    ``kind="flat"`` is exact (``IndexFlatIP``), as the FreeDA paper describes; ``kind="hnsw"`` is the
    approximate graph index (``IndexHNSWFlat``, inner product) whose ``efSearch`` is always set
    explicitly (FreeDA's code uses 50000; faiss' default of 16 silently loses recall).
    """

    def __init__(self, index: faiss.Index, ef_search: int = 50000):
        self.index = index
        self.ef_search = ef_search
        self._apply_ef_search()

    @classmethod
    def build(cls, keys: np.ndarray, kind: str = "flat", hnsw_m: int = 32, ef_search: int = 50000,
              ef_construction: int = 200) -> KeyIndex:
        """Index ``keys`` (``[P, Dk]``; normalised here) with the given kind."""
        keys = _normalise(keys)
        d = keys.shape[1]
        if kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = ef_construction
        else:
            raise ProtosegError(f"index kind must be one of {INDEX_KINDS}, got {kind!r}")
        index.add(keys)
        return cls(index, ef_search=ef_search)

    @classmethod
    def read(cls, path: str | Path, ef_search: int = 50000, mmap: bool = True) -> KeyIndex:
        """Read a faiss index; with ``mmap`` its stored vectors stay in the file (memory-mapped) where
        this faiss supports it (``IO_FLAG_MMAP_IFC``)."""
        flags = getattr(faiss, "IO_FLAG_MMAP_IFC", 0) if mmap else 0
        return cls(faiss.read_index(str(path), flags), ef_search=ef_search)

    def write(self, path: str | Path) -> None:
        faiss.write_index(self.index, str(path))

    def _apply_ef_search(self) -> None:
        # Downcast whatever faiss.read_index returned; never rely on the Python type name. The
        # downcast wrapper does not own the C++ object, so `self.index` (the owner) is kept as is.
        base = faiss.downcast_index(self.index)
        if hasattr(base, "hnsw"):
            base.hnsw.efSearch = int(self.ef_search)

    @property
    def kind(self) -> str:
        return "hnsw" if hasattr(faiss.downcast_index(self.index), "hnsw") else "flat"

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` keys per query: ``queries [Q, Dk]`` -> ``(scores [Q, k], ids [Q, k])``; ids ``-1`` pad."""
        queries = _normalise(queries)
        k = min(int(k), len(self))
        scores, ids = self.index.search(queries, k)
        return scores, ids


class FlatKeys:
    """Exact inner-product search over keys ``[P, Dk]`` (L2-normalised), read in blocks of rows.

    Args:
        keys: the keys, float32 or float16 — an array or a read-only memory map of a ``.npy`` file.
        block_bytes: bytes of keys per block.

    A memory-mapped file is scored straight from the mapping; each block is announced to the kernel before
    it is needed (read-ahead) and released from the process after it is scored, so a search of a file of
    many gigabytes holds about one block in memory.
    """

    kind = "flat"

    def __init__(self, keys: np.ndarray, block_bytes: int = BLOCK_BYTES):
        if keys.ndim != 2:
            raise ProtosegError(f"keys must be [P, Dk], got shape {keys.shape}")
        self.keys = keys
        self.block_rows = max(1, int(block_bytes) // max(1, keys.shape[1] * keys.dtype.itemsize))

    @classmethod
    def of(cls, keys: np.ndarray, block_bytes: int = BLOCK_BYTES) -> FlatKeys:
        return cls(keys, block_bytes)

    @property
    def dim(self) -> int:
        return int(self.keys.shape[1])

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def _blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, float32 block [n, Dk])`` over all rows, in order."""
        for start, block in row_blocks(self.keys, self.block_rows):
            yield start, block if block.dtype == np.float32 else np.asarray(block, dtype=np.float32)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` keys per query: ``queries [Q, Dk]`` -> ``(scores [Q, k], ids [Q, k])``, best first;
        equal scores in row order (lower row first). ``k`` is capped at the number of keys."""
        queries = _normalise(queries)
        Q, k = len(queries), min(int(k), len(self))
        best_scores = [np.zeros(0, np.float32) for _ in range(Q)]
        best_ids = [np.zeros(0, np.int64) for _ in range(Q)]
        if k <= 0:
            return np.zeros((Q, 0), np.float32), np.zeros((Q, 0), np.int64)
        for start, block in self._blocks():
            scores = (block @ queries.T).T  # [Q, n], float32 accumulation
            for q in range(Q):
                row = scores[q]
                # rows that can enter the top k: at least the current k-th best (ties kept: lower ids win)
                threshold = best_scores[q][-1] if len(best_scores[q]) == k else -np.inf
                candidates = np.flatnonzero(row >= threshold)
                if len(candidates) > k:
                    kth = np.partition(row[candidates], len(candidates) - k)[len(candidates) - k]
                    candidates = candidates[row[candidates] >= kth]
                if not len(candidates):
                    continue
                s = np.concatenate([best_scores[q], row[candidates]])
                i = np.concatenate([best_ids[q], candidates + start])
                order = np.lexsort((i, -s))[:k]
                best_scores[q], best_ids[q] = s[order], i[order]
        return np.stack(best_scores), np.stack(best_ids)


def _mapping(rows: np.ndarray) -> tuple[mmap.mmap, int] | None:
    """The mapping under a C-ordered read-only memory map and the byte offset of its row 0, if there is one
    (pages of a writable or copy-on-write map are never dropped: they may hold changes)."""
    mapping = getattr(rows, "_mmap", None)
    if not isinstance(rows, np.memmap) or mapping is None or not rows.flags.c_contiguous:
        return None
    if getattr(rows, "mode", None) != "r":
        return None
    if not hasattr(mmap, "MADV_DONTNEED") or not hasattr(mapping, "madvise"):
        return None
    base = np.frombuffer(mapping, dtype=np.uint8)
    return mapping, rows.__array_interface__["data"][0] - base.__array_interface__["data"][0]


def row_blocks(rows: np.ndarray, per_block: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, rows[start:start + per_block])`` over all rows, in order.

    For a memory map, each block is announced to the kernel before it is needed (read-ahead) and its pages
    are released from the process once the caller has moved on, so walking a file of many gigabytes keeps
    about one block resident.
    """
    count = len(rows)
    mapped = _mapping(rows)
    row_bytes = int(np.prod(rows.shape[1:], dtype=np.int64)) * rows.dtype.itemsize
    page = mmap.PAGESIZE

    def advise(advice: int, first: int, last: int) -> None:
        assert mapped is not None
        begin, end = mapped[1] + first * row_bytes, mapped[1] + last * row_bytes
        begin -= begin % page
        if end > begin:
            try:
                mapped[0].madvise(advice, begin, end - begin)
            except (OSError, ValueError):
                pass

    for start in range(0, count, per_block):
        stop = min(start + per_block, count)
        if mapped is not None and stop < count and hasattr(mmap, "MADV_WILLNEED"):
            advise(mmap.MADV_WILLNEED, stop, min(stop + per_block, count))
        yield start, rows[start:stop]
        if mapped is not None:  # a read-only file mapping: dropped pages are read again if ever needed
            advise(mmap.MADV_DONTNEED, start, stop)


def flat_header(path: str | Path) -> tuple[int, int]:
    """``(dim, count)`` of a faiss ``IndexFlatIP`` file, checked against the file's size, without reading
    its vectors.

    Raises:
        ProtosegError: not a flat inner-product index, or a file whose size does not match its header.
    """
    with open(path, "rb") as handle:
        head = handle.read(45)
    if len(head) < 45 or head[:4] != b"IxFI":
        raise ProtosegError("not a flat inner-product faiss index")
    dim, count, _, _, _, metric = struct.unpack("<iqqq?i", head[4:37])
    (floats,) = struct.unpack("<Q", head[37:45])
    if metric != faiss.METRIC_INNER_PRODUCT or dim <= 0 or count < 0 or floats != dim * count:
        raise ProtosegError("inconsistent flat index header")
    if os.path.getsize(path) != 45 + 4 * floats:
        raise ProtosegError("the index file is truncated")
    return dim, count


def is_flat_file(path: str | Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == b"IxFI"


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-6))
