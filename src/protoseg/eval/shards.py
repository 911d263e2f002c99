"""Sharded, resumable scoring: a dataset and a predictor in, dataset-wide mIoU out (:func:`evaluate`).

Work is split in shards of ``shard_size`` images and runs on :mod:`protoseg.runs`, the machinery of
bank builds: each finished shard's per-image counts (:func:`protoseg.eval.metrics.intersect_and_union`,
int64 ``[n, 4, C]``) and its confusion matrix are written atomically to ``run_dir/shards/XXXXX.npz``; a
rerun with the same run folder skips finished shards, and since the totals are sums of integers the
resumed (or Ray-distributed) result is identical to an uninterrupted one. Images (and, for file
predictions, the predictions and their counts) are loaded by a thread pool ahead of the consumer.

A run resumes only when its fingerprint (:func:`run_fingerprint`) is unchanged: dataset, classes, shard
size, the predictor's settings, the protoseg version, and the contents of every input — the sizes and
modification times of the images, ground-truth and prediction files, and the bank's id and files. The
run folder's name (:func:`run_id`) leaves the contents out, so a rerun after an input changed finds the
same folder, discards its stale shards and starts fresh, saying so in one line (a ``protoseg`` log notice).

Predictors:

- :class:`~protoseg.eval.segmenter_predictor.SegmenterPredictor`: runs a :class:`protoseg.segment.Segmenter`
  with the dataset's query classes; for datasets with background, background (-1) becomes index 0 and
  classes shift by one.
- :class:`~protoseg.eval.labelmaps.PredictionFolder`: reads ``PRED_DIR/<stem>.png`` label maps (indices
  into the dataset's class list, 0-based, index 0 = background where the dataset has one).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from protoseg.datasets.base import SegDataset
from protoseg.errors import ProtosegError
from protoseg.eval.metrics import confusion_matrix, counts_from_confusion, summarize
from protoseg.eval.result import EvalResult
from protoseg.runs import Progress, ShardResult, files_digest, load_shard, prepare_work_dir, run_shards, shard_path
from protoseg.version import build_id

RUN_FORMAT = 2


class Predictor(Protocol):
    """Produces a label map in the dataset's class-index space for one sample.

    ``needs_image``: whether ``__call__`` uses the image (``False`` lets the loader skip decoding it).
    ``in_loader``: whether prediction is cheap and thread-safe enough to run in the loader threads.
    """

    needs_image: bool
    in_loader: bool

    def describe(self) -> dict[str, Any]:
        """JSON-able identity of the predictor (part of the run fingerprint)."""
        ...

    def inputs(self) -> dict[str, Any]:
        """JSON-able stamps of the contents the predictions depend on (files, bank id); part of the run
        fingerprint but not of the run folder's name. Optional: predictors without it depend on nothing else."""
        ...

    def __call__(self, index: int, image: np.ndarray | None) -> np.ndarray:
        """Return int ``[H, W]`` class indices for sample ``index``."""
        ...



def run_fingerprint(dataset: SegDataset, predictor: Predictor, shard_size: int) -> dict[str, Any]:
    """What identifies a run (stored in ``run.json``; a run resumes only when it is unchanged).

    ``inputs`` holds the content stamps: images and ground truth (sizes + modification times) and the
    predictor's own inputs (prediction files, bank id and files).
    """
    stems = hashlib.sha256("\n".join(dataset.stems).encode()).hexdigest()
    own = predictor.inputs() if hasattr(predictor, "inputs") else {}
    return {
        "format": RUN_FORMAT,
        "protoseg": build_id(),
        "dataset": dataset.name,
        "classes": list(dataset.classes),
        "images": len(dataset),
        "stems_sha256": stems,
        "shard_size": shard_size,
        "predictor": predictor.describe(),
        "inputs": {"dataset": files_digest(p for s in dataset.samples for p in (s.image, s.label)), **own},
    }


