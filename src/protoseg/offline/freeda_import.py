"""Import FreeDA's released prototype embeddings and faiss index as a protoseg bank.

FreeDA's data is a folder of per-prototype ``.npy`` files (one DINOv2 vector each) and ``knn.index``,
a faiss index whose id ``j`` refers to the ``j``-th file of ``sorted(os.listdir(folder))`` (Python string
order). As a builder (``method="freeda-import"``): the plan is the sorted file names in chunks, a shard
reads its chunks (``prototypes [n, D]`` in the bank dtype, ``invalid [n]``), and the write step streams
the shards into ``prototypes.npy`` (never all in memory); keys are reconstructed from the index when it
stores vectors. Prototypes with non-finite values are kept as zero rows with ``level="invalid"`` so ids
stay aligned with the index; matchers skip them, as FreeDA's loader does.

FreeDA's released files (``prototype_embeddings/`` and ``knn.index``, DINOv2-L prototypes and CLIP
ViT-L/14 keys from COCO Captions) are linked from the official repository's README
(``aimagelab/freeda``); segment the imported bank with ``--preset freeda-l``. Import them with
:func:`protoseg.offline.import_freeda`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from protoseg.atomic import atomic_dir
from protoseg.bank.storage import BankManifest, complete_table, write_manifest, write_table
from protoseg.config.build import BuildPreset, FreedaImportSource
from protoseg.errors import ProtosegError
from protoseg.offline.base import Builder, Plan
from protoseg.runs import Progress, ShardResult, file_stamp, load_shard


@dataclass(frozen=True)
class ImportChunk:
    """Files ``names`` (ids ``start..start+len-1``) of the embeddings folder ``folder``."""

    folder: str
    start: int
    names: tuple[str, ...]


def release_preset(feature_encoder: str = "facebook/dinov2-large",
                   text_encoder: str = "openai/clip-vit-large-patch14", dtype: str = "float16",
                   chunk: int = 4096) -> BuildPreset:
    """The build settings of an import: the encoders the release was made with, the storage dtype and
    the files per work item (``batch_size``)."""
    return BuildPreset(name="freeda-import", method="freeda-import", segment_preset="freeda-l",
                       description="FreeDA's released prototypes and knn.index", diffusion=None,
                       features=feature_encoder, text=text_encoder, bank_dtype=dtype, batch_size=chunk)


class FreedaImportBuilder(Builder):
    """Streams FreeDA's release (a :class:`FreedaImportSource`) into a bank (module docstring)."""

    def plan(self, source: FreedaImportSource, out: Path, seed: int, progress: Progress | None = None) -> Plan:
        folder, index_path = source.embeddings, source.index
        if not folder.is_dir():
            raise ProtosegError(f"{folder} is not a folder of FreeDA prototype .npy files")
        if not index_path.is_file():
            raise ProtosegError(f"faiss index not found: {index_path}")
        names = sorted(os.listdir(folder))
        if not names:
            raise ProtosegError(f"{folder} is empty")
        index = _read_index(index_path)
        if index.ntotal != len(names):
            raise ProtosegError(f"the index holds {index.ntotal} keys but {folder} has {len(names)} files; "
                                "they must come from the same release")
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ProtosegError("the index does not use inner product; FreeDA's retrieval is cosine (inner "
                                "product)")
        chunk = self.preset.batch_size
        items = [ImportChunk(str(folder), start, tuple(names[start:start + chunk]))
                 for start in range(0, len(names), chunk)]
        settings = {"source": "FreeDA release", "embeddings": str(folder), "index": str(index_path)}
        return Plan(items, settings, {"index": file_stamp(index_path), "embeddings": file_stamp(folder)},
                    {"names": names, "index": index_path})

    def shard(self, items: list[ImportChunk]) -> ShardResult:
        block = np.stack([np.load(Path(c.folder) / n).reshape(-1) for c in items for n in c.names])
        invalid = ~np.isfinite(block).all(1)
        block[invalid] = 0
        return {"prototypes": block.astype(self.preset.bank_dtype), "invalid": invalid}

    def write(self, shards: Sequence[Path], plan: Plan, seed: int, out: Path, overwrite: bool = False) -> Path:
        names: list[str] = plan.context["names"]
        index = _read_index(plan.context["index"])
        count, dtype = len(names), self.preset.bank_dtype
        dim = int(load_shard(shards[0])["prototypes"].shape[1])
        with atomic_dir(out, replace=overwrite) as tmp:
            protos = np.lib.format.open_memmap(tmp / "prototypes.npy", mode="w+", dtype=dtype, shape=(count, dim))
            level = np.full(count, "whole", dtype=object)
            start = 0
            for path in shards:
                data = load_shard(path)
                block = data["prototypes"]
                if block.shape[1] != dim:
                    raise ProtosegError(f"prototype files of different sizes ({dim} vs {block.shape[1]})")
                protos[start:start + len(block)] = block
                level[start:start + len(block)][data["invalid"]] = "invalid"
                start += len(block)
            protos.flush()
            del protos
            # The release names no nouns: rows are served by key retrieval only.
            table = {"label": [""] * count, "text": names, "image_id": np.arange(count), "level": level}
            write_table(complete_table(table, count), tmp / "table.parquet")
            shutil.copyfile(plan.context["index"], tmp / "keys.faiss")
            try:
                keys = np.lib.format.open_memmap(tmp / "keys.npy", mode="w+", dtype=np.float32,
                                                 shape=(count, index.d))
                for begin in range(0, count, self.preset.batch_size):
                    n = min(self.preset.batch_size, count - begin)
                    keys[begin:begin + n] = index.reconstruct_n(begin, n)
                keys.flush()
                del keys
            except RuntimeError:  # index without stored vectors: retrieval works, merging needs keys
                (tmp / "keys.npy").unlink(missing_ok=True)
            manifest = BankManifest(
                method="freeda-import", feature_encoder=self.preset.features, feature_dim=dim, count=count,
                classes=[], dtype=dtype, text_encoder=self.preset.text, key_dim=index.d,
                index_kind="hnsw" if hasattr(faiss.downcast_index(index), "hnsw") else "flat", ef_search=50000,
                settings={**plan.settings, "invalid": int((level == "invalid").sum())})
            write_manifest(manifest, tmp / "manifest.json")
        return out


def _read_index(path: Path) -> faiss.Index:
    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:
        raise ProtosegError(f"cannot read faiss index {path}: {exc}") from exc
