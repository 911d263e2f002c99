"""The on-disk prototype bank: reading and writing bank folders.

A bank is a directory (no pickle anywhere)::

    BANK/
      manifest.json      format version, encoders, dims, dtype, counts, classes, build settings
      prototypes.npy     [P, D] float16/float32 visual prototypes (memory-mapped on load)
      table.parquet      one row per prototype, columnar metadata (see TABLE_COLUMNS); string
                         columns dictionary-encoded (codes + distinct names)
      keys.npy           [P, Dk] float32 L2-normalised text keys (memory-mapped)     (optional)
      keys.faiss         approximate (HNSW) faiss index over keys.npy                (optional)

Row ``i`` of every file describes the same prototype. The manifest lists the SHA-256 of every data file
(``files``; :func:`verify_files` checks the contents against them, e.g. after a download). Banks are
written to a temporary sibling directory and renamed into place (:func:`write_bank_folder`), so an
interrupted save never leaves a directory that loads. The manifest's ``bank_id`` is a hash of the other
files' contents, written last: it names the bank in run fingerprints and segmentation sidecars, so results
computed with another bank are never reused.

:func:`read_bank_folder` validates everything before a model loads: the manifest's schema and types
(unknown keys of a newer minor version are tolerated), that prototypes, table, keys and faiss index have
the same row count and the stated dimensions, and that the index is readable.

Reading loads no bulk data: prototypes and keys are memory maps, string columns become
:class:`~protoseg.bank.columns.Categories` (int32 codes + distinct names, so a label lookup compares
integers), a flat bank is searched block by block straight from ``keys.npy``
(:class:`~protoseg.bank.index.FlatKeys`) and an HNSW index is read with its vectors memory-mapped. Flat
banks are no longer written with a ``keys.faiss`` (it duplicated ``keys.npy``); one written by an older
protoseg is checked from its header and size and otherwise left unread. :func:`write_bank_folder`
streams arrays into the new files block by block.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from protoseg.atomic import atomic_dir, check_output_dir
from protoseg.bank.columns import Categories
from protoseg.bank.index import BLOCK_BYTES, FlatKeys, KeyIndex, flat_header, is_flat_file, row_blocks
from protoseg.bank.layout import DATA_FILES, MANIFEST_FILE
from protoseg.errors import ProtosegError

FORMAT_VERSION = 1

#: Metadata columns and their dtypes. ``label``: the class (or noun) a prototype represents;
#: ``text``: caption / description / source; ``image_id``: support image it came from;
#: ``part_id``: part (superpixel or fine cluster) index, -1 for whole-object prototypes;
#: ``level``: ``"whole"`` or ``"part"``; ``area``: pixels pooled; ``supply``: transport supply units
#: (DPSM eq. 7/12); ``coarse_cluster`` / ``fine_cluster``: DPSM cluster ids (-1 when unclustered).
TABLE_COLUMNS: dict[str, Any] = {
    "label": str,
    "text": str,
    "image_id": np.int64,
    "part_id": np.int32,
    "level": str,
    "area": np.float32,
    "supply": np.float32,
    "coarse_cluster": np.int32,
    "fine_cluster": np.int32,
}
_DEFAULTS: dict[str, Any] = {"label": "", "text": "", "image_id": -1, "part_id": -1, "level": "whole",
                             "area": 0.0, "supply": 0.0, "coarse_cluster": -1, "fine_cluster": -1}


def short_id(name_or_path: str) -> str:
    """The comparable identity of weights: ``facebook/dinov2-base`` and ``/models/dinov2-base`` -> ``dinov2-base``."""
    return Path(str(name_or_path).rstrip("/")).name


@dataclass
class BankManifest:
    """What a bank is and what it is compatible with."""

    method: str
    feature_encoder: str
    feature_dim: int
    count: int
    classes: list[str]
    dtype: str = "float16"
    text_encoder: str | None = None
    key_dim: int | None = None
    index_kind: str | None = None
    ef_search: int = 50000
    settings: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    bank_id: str | None = None
    files: dict[str, str] = field(default_factory=dict)


def build_records(settings: dict[str, Any]) -> list[dict[str, Any]]:
    """The build settings of each part of a bank, from its manifest ``settings``: the settings themselves,
    or — for a bank grown by merging or extending — those of every bank it was merged from (recursively,
    ``merged_from``), in row order."""
    parts = settings.get("merged_from")
    if isinstance(parts, list):
        return [r for part in parts if isinstance(part, dict) for r in build_records(part)]
    return [settings]


#: Type(s) each manifest field must have (``None`` allowed where the default is ``None``).
_MANIFEST_TYPES: dict[str, tuple[type, ...]] = {
    "method": (str,), "feature_encoder": (str,), "feature_dim": (int,), "count": (int,), "classes": (list,),
    "dtype": (str,), "text_encoder": (str,), "key_dim": (int,), "index_kind": (str,), "ef_search": (int,),
    "settings": (dict,), "format_version": (int,), "bank_id": (str,), "files": (dict,),
}


def _damaged(path: Path, problem: str) -> ProtosegError:
    return ProtosegError(f"bank {path} is damaged: {problem}; rebuild it (or copy it again)")


def read_manifest(path: str | Path) -> BankManifest:
    """Read and validate ``BANK/manifest.json``: a JSON object with every required field of the right type.

    Keys this protoseg does not know (written by a newer minor version) are ignored.

    Raises:
        ProtosegError: the manifest is missing, not JSON, of another format version, or a field is missing
            or has the wrong type.
    """
    bank = Path(path)
    manifest_path = bank / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ProtosegError(f"{bank} is not a prototype bank (no manifest.json); build one with "
                            "`protoseg build-bank` or `protoseg bank from-examples`")
    try:
        raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _damaged(bank, f"manifest.json is not readable JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise _damaged(bank, f"manifest.json holds a JSON {type(raw).__name__}, not an object")
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise ProtosegError(f"bank {bank} has format version {version!r}; this protoseg reads version "
                            f"{FORMAT_VERSION} (upgrade protoseg, or rebuild the bank)")
    known = {f.name: f for f in fields(BankManifest)}
    values: dict[str, Any] = {}
    for name, spec in known.items():
        if name not in raw:
            if spec.default is MISSING and spec.default_factory is MISSING:
                raise _damaged(bank, f"manifest.json lacks the field {name!r}")
            continue
        value = raw[name]
        types = _MANIFEST_TYPES[name]
        optional = spec.default is None
        ok = (value is None and optional) or (isinstance(value, types) and not isinstance(value, bool))
        if not ok:
            raise _damaged(bank, f"manifest.json field {name!r} is {value!r}, expected "
                                 f"{' or '.join(t.__name__ for t in types)}{' or null' if optional else ''}")
        values[name] = value
    m = BankManifest(**values)
    if m.feature_dim <= 0 or m.count < 0 or (m.key_dim is not None and m.key_dim <= 0) or m.ef_search <= 0:
        raise _damaged(bank, "manifest.json holds a non-positive dimension or a negative count")
    if m.dtype not in ("float16", "float32"):
        raise _damaged(bank, f"manifest.json dtype is {m.dtype!r}, expected float16 or float32")
    if not all(isinstance(c, str) for c in m.classes):
        raise _damaged(bank, "manifest.json classes must be a list of names")
    if not all(name in DATA_FILES and isinstance(digest, str) for name, digest in m.files.items()):
        raise _damaged(bank, f"manifest.json files must map {', '.join(DATA_FILES)} to SHA-256 digests")
    return m


def file_digests(folder: str | Path) -> dict[str, str]:
    """SHA-256 (hex) of each data file of a bank folder (:data:`DATA_FILES` present), in hashing order."""
    digests = {}
    for name in DATA_FILES:
        path = Path(folder) / name
        if path.is_file():
            with open(path, "rb") as handle:
                digests[name] = hashlib.file_digest(handle, "sha256").hexdigest()
    return digests


def content_id(folder: str | Path, digests: dict[str, str] | None = None) -> str:
    """SHA-256 of the data files of a bank folder (:data:`DATA_FILES` present, names and bytes); from
    their :func:`file_digests` when given."""
    h = hashlib.sha256()
    for name, digest in (file_digests(folder) if digests is None else digests).items():
        h.update(name.encode() + b"\0")
        h.update(bytes.fromhex(digest))
    return h.hexdigest()


def file_problem(path: str | Path) -> str | None:
    """What is wrong with a bank's file *contents* against its manifest, or ``None`` (reads every byte;
    :func:`read_bank_folder` checks only structure): each data file against its SHA-256 in ``files``
    (banks written before the manifest listed them: against ``bank_id``), and no unlisted data file."""
    bank = Path(path)
    manifest = read_manifest(bank)
    digests = file_digests(bank)
    if manifest.files:
        for name, expected in manifest.files.items():
            if name not in digests:
                return f"{name} is missing"
            if digests[name] != expected:
                return f"{name} does not match its SHA-256 in manifest.json"
        unlisted = [name for name in digests if name not in manifest.files]
        if unlisted:
            return f"{unlisted[0]} is not listed in manifest.json"
    if manifest.bank_id is not None and content_id(bank, digests) != manifest.bank_id:
        return "its files do not match the bank_id of manifest.json"
    return None


def verify_files(path: str | Path) -> None:
    """Raise :class:`ProtosegError` naming the first :func:`file_problem` of the bank at ``path``."""
    problem = file_problem(path)
    if problem is not None:
        raise _damaged(Path(path), problem)


def check_bank_out(path: str | Path, overwrite: bool = False, option: str = "--out") -> Path:
    """Check, before any work, that a bank can be written to ``path``.

    Raises:
        ProtosegError: ``path`` exists (without ``overwrite``), exists and is not a bank (protoseg only
            replaces a bank), or cannot be written.
    """
    path = Path(path).expanduser()
    if path.exists():
        if not overwrite:
            raise ProtosegError(f"{path} already exists; choose another {option} or remove it")
        if not (path / MANIFEST_FILE).is_file():
            raise ProtosegError(f"{option} {path} exists and is not a prototype bank; protoseg replaces only "
                                f"a bank: choose another {option}")
    check_output_dir(path, option)
    return path


def complete_table(table: dict[str, Any], count: int) -> dict[str, Any]:
    """Columns of :data:`TABLE_COLUMNS` with their dtypes — string columns as
    :class:`~protoseg.bank.columns.Categories` — missing ones filled with defaults."""
    unknown = set(table) - set(TABLE_COLUMNS)
    if unknown:
        raise ProtosegError(f"unknown bank table columns {sorted(unknown)}; known: {list(TABLE_COLUMNS)}")
    out: dict[str, Any] = {}
    for name, dtype in TABLE_COLUMNS.items():
        if dtype is str:
            col = (Categories.encode(table[name]) if name in table
                   else Categories(np.zeros(count, np.int32), [_DEFAULTS[name]]))
        elif name in table:
            col = np.asarray(table[name], dtype=dtype)
        else:
            col = np.full(count, _DEFAULTS[name], dtype=dtype)
        if col.shape != (count,):
            raise ProtosegError(f"bank column {name!r} has shape {col.shape}, expected ({count},)")
        out[name] = col
    return out


def write_table(table: dict[str, Any], path: Path) -> None:
    """Write complete metadata columns (:data:`TABLE_COLUMNS`) as parquet; string columns are written as
    dictionary pages (codes + distinct names). The parquet holds no Arrow schema, so every reader sees
    plain string columns."""
    columns = {name: Categories.encode(col).to_arrow() if TABLE_COLUMNS[name] is str else pa.array(col)
               for name, col in table.items()}
    pq.write_table(pa.table(columns), path, store_schema=False)


def write_manifest(manifest: BankManifest, path: Path) -> None:
    """Write ``manifest.json`` last, after the bank's data files beside it: sets ``manifest.files`` to their
    SHA-256 digests and ``manifest.bank_id`` to the hash of their contents (:func:`content_id`)."""
    manifest.files = file_digests(Path(path).parent)
    manifest.bank_id = content_id(Path(path).parent, manifest.files)
    path.write_text(json.dumps(asdict(manifest), indent=2) + "\n")


def _read_array(bank: Path, name: str, mmap_mode: str | None) -> np.ndarray | None:
    path = bank / name
    if not path.is_file():
        return None
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise _damaged(bank, f"{name} is unreadable ({exc})") from None


def _index_fix(keys: np.ndarray | None) -> str:
    if keys is not None:
        return "delete keys.faiss and protoseg rebuilds the index from keys.npy"
    return "copy the bank again (or import it again: its keys exist only in that index)"


def _write_rows(path: Path, rows: np.ndarray, dtype: Any, block_bytes: int = BLOCK_BYTES) -> None:
    """``np.save(path, rows.astype(dtype))`` block by block: no whole copy of ``rows`` is ever made."""
    dtype = np.dtype(dtype)
    shape = tuple(int(n) for n in rows.shape)
    per_row = max(1, int(np.prod(shape[1:], dtype=np.int64)) * max(dtype.itemsize, rows.dtype.itemsize))
    step = max(1, block_bytes // per_row)
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(
            handle, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
        for _, block in row_blocks(rows, step):
            handle.write(np.ascontiguousarray(block, dtype=dtype).tobytes())


#: Columns read when first used rather than at load: captions / descriptions, one per row and mostly
#: distinct, are the bulk of a large table and no matcher reads them.
_LAZY_COLUMNS = ("text",)


class BankTable(Mapping[str, Any]):
    """The metadata columns of a bank on disk (:data:`TABLE_COLUMNS`), a read-only mapping.

    Columns are read from the open parquet file at load, except :data:`_LAZY_COLUMNS`, read on first
    access (from the file as it was at load, even if the bank is replaced meanwhile).
    """

    def __init__(self, bank: Path, source: pq.ParquetFile, columns: dict[str, Any]):
        self._bank, self._source, self._columns = bank, source, columns

    def __getitem__(self, name: str) -> Any:
        if name not in self._columns:
            if name not in TABLE_COLUMNS:
                raise KeyError(name)
            self._columns.update(_read_columns(self._bank, self._source, [name]))
        return self._columns[name]

    def __iter__(self) -> Iterator[str]:
        return iter(TABLE_COLUMNS)

    def __len__(self) -> int:
        return len(TABLE_COLUMNS)

    def close(self) -> None:
        """Close the parquet file (a lazy column not read yet cannot be read afterwards)."""
        self._source.close()


def _read_columns(bank: Path, source: pq.ParquetFile, names: list[str]) -> dict[str, Any]:
    strings = [name for name in names if TABLE_COLUMNS[name] is str]
    try:
        arrow = source.read(columns=names)
        if strings:  # dictionary-decoded: codes + distinct names, no Python string per row
            arrow = arrow.cast(pa.schema([pa.field(n, pa.dictionary(pa.int32(), pa.string()))
                                          if n in strings else arrow.schema.field(n) for n in arrow.column_names]))
    except (OSError, pa.ArrowException) as exc:
        raise _damaged(bank, f"table.parquet is unreadable ({exc})") from None
    for name in names:
        if arrow[name].null_count:
            raise _damaged(bank, f"table.parquet column {name!r} has empty cells")
    try:
        return {name: (Categories.from_arrow(arrow[name]) if TABLE_COLUMNS[name] is str
                       else arrow[name].to_numpy().astype(TABLE_COLUMNS[name], copy=False))
                for name in names}
    except (ValueError, TypeError, pa.ArrowException) as exc:
        raise _damaged(bank, f"table.parquet has a column of the wrong type ({exc})") from None


def _read_table(bank: Path, count: int) -> BankTable:
    path = bank / "table.parquet"
    if not path.is_file():
        raise _damaged(bank, "table.parquet is missing")
    strings = [name for name, dtype in TABLE_COLUMNS.items() if dtype is str]
    try:
        source = pq.ParquetFile(path, read_dictionary=strings)
        schema = source.schema_arrow
        rows = source.metadata.num_rows
    except (OSError, pa.ArrowException) as exc:
        raise _damaged(bank, f"table.parquet is unreadable ({exc})") from None
    if rows != count:
        raise _damaged(bank, f"table.parquet has {rows} rows, the bank has {count} prototypes")
    missing = [name for name in TABLE_COLUMNS if name not in schema.names]
    if missing:
        raise _damaged(bank, f"table.parquet lacks the column(s) {', '.join(missing)}")
    for name, dtype in TABLE_COLUMNS.items() if count else ():  # an empty table's columns have no type
        kind = schema.field(name).type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        text = pa.types.is_string(kind) or pa.types.is_large_string(kind)
        if (dtype is str) != text or (not text and not (pa.types.is_integer(kind) or pa.types.is_floating(kind))):
            raise _damaged(bank, f"table.parquet column {name!r} has type {kind}")
    lazy = [name for name in _LAZY_COLUMNS if _null_free(source, schema.names.index(name))]
    columns = _read_columns(bank, source, [name for name in TABLE_COLUMNS if name not in lazy])
    return BankTable(bank, source, columns)


def _null_free(source: pq.ParquetFile, column: int) -> bool:
    """Whether the parquet statistics show that column ``column`` has no empty cell (no statistics: unknown)."""
    meta = source.metadata
    for group in range(meta.num_row_groups):
        stats = meta.row_group(group).column(column).statistics
        if stats is None or not stats.has_null_count or stats.null_count:
            return False
    return True



class BankData:
    """The contents of a bank: visual prototypes with metadata, optional text keys and their search.

    Attributes:
        prototypes: ``[P, D]`` float16/float32 (possibly a read-only memory map).
        table: column name -> ``[P]`` array (``TABLE_COLUMNS``); string columns are
            :class:`~protoseg.bank.columns.Categories`.
        keys: ``[P, Dk]`` float32 L2-normalised text keys (possibly a read-only memory map), or ``None``.
        manifest: :class:`BankManifest`.
        path: the folder it was read from (``None`` for a bank only in memory).
        source: what it was loaded as: that folder, or ``hf://owner/name[@revision]``.
    """

    def __init__(self, prototypes: np.ndarray, table: Mapping[str, Any], manifest: BankManifest,
                 keys: np.ndarray | None = None, index: KeyIndex | FlatKeys | None = None):
        self.prototypes = prototypes
        self.table = table
        self.manifest = manifest
        self.keys = keys
        self._index = index
        self.path: Path | None = None
        self.source: str | None = None

    def __len__(self) -> int:
        return self.manifest.count

    @property
    def classes(self) -> list[str]:
        return list(self.manifest.classes)

    @property
    def index(self) -> KeyIndex | FlatKeys:
        """The search over the text keys: exact block search of the keys for a flat bank
        (:class:`~protoseg.bank.index.FlatKeys`), the faiss index otherwise (built when missing)."""
        if self.keys is None:
            raise ProtosegError("this bank has no text keys; it can only serve classes by name "
                                f"({', '.join(self.classes[:10])}{'…' if len(self.classes) > 10 else ''})")
        if self._index is None:
            kind = self.manifest.index_kind or "flat"
            self._index = (FlatKeys.of(self.keys) if kind == "flat"
                           else KeyIndex.build(self.keys, kind=kind, ef_search=self.manifest.ef_search))
        return self._index

    def close(self) -> None:
        """Release the files this bank holds: its table's open parquet file, and its prototypes, keys and key
        index (memory maps are unmapped, and their files closed, once no other array refers to them). The
        bank is empty afterwards; load it again to use it."""
        if isinstance(self.table, BankTable):
            self.table.close()
        self.prototypes = np.empty((0, self.manifest.feature_dim), dtype=self.prototypes.dtype)
        self.keys = None if self.keys is None else np.empty((0, self.keys.shape[1]), dtype=self.keys.dtype)
        self.table = {}
        self._index = None

    def summary(self) -> dict[str, Any]:
        """Counts and settings for `protoseg bank info`."""
        per_class = {name: n for name, n in sorted(self.table["label"].counts().items()) if name != ""}
        levels = dict(sorted(self.table["level"].counts().items()))
        return {
            "method": self.manifest.method,
            "prototypes": len(self),
            "classes": len(per_class),
            "feature_encoder": self.manifest.feature_encoder,
            "feature_dim": self.manifest.feature_dim,
            "dtype": self.manifest.dtype,
            "text_encoder": self.manifest.text_encoder,
            "text_keys": self.keys is not None,
            "index": self.manifest.index_kind,
            "levels": levels,
            "per_class": per_class,
            "support_images": int(len(np.unique(self.table["image_id"]))),
            "settings": self.manifest.settings,
        }


B = TypeVar("B", bound=BankData)


def write_bank_folder(bank: BankData, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``bank`` atomically to directory ``path``; returns it.

    With ``overwrite`` an existing *bank* at ``path`` is replaced; any other existing file or folder is
    refused (protoseg never deletes what it did not make).
    """
    path = Path(path)
    if path.exists():
        check_bank_out(path, overwrite)
    with atomic_dir(path, replace=True) as tmp:
        _write_rows(tmp / "prototypes.npy", bank.prototypes, bank.manifest.dtype)
        write_table(bank.table, tmp / "table.parquet")
        if bank.keys is not None:
            _write_rows(tmp / "keys.npy", bank.keys, np.float32)
            if (bank.manifest.index_kind or "flat") != "flat":  # flat banks are searched from keys.npy
                bank.index.write(tmp / "keys.faiss")
        write_manifest(bank.manifest, tmp / MANIFEST_FILE)
    return path


