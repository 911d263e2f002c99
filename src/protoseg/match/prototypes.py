"""Turning bank rows into per-class prototypes (FreeDA retrieval + aggregation)."""

from __future__ import annotations

import faiss
import numpy as np

from protoseg.bank import PrototypeBank
from protoseg.errors import ProtosegError

AGGREGATIONS = ("mean", "kmeans")


def aggregate(vectors: np.ndarray, how: str = "mean", clusters: int = 1, seed: int = 42) -> np.ndarray:
    """Reduce a class's retrieved prototypes ``[n, D]`` to ``[M, D]``.

    ``"mean"``: the arithmetic mean of the raw (un-normalised) prototypes (FreeDA's released setting),
    ``M = 1``. ``"kmeans"``: faiss k-means centroids as FreeDA's disabled path does (``niter=20``,
    ``nredo=10``, ``seed=42``, euclidean), ``M = min(clusters, n)``.
    Non-finite rows are dropped first.
    """
    vectors = vectors[np.isfinite(vectors).all(1)].astype(np.float32)
    if len(vectors) == 0:
        raise ValueError("no finite prototypes to aggregate")
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {how!r}")
    k = min(clusters, len(vectors)) if how == "kmeans" else 1
    if k == 1:  # k-means with one centroid converges to the mean
        return vectors.mean(0, keepdims=True)
    km = faiss.Kmeans(vectors.shape[1], k, niter=20, nredo=10, seed=seed, verbose=False, min_points_per_centroid=1)
    km.train(np.ascontiguousarray(vectors))
    return km.centroids.astype(np.float32)


def served_names(bank: PrototypeBank, names: list[str], retrieval: bool, level: str | None = None) -> list[bool]:
    """Whether :func:`class_rows` can serve each name: every name when prototypes are retrieved by text key
    (``retrieval``); with lookup by exact label, the names the bank labels (at ``level``) with at least one
    finite prototype."""
    if retrieval:
        return [True] * len(names)
    return [bool(len(rows := bank.rows_of(name, level))) and bool(bank.finite(rows).any()) for name in names]


def class_rows(bank: PrototypeBank, classes: list[str], text_vectors: np.ndarray | None, k: int,
               level: str | None = None) -> list[np.ndarray]:
    """Bank rows serving each class.

    With ``text_vectors`` (``[C, Dk]``, CLIP class embeddings) and a bank with text keys, the ``k`` keys
    nearest each class are retrieved (FreeDA). Otherwise rows are looked up by exact label. Rows whose
    prototype is not finite (a damaged bank) are left out.

    Raises:
        ProtosegError: a class the bank cannot serve (label lookup with no rows, or only non-finite ones).
    """
    return _finite_only(bank, classes, _lookup(bank, classes, text_vectors, k, level))


def _finite_only(bank: PrototypeBank, classes: list[str], rows: list[np.ndarray]) -> list[np.ndarray]:
    kept = [r[bank.finite(r)] for r in rows]
    bad = [name for name, r in zip(classes, kept, strict=True) if len(r) == 0]
    if bad:
        raise ProtosegError(f"every prototype serving {', '.join(map(repr, bad))} in this bank is NaN or infinite; "
                            "rebuild those classes (`protoseg bank extend BANK NEW --replace`) or leave them out")
    return kept


def _lookup(bank: PrototypeBank, classes: list[str], text_vectors: np.ndarray | None, k: int,
            level: str | None) -> list[np.ndarray]:
    if text_vectors is not None and bank.keys is not None:
        rows = bank.retrieve(text_vectors, k)
        if level is not None:
            rows = [r[bank.table["level"][r] == level] for r in rows]
        empty = [name for name, r in zip(classes, rows, strict=True) if len(r) == 0]
        if empty:
            raise ProtosegError(f"retrieval found no {level}-level prototypes for {', '.join(map(repr, empty))}; "
                                "the bank holds only other kinds of prototypes for these queries")
        return rows
    rows = [bank.rows_of(name, level) for name in classes]
    missing = [name for name, r in zip(classes, rows, strict=True) if len(r) == 0]
    if missing:
        available = bank.classes
        raise ProtosegError(
            f"the bank has no prototypes for {', '.join(repr(m) for m in missing)}; it serves "
            f"{len(available)} classes ({', '.join(available[:12])}{', …' if len(available) > 12 else ''}). "
            "Generate them with the bank's build recipe: `protoseg segment --generate-missing` (Python: "
            "`segmenter.ensure_classes(classes)`), extend it with `protoseg build-bank` / `protoseg bank "
            "from-examples` + `protoseg bank extend`, or use a bank with text keys")
    return rows
