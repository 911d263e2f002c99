"""Loading and querying a large prototype bank: wall time and peak memory.

Builds once a synthetic bank the size of FreeDA's release — by default 2,000,000 prototypes, DINOv2-L
prototypes (1024-d, float16) and CLIP ViT-L/14 text keys (768-d, float32), as the released
``prototype_embeddings/`` + ``knn.index`` hold — in ``--cache`` (default ``$PROTOSEG_CACHE/bank-load`` or
``~/.cache/protoseg/bank-load``), reused when present. The bank is written in format 1 *as older
protoseg wrote it* (plain string columns and an exact flat ``keys.faiss`` beside ``keys.npy``), so the
same folder measures old and new readers. Each label is one of 20,000 nouns, each text one of ~670,000
captions (three nouns per caption), as in a COCO-Captions bank.

Then, in a fresh subprocess, it measures ``PrototypeBank.load`` (``load_s``), one FreeDA query
(``query_s``: ``class_rows`` — retrieval of ``k`` = 350 keys for each of 20 class vectors, the level
filter and the finiteness check — plus the mean of each class's retrieved prototypes) and the peak
resident memory of that process (``peak_rss_mb``, ``ru_maxrss``, which includes the ~0.4 GB of
importing torch), and prints::

    load_s X query_s Y peak_rss_mb Z

    python benchmarks/bank_load.py [--cache DIR] [--count 2000000] [--runs 2] [--src SRC] [--rss-limit-mb MB]

``--src`` runs the measurement with another checkout's ``src`` folder (e.g. an older protoseg); ``--bank``
measures an existing bank instead (e.g. the synthetic one saved again by this protoseg). A
measurement whose resident memory passes ``--rss-limit-mb`` (default 16000) stops with an ``aborted:``
line instead of pushing a shared machine out of memory.
The bank takes ``count * (2 * 1024 + 2 * 4 * 768)`` bytes on disk (16.4 GB by default).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

MEASURE = r"""
import os, resource, sys, threading, time
import numpy as np

path, k, classes, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
begin = time.perf_counter()


def guard():  # a shared machine: stop before the process takes more than --rss-limit-mb
    while True:
        with open("/proc/self/status") as status:
            rss = int(status.read().split("VmRSS:")[1].split()[0]) / 1024
        if rss > limit:
            print(f"aborted: rss {rss:.0f} MB > --rss-limit-mb {limit:.0f} after "
                  f"{time.perf_counter() - begin:.1f} s", flush=True)
            os._exit(3)
        time.sleep(0.02)


if limit > 0 and os.path.exists("/proc/self/status"):
    threading.Thread(target=guard, daemon=True).start()
from protoseg.bank import PrototypeBank
from protoseg.match.prototypes import class_rows

