"""Import FreeDA's released prototype embeddings and faiss index as a protoseg bank.

FreeDA's data is a folder of per-prototype ``.npy`` files (one DINOv2 vector each) and ``knn.index``,
a faiss index whose id ``j`` refers to the ``j``-th file of ``sorted(os.listdir(folder))`` (Python string
order). Files are streamed into ``prototypes.npy`` (never all in memory); keys are reconstructed from
the index when it stores vectors. Prototypes with non-finite values are kept as zero rows with
``level="invalid"`` so ids stay aligned with the index; matchers skip them, as FreeDA's loader does.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np

from protoseg.atomic import atomic_dir
from protoseg.bank.storage import BankManifest, complete_table, write_manifest, write_table
from protoseg.errors import ProtosegError


def import_freeda(embeddings_dir: str | Path, index_path: str | Path, out: str | Path, *,
                  feature_encoder: str = "facebook/dinov2-large", text_encoder: str = "openai/clip-vit-large-patch14",
                  dtype: str = "float16", ef_search: int = 50000, chunk: int = 4096,
                  progress: Callable[[int, int], None] | None = None) -> Path:
    """Write a bank at ``out`` from FreeDA's ``prototype_embeddings/`` folder and ``knn.index``."""
    embeddings_dir, index_path, out = Path(embeddings_dir), Path(index_path), Path(out)
    if not embeddings_dir.is_dir():
        raise ProtosegError(f"{embeddings_dir} is not a folder of FreeDA prototype .npy files")
    if not index_path.is_file():
        raise ProtosegError(f"faiss index not found: {index_path}")
    if out.exists():
        raise ProtosegError(f"{out} already exists; choose another --out or remove it")
    names = sorted(os.listdir(embeddings_dir))
    if not names:
        raise ProtosegError(f"{embeddings_dir} is empty")
    try:
        index = faiss.read_index(str(index_path))
    except RuntimeError as exc:
        raise ProtosegError(f"cannot read faiss index {index_path}: {exc}") from exc
    if index.ntotal != len(names):
        raise ProtosegError(f"the index holds {index.ntotal} keys but {embeddings_dir} has {len(names)} files; "
                            "they must come from the same release")
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise ProtosegError("the index does not use inner product; FreeDA's retrieval is cosine (inner product)")
    first = np.load(embeddings_dir / names[0]).reshape(-1)
    dim, count = first.shape[0], len(names)
    with atomic_dir(out) as tmp:
        protos = np.lib.format.open_memmap(tmp / "prototypes.npy", mode="w+", dtype=dtype, shape=(count, dim))
        level = np.full(count, "whole", dtype=object)
        for start in range(0, count, chunk):
            block = np.stack([np.load(embeddings_dir / n).reshape(-1) for n in names[start:start + chunk]])
            if block.shape[1] != dim:
                raise ProtosegError(f"prototype files of different sizes ({dim} vs {block.shape[1]})")
            bad = ~np.isfinite(block).all(1)
            block[bad] = 0
            level[start:start + len(block)][bad] = "invalid"
            protos[start:start + len(block)] = block.astype(dtype)
            if progress is not None:
                progress(min(start + chunk, count), count)
        protos.flush()
        del protos
        # The release names no nouns: rows are served by key retrieval only.
        table = {"label": [""] * count, "text": names, "image_id": np.arange(count), "level": level}
        write_table(complete_table(table, count), tmp / "table.parquet")
        shutil.copyfile(index_path, tmp / "keys.faiss")
        try:
            keys = np.lib.format.open_memmap(tmp / "keys.npy", mode="w+", dtype=np.float32,
                                             shape=(count, index.d))
            for start in range(0, count, chunk):
                n = min(chunk, count - start)
                keys[start:start + n] = index.reconstruct_n(start, n)
            keys.flush()
            del keys
        except RuntimeError:  # index without stored vectors: retrieval works, merging needs keys
            (tmp / "keys.npy").unlink(missing_ok=True)
        manifest = BankManifest(method="freeda-import", feature_encoder=feature_encoder, feature_dim=dim,
                                count=count, classes=[], dtype=dtype, text_encoder=text_encoder, key_dim=index.d,
                                index_kind="hnsw" if hasattr(faiss.downcast_index(index), "hnsw") else "flat",
                                ef_search=ef_search,
                                settings={"source": "FreeDA release", "embeddings": str(embeddings_dir),
                                          "invalid": int((level == "invalid").sum())})
        write_manifest(manifest, tmp / "manifest.json")
    return out
