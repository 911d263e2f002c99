"""Text-key retrieval with faiss (inner product on L2-normalised keys = cosine)."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

INDEX_KINDS = ("flat", "hnsw")


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
            raise ValueError(f"index kind must be one of {INDEX_KINDS}, got {kind!r}")
        index.add(keys)
        return cls(index, ef_search=ef_search)

    @classmethod
    def read(cls, path: str | Path, ef_search: int = 50000) -> KeyIndex:
        return cls(faiss.read_index(str(path)), ef_search=ef_search)

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


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-6))