start = time.perf_counter()
bank = PrototypeBank.load(path)
load = time.perf_counter() - start
queries = np.random.default_rng(1).normal(size=(classes, bank.keys.shape[1])).astype(np.float32)
start = time.perf_counter()
rows = class_rows(bank, [f"class{i}" for i in range(classes)], queries, k, level="whole")
means = [bank.vectors(r).mean(0) for r in rows]
query = time.perf_counter() - start
assert len(means) == classes and all(len(r) == k for r in rows)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"load_s {load:.3f} query_s {query:.3f} peak_rss_mb {peak:.0f}", flush=True)
"""


def build(folder: Path, count: int, feature_dim: int, key_dim: int, seed: int = 0) -> None:
    """Write the synthetic bank into ``folder`` block by block (never all of it in memory)."""
    import faiss
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    block = 100_000
    protos = np.lib.format.open_memmap(tmp / "prototypes.npy", "w+", np.float16, (count, feature_dim))
    keys = np.lib.format.open_memmap(tmp / "keys.npy", "w+", np.float32, (count, key_dim))
    # keys.faiss of an exact IndexFlatIP, as older protoseg wrote it: header, float count, float32 rows
    with open(tmp / "keys.faiss", "wb") as index:
        header = faiss.IndexFlatIP(key_dim)
        faiss.write_index(header, str(tmp / "empty.faiss"))
        empty = (tmp / "empty.faiss").read_bytes()
        (tmp / "empty.faiss").unlink()
        fixed = bytearray(empty[:-8])  # header of an empty index, then its (zero) byte count
        fixed[8:16] = np.int64(count).tobytes()  # ntotal follows the fourcc and d
        index.write(bytes(fixed) + np.uint64(count * key_dim).tobytes())  # float count
        for start in range(0, count, block):
            n = min(block, count - start)
            protos[start:start + n] = rng.standard_normal((n, feature_dim), dtype=np.float32)
            k = rng.standard_normal((n, key_dim), dtype=np.float32)
            k /= np.linalg.norm(k, axis=1, keepdims=True)
            keys[start:start + n] = k
            index.write(k.tobytes())
    protos.flush()
    keys.flush()
    del protos, keys
    ids = np.arange(count)
    table = pa.table({
        "label": pa.array([f"noun{i}" for i in (ids * 7919) % 20000]),
        "text": pa.array([f"a caption about things number {i}" for i in ids // 3]),
        "image_id": pa.array(ids // 3, pa.int64()),
        "part_id": pa.array(np.full(count, -1, np.int32)),
        "level": pa.array(["whole"] * count),
        "area": pa.array(np.ones(count, np.float32)),
        "supply": pa.array(np.zeros(count, np.float32)),
        "coarse_cluster": pa.array(np.full(count, -1, np.int32)),
        "fine_cluster": pa.array(np.full(count, -1, np.int32)),
    })
    pq.write_table(table, tmp / "table.parquet")
    manifest = {"method": "freeda", "feature_encoder": "facebook/dinov2-large", "feature_dim": feature_dim,
                "count": count, "classes": [f"noun{i}" for i in range(20000)], "dtype": "float16",
                "text_encoder": "openai/clip-vit-large-patch14", "key_dim": key_dim, "index_kind": "flat",
                "ef_search": 50000, "settings": {"synthetic": True}, "format_version": 1,
                "bank_id": f"synthetic-{count}-{feature_dim}-{key_dim}-{seed}"}
    (tmp / "manifest.json").write_text(json.dumps(manifest))
    tmp.rename(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default_cache = Path(os.environ.get("PROTOSEG_CACHE", Path.home() / ".cache" / "protoseg")) / "bank-load"
    parser.add_argument("--cache", type=Path, default=default_cache)
    parser.add_argument("--count", type=int, default=2_000_000)
    parser.add_argument("--feature-dim", type=int, default=1024)
    parser.add_argument("--key-dim", type=int, default=768)
    parser.add_argument("--k", type=int, default=350)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--runs", type=int, default=2, help="measurements, each in a fresh process")
    parser.add_argument("--rss-limit-mb", type=float, default=16000,
                        help="abort a measurement whose resident memory passes this (0: no limit)")
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="protoseg source folder to measure")
    parser.add_argument("--bank", type=Path, default=None, help="measure this bank instead of the synthetic one")
    args = parser.parse_args()

    folder = args.bank or args.cache / f"bank-{args.count}-{args.feature_dim}-{args.key_dim}"
    if args.bank is None and not (folder / "manifest.json").is_file():
        print(f"building {folder} (once)", flush=True)
        start = time.perf_counter()
        build(folder, args.count, args.feature_dim, args.key_dim)
        print(f"built in {time.perf_counter() - start:.1f} s", flush=True)
    size = sum(f.stat().st_size for f in folder.iterdir()) / 1e9
    print(f"bank {folder} ({size:.1f} GB): {args.count} prototypes {args.feature_dim}-d float16, "
          f"keys {args.key_dim}-d; k {args.k}, {args.classes} classes; src {args.src}", flush=True)
    env = {**os.environ, "PYTHONPATH": str(args.src)}
    for _ in range(args.runs):
        subprocess.run([sys.executable, "-c", MEASURE, str(folder), str(args.k), str(args.classes),
                        str(args.rss_limit_mb)], env=env, check=False)


if __name__ == "__main__":
    main()