def read_bank_folder(path: str | Path, mmap: bool = True, kind: type[B] = BankData) -> B:
    """Read and validate the bank folder ``path`` as a ``kind`` (:class:`BankData` or a subclass);
    prototypes and keys are memory-mapped unless ``mmap=False``.

    Raises:
        ProtosegError: not a bank, another format version, or a damaged bank (manifest schema, row
            counts or dimensions that disagree, an unreadable file or faiss index) — with the fix.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ProtosegError(f"{path} is a file; a prototype bank is a folder (with manifest.json)")
    manifest = read_manifest(path)
    mode = "r" if mmap else None
    prototypes = _read_array(path, "prototypes.npy", mode)
    if prototypes is None:
        raise _damaged(path, "prototypes.npy is missing")
    if prototypes.ndim != 2 or prototypes.shape != (manifest.count, manifest.feature_dim):
        raise _damaged(path, f"prototypes.npy has shape {prototypes.shape}, the manifest says "
                             f"({manifest.count}, {manifest.feature_dim})")
    if prototypes.dtype not in (np.float16, np.float32):
        raise _damaged(path, f"prototypes.npy holds {prototypes.dtype}, expected float16 or float32")
    table = _read_table(path, manifest.count)
    keys = _read_keys(path, manifest, mode)
    bank = kind(prototypes, table, manifest, keys, _read_index(path, manifest, keys))
    bank.path, bank.source = path, str(path)
    return bank


def _read_keys(path: Path, manifest: BankManifest, mode: str | None) -> np.ndarray | None:
    """``keys.npy`` ``[P, Dk]`` checked against the manifest, or ``None`` for a bank without text keys."""
    keys = _read_array(path, "keys.npy", mode)
    if keys is not None:
        if keys.ndim != 2 or keys.shape[0] != manifest.count:
            raise _damaged(path, f"keys.npy has shape {keys.shape}, expected {manifest.count} rows (one key "
                                 "per prototype)")
        if manifest.key_dim is not None and keys.shape[1] != manifest.key_dim:
            raise _damaged(path, f"keys.npy holds {keys.shape[1]}-d keys, the manifest says {manifest.key_dim}")
    elif manifest.key_dim is not None:
        raise _damaged(path, "keys.npy is missing although the manifest lists text keys")
    if keys is not None and keys.dtype not in (np.float16, np.float32):
        raise _damaged(path, f"keys.npy holds {keys.dtype}, expected float32 or float16")
    return keys


def _read_index(path: Path, manifest: BankManifest, keys: np.ndarray | None) -> KeyIndex | None:
    """The approximate faiss index of ``keys.faiss`` when the bank has one (an older bank's exact index is
    checked from its header only: the same keys as ``keys.npy``)."""
    if not (path / "keys.faiss").is_file():
        return None
    if keys is None and manifest.key_dim is None:
        raise _damaged(path, "keys.faiss is present but the bank has no text keys (keys.npy)")
    unreadable = ProtosegError(f"bank {path}: keys.faiss is unreadable (truncated, or not a faiss index); "
                               f"{_index_fix(keys)}")
    index = None
    try:
        flat = is_flat_file(path / "keys.faiss")
        if flat and keys is not None:
            dim, ntotal = flat_header(path / "keys.faiss")
        else:
            index = KeyIndex.read(path / "keys.faiss", ef_search=manifest.ef_search)
            dim, ntotal = index.dim, len(index)
    except (RuntimeError, OSError, ProtosegError):
        raise unreadable from None
    expected_dim = keys.shape[1] if keys is not None else manifest.key_dim
    if ntotal != manifest.count or dim != expected_dim:
        raise ProtosegError(f"bank {path}: keys.faiss holds {ntotal} {dim}-d keys, the bank has "
                            f"{manifest.count} {expected_dim}-d keys; {_index_fix(keys)}")
    return index