def run_id(dataset: SegDataset, predictor: Predictor, shard_size: int) -> str:
    """Short hash naming a run folder: the run's settings without the contents of its inputs, so a rerun
    after an input changed finds the same folder (and starts it fresh)."""
    stems = hashlib.sha256("\n".join(dataset.stems).encode()).hexdigest()
    what = {"format": RUN_FORMAT, "dataset": dataset.name, "classes": list(dataset.classes), "images": len(dataset),
            "stems_sha256": stems, "shard_size": shard_size, "predictor": predictor.describe()}
    fp = json.dumps(what, sort_keys=True, default=str)
    return hashlib.sha256(fp.encode()).hexdigest()[:10]


#: Files of a run folder that belong to protoseg (removed when the run starts fresh; ``shard-*.npz``:
#: shards of the earlier one-file-per-shard layout).
RUN_FILE = "run.json"
RUN_OWNED = ("shards", "shard-*.npz")


def _prefetch(fn: Callable[[int], Any], indices: list[int], workers: int) -> Iterator[tuple[int, Any]]:
    """Yield ``(i, fn(i))`` in order, computing up to ``2 * workers`` items ahead in threads."""
    if workers <= 0:
        for i in indices:
            yield i, fn(i)
        return
    depth = 2 * workers
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="protoseg-load") as pool:
        pending: list[tuple[int, Future]] = []
        it = iter(indices)
        for i in it:
            pending.append((i, pool.submit(fn, i)))
            if len(pending) >= depth:
                break
        while pending:
            i, fut = pending.pop(0)
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(fn, nxt)))
            yield i, fut.result()


