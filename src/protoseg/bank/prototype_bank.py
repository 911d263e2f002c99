"""The prototype bank in memory: create, load (a folder or a Hub address), look up, grow and merge.

:func:`load_bank` is the one loader: ``hf://owner/name[@revision]`` is downloaded and verified first
(:mod:`protoseg.bank.hub`), then the folder is read and validated (:mod:`protoseg.bank.storage`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from protoseg.bank.columns import Categories
from protoseg.bank.hub import fetch_bank, hub_spec
from protoseg.bank.storage import (
    TABLE_COLUMNS,
    BankData,
    BankManifest,
    complete_table,
    read_bank_folder,
    short_id,
    write_bank_folder,
)
from protoseg.errors import ProtosegError
from protoseg.runs import tree_digest


def load_bank(source: str | Path, mmap: bool = True) -> PrototypeBank:
    """Read and validate a bank; prototypes are memory-mapped unless ``mmap=False``.

    ``source`` is a bank folder or ``hf://owner/name[@revision]``: a Hugging Face dataset repository,
    downloaded into the Hugging Face cache and verified against its manifest first
    (:func:`protoseg.bank.hub.fetch_bank`). ``bank.source`` keeps what was given, ``bank.path`` the folder
    read.

    Raises:
        ProtosegError: a bad Hub address or a failed download; not a bank, another format version, or a
            damaged bank (manifest schema, row counts or dimensions that disagree, an unreadable file or
            faiss index) — with the fix.
    """
    given, folder = str(source), source
    spec = hub_spec(source)
    if spec is not None:
        given, folder = spec.uri, fetch_bank(spec)
    bank = read_bank_folder(folder, mmap, PrototypeBank)
    bank.source = given
    return bank


class PrototypeBank(BankData):
    """Visual prototypes with metadata and optional text keys (the attributes of
    :class:`~protoseg.bank.storage.BankData`), with the operations of the matchers and of growing banks.
    """

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(cls, prototypes: np.ndarray, table: dict[str, Any], *, method: str, feature_encoder: str,
               keys: np.ndarray | None = None, text_encoder: str | None = None, dtype: str = "float16",
               index_kind: str = "flat", ef_search: int = 50000,
               settings: dict[str, Any] | None = None) -> PrototypeBank:
        """Assemble a bank in memory (``prototypes [P, D]``, ``keys [P, Dk]`` or ``None``)."""
        prototypes = np.asarray(prototypes)
        if prototypes.ndim != 2:
            raise ProtosegError(f"prototypes must be [P, D], got shape {prototypes.shape}")
        if dtype not in ("float16", "float32"):
            raise ProtosegError(f"bank dtype must be float16 or float32, got {dtype!r}")
        count = prototypes.shape[0]
        full = complete_table(table, count)
        finite = np.isfinite(prototypes).all(1)
        if not finite.all():
            raise ProtosegError(f"{int((~finite).sum())} prototypes contain non-finite values")
        if keys is not None:
            keys = np.asarray(keys, dtype=np.float32)
            if keys.shape[0] != count:
                raise ProtosegError(f"{keys.shape[0]} keys for {count} prototypes")
            keys = keys / np.maximum(np.linalg.norm(keys, axis=1, keepdims=True), 1e-6)
        manifest = BankManifest(
            method=method, feature_encoder=feature_encoder, feature_dim=int(prototypes.shape[1]),
            count=count, classes=sorted(set(full["label"].tolist())), dtype=dtype,
            text_encoder=text_encoder if keys is not None else None,
            key_dim=int(keys.shape[1]) if keys is not None else None,
            index_kind=index_kind if keys is not None else None, ef_search=ef_search,
            settings=dict(settings or {}),
        )
        return cls(prototypes.astype(dtype, copy=False), full, manifest, keys)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the bank atomically to directory ``path``; returns it.

        With ``overwrite`` an existing *bank* at ``path`` is replaced; any other existing file or folder is
        refused (protoseg never deletes what it did not make).
        """
        return write_bank_folder(self, path, overwrite)

    @classmethod
    def load(cls, source: str | Path, mmap: bool = True) -> PrototypeBank:
        """:func:`load_bank`: a bank folder or ``hf://owner/name[@revision]``."""
        return load_bank(source, mmap)

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this bank's contents in run fingerprints: its ``bank_id`` and, for a bank loaded
        from disk, the sizes and modification times of its files (so a bank edited or rebuilt in place
        never passes for the old one); for a bank only in memory, a hash of its arrays."""
        if self.path is not None:
            return {"bank_id": self.manifest.bank_id, "files": tree_digest(self.path)}
        h = hashlib.sha256(np.ascontiguousarray(self.prototypes).tobytes())
        h.update("\0".join(self.table["label"].tolist()).encode())
        if self.keys is not None:
            h.update(np.ascontiguousarray(self.keys).tobytes())
        return {"bank_id": None, "content": h.hexdigest()}

    def check_classes(self, classes: Sequence[str]) -> None:
        """Check that every class this bank serves *by name* among ``classes`` has a finite prototype.

        Classes the bank does not name are left to the matcher (retrieval by text key, or its own error).

        Raises:
            ProtosegError: naming the classes whose prototypes are all NaN or infinite.
        """
        bad = [name for name in classes if len(rows := self.rows_of(name)) and not self.finite(rows).any()]
        if bad:
            raise ProtosegError(f"every prototype of {', '.join(map(repr, bad))} in this bank is NaN or infinite; "
                                "rebuild those classes (`protoseg bank extend BANK NEW --replace`) or leave them out")

    def finite(self, rows: np.ndarray) -> np.ndarray:
        """bool ``[len(rows)]``: whether each prototype of ``rows`` is finite (reads only those rows)."""
        return np.isfinite(self.vectors(rows)).all(1)

    # ------------------------------------------------------------------ compatibility
    def check_compatible(self, feature_encoder: str, feature_dim: int, text_encoder: str | None = None) -> None:
        """Raise :class:`ProtosegError` naming every mismatch with the models in use."""
        problems = []
        m = self.manifest
        if short_id(m.feature_encoder) != short_id(feature_encoder):
            problems.append(f"its prototypes come from {m.feature_encoder!r} but the features in use come "
                            f"from {feature_encoder!r}")
        if m.feature_dim != feature_dim:
            problems.append(f"its prototypes are {m.feature_dim}-d but the features in use are {feature_dim}-d")
        if (text_encoder is not None and m.text_encoder is not None
                and short_id(m.text_encoder) != short_id(text_encoder)):
            problems.append(f"its text keys come from {m.text_encoder!r} but the text encoder in use is "
                            f"{text_encoder!r}")
        if problems:
            raise ProtosegError("bank does not match the models: " + "; ".join(problems)
                                + " — use the preset the bank was built with, or rebuild the bank")

    # ------------------------------------------------------------------ access
    @property
    def labels(self) -> Categories:
        return self.table["label"]

    def rows_of(self, label: str, level: str | None = None) -> np.ndarray:
        """Row indices whose ``label`` equals ``label`` (and ``level``, when given); compares category
        codes, not strings."""
        hit = self.table["label"] == label
        if level is not None:
            hit &= self.table["level"] == level
        return np.flatnonzero(hit)

    def retrieve(self, queries: np.ndarray, k: int) -> list[np.ndarray]:
        """Ids of the ``k`` keys nearest each query (``[Q, Dk]``), padding (-1) removed."""
        _, ids = self.index.search(queries, k)
        return [row[row >= 0] for row in ids]

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """Prototypes of ``rows`` as float32 ``[n, D]`` (reads only those rows of a memory map)."""
        return np.asarray(self.prototypes[np.asarray(rows, dtype=np.int64)], dtype=np.float32)

    # ------------------------------------------------------------------ growing
    def extend(self, other: PrototypeBank, replace_existing: bool = False) -> PrototypeBank:
        """A new bank with ``other``'s classes added.

        Classes present in both are an error unless ``replace_existing``, which drops this bank's rows of
        those classes first.
        """
        overlap = sorted(set(self.classes) & set(other.classes))
        base = self
        if overlap:
            if not replace_existing:
                raise ProtosegError(f"classes already in the bank: {', '.join(overlap)}; pass "
                                    "replace_existing=True (--replace) to rebuild them, or merge instead")
            keep = np.flatnonzero(~self.table["label"].isin(overlap))
            base = self.subset(keep)
        return PrototypeBank.merge([base, other])

    def subset(self, rows: np.ndarray) -> PrototypeBank:
        """A new in-memory bank with only ``rows``."""
        rows = np.asarray(rows, dtype=np.int64)
        table = {k: v[rows] for k, v in self.table.items()}
        return PrototypeBank.create(
            np.asarray(self.prototypes[rows]), table, method=self.manifest.method,
            feature_encoder=self.manifest.feature_encoder,
            keys=None if self.keys is None else self.keys[rows], text_encoder=self.manifest.text_encoder,
            dtype=self.manifest.dtype, index_kind=self.manifest.index_kind or "flat",
            ef_search=self.manifest.ef_search, settings=self.manifest.settings)

    @staticmethod
    def merge(banks: list[PrototypeBank]) -> PrototypeBank:
        """Union of banks built with the same encoders; image ids are offset to stay unique."""
        if not banks:
            raise ProtosegError("nothing to merge")
        first = banks[0].manifest
        for b in banks[1:]:
            b.check_compatible(first.feature_encoder, first.feature_dim, first.text_encoder)
            if (b.keys is None) != (banks[0].keys is None):
                raise ProtosegError("cannot merge a bank with text keys and a bank without them")
        table: dict[str, list[Any]] = {k: [] for k in TABLE_COLUMNS}
        offset = 0
        for b in banks:
            for k in TABLE_COLUMNS:
                col = b.table[k]
                if k == "image_id":
                    col = np.where(col >= 0, col + offset, col)
                table[k].append(col)
            offset = max(offset, int(table["image_id"][-1].max(initial=-1)) + 1)
        methods = sorted({b.manifest.method for b in banks})
        dtype = np.result_type(*[b.prototypes.dtype for b in banks])
        return PrototypeBank.create(
            np.concatenate([np.asarray(b.prototypes, dtype) for b in banks]),
            {k: Categories.concat(v) if TABLE_COLUMNS[k] is str else np.concatenate(v) for k, v in table.items()},
            method=methods[0] if len(methods) == 1 else "+".join(methods),
            feature_encoder=first.feature_encoder,
            keys=None if banks[0].keys is None else np.concatenate([b.keys for b in banks]),
            text_encoder=first.text_encoder, dtype=first.dtype, index_kind=first.index_kind or "flat",
            ef_search=first.ef_search,
            settings={"merged_from": [b.manifest.settings for b in banks]} if len(banks) > 1
            else first.settings)