class EvalShard:
    """The work of one evaluation shard: ``shard(indices)`` -> ``counts`` (int64 ``[n, 4, C]``, per image),
    ``confusion`` (int64 ``[C + 1, C + 1]``, summed over the shard; rows ground truth, columns prediction)
    and ``diag_<name>`` (0-d counts of the predictor's diagnostics, e.g. transport problems that did not
    converge).

    Picklable (a Ray task) when its predictor is; ``progress`` (``("images", done, total)`` after each
    image) stays with the driver.
    """

    def __init__(self, dataset: SegDataset, predictor: Predictor, workers: int = 4,
                 progress: Progress | None = None, done: int = 0):
        self.dataset, self.predictor, self.workers = dataset, predictor, workers
        self.progress, self.done = progress, done

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "progress": None}

    def __call__(self, indices: list[int]) -> ShardResult:
        dataset, predictor, C = self.dataset, self.predictor, self.dataset.num_classes
        confusion = np.zeros((C + 1, C + 1), np.int64)
        counts = np.zeros((len(indices), 4, C), np.int64)
        before = dict(getattr(predictor, "diagnostics", {}))

        def check(i: int, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
            if pred.shape != gt.shape:
                raise ProtosegError(
                    f"{dataset.samples[i].stem}: prediction is {pred.shape[1]}x{pred.shape[0]} but "
                    f"the ground truth is {gt.shape[1]}x{gt.shape[0]}; predict at the original size"
                )
            return confusion_matrix(pred, gt, C)

        def load(i: int) -> tuple[np.ndarray | None, np.ndarray]:
            """``(None, confusion)`` for in-loader predictors, else ``(image or None, ground truth)``."""
            if predictor.in_loader:
                image = dataset.load_image(i) if predictor.needs_image else None
                return None, check(i, predictor(i, image), dataset.load_label(i))
            if predictor.needs_image:
                return dataset.load(i)
            return None, dataset.load_label(i)

        for row, (i, (image, payload)) in enumerate(_prefetch(load, list(indices), self.workers)):
            cm = payload if predictor.in_loader else check(i, predictor(i, image), payload)
            counts[row] = counts_from_confusion(cm, C)
            confusion += cm
            self.done += 1
            if self.progress is not None:
                self.progress("images", self.done, len(dataset))
        after = getattr(predictor, "diagnostics", {})
        diagnostics = {f"diag_{k}": np.int64(v - before.get(k, 0)) for k, v in after.items()}
        return {"counts": counts, "confusion": confusion, **diagnostics}


def evaluate(
    dataset: SegDataset,
    predictor: Predictor,
    run_dir: str | Path | None = None,
    shard_size: int = 50,
    workers: int = 4,
    progress: Progress | None = None,
    config: dict[str, Any] | None = None,
    ray: bool = False,
    ray_address: str | None = None,
    ray_init: dict[str, Any] | None = None,
) -> EvalResult:
    """Score ``predictor`` on every image of ``dataset``, on the run machinery of :mod:`protoseg.runs`.

    Args:
        run_dir: folder for resumable shards (``None``: keep nothing, no resume).
        shard_size: images per shard.
        workers: loader threads (0 = load in the calling thread).
        progress: ``progress("images", done, total)`` after each image (resumed images count as done at
            once; with Ray, after each shard).
        config: extra JSON-able description stored in the result.
        ray: run the shards as Ray tasks (one GPU each when the cluster has GPUs); needs ``run_dir`` and a
            predictor that pickles (a prediction folder, or a segmenter predictor made with a ``recipe``).
            The totals equal a local run's.
        ray_address: the cluster to join (``None``: start or join a local one).
        ray_init: extra keyword arguments of ``ray.init``.

    Raises:
        ProtosegError: unreadable files, size mismatches, or a run folder that is not protoseg's.

    A run folder holding another run (other settings, or inputs whose contents changed) is started fresh.
    """
    if shard_size <= 0:
        raise ProtosegError("shard size must be positive")
    if ray and run_dir is None:
        raise ProtosegError("a Ray evaluation needs a run folder (--run-dir) to collect its shards")
    C, N = dataset.num_classes, len(dataset)
    shards = [list(range(lo, min(N, lo + shard_size))) for lo in range(0, N, shard_size)]
    if run_dir is None:
        work = EvalShard(dataset, predictor, workers, progress)
        if progress is not None:
            progress("images", 0, N)
        results = [work(indices) for indices in shards]
    else:
        root = prepare_work_dir(run_dir, run_fingerprint(dataset, predictor, shard_size), marker=RUN_FILE,
                                owned=RUN_OWNED, what="evaluation")
        finished = sum(len(indices) for k, indices in enumerate(shards) if shard_path(root, k).is_file())
        if progress is not None:
            progress("images", finished, N)
        work = EvalShard(dataset, predictor, workers, None if ray else progress, finished)
        on_ray = (lambda stage, done, total: progress("images", min(N, done * shard_size), N)) if (
            ray and progress is not None) else None
        paths = run_shards(root, shards, work, progress=on_ray, ray=ray, ray_address=ray_address,
                           ray_init=ray_init)
        results = [load_shard(path) for path in paths]
        for path, indices, result in zip(paths, shards, results, strict=True):
            if result["counts"].shape != (len(indices), 4, C) or result["confusion"].shape != (C + 1, C + 1):
                raise ProtosegError(f"{path} does not match this run; delete {root} to start over")
    totals = sum((r["counts"].sum(0) for r in results), np.zeros((4, C), np.int64))
    confusion = sum((r["confusion"] for r in results), np.zeros((C + 1, C + 1), np.int64))
    diagnostics: dict[str, int] = {}
    for r in results:
        for key in (k for k in r if k.startswith("diag_")):
            diagnostics[key[5:]] = diagnostics.get(key[5:], 0) + int(r[key])
    return EvalResult(
        dataset.name,
        dataset.classes,
        totals,
        N,
        summarize(totals),
        {"predictor": predictor.describe(), **(config or {}),
         **({"diagnostics": diagnostics} if set(diagnostics) - {"images"} else {})},
        confusion=confusion,
    )
