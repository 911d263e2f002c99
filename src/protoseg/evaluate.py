"""The evaluation runner: a dataset and a predictor in, dataset-wide mIoU out.

Work is split in shards of ``shard_size`` images. Each finished shard's per-image counts
(:func:`protoseg.metrics.intersect_and_union`, int64 ``[n, 4, C]``) are written atomically to
``run_dir/shard-XXXXX.npz``; a rerun with the same run folder skips finished shards, and since the
totals are sums of integers the resumed result is identical to an uninterrupted one. Images (and, for
file predictions, the predictions and their counts) are loaded by a thread pool ahead of the consumer.

A run resumes only when its fingerprint (:func:`run_fingerprint`) is unchanged: dataset, classes, shard
size, the predictor's settings, the protoseg version, and the contents of every input — the sizes and
modification times of the images, ground-truth and prediction files, and the bank's id and files. The
run folder's name (:func:`run_id`) leaves the contents out, so a rerun after an input changed finds the
same folder, discards its stale shards and starts fresh, saying so in one line (a ``protoseg`` log notice).

Predictors:

- :class:`SegmenterPredictor`: runs a :class:`protoseg.segment.Segmenter` with the dataset's query
  classes; for datasets with background, background (-1) becomes index 0 and classes shift by one.
- :class:`PredictionFolder`: reads ``PRED_DIR/<stem>.png`` label maps (indices into the dataset's class
  list, 0-based, index 0 = background where the dataset has one).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from protoseg import __version__
from protoseg.atomic import atomic_path
from protoseg.datasets.base import SegDataset, read_label_png
from protoseg.errors import ProtosegError
from protoseg.metrics import Scores, intersect_and_union, summarize
from protoseg.runs import files_digest, prepare_work_dir

RUN_FORMAT = 1


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


class SegmenterPredictor:
    """A :class:`~protoseg.segment.Segmenter` queried with ``dataset.query_classes``.

    With ``save_dir`` every label map is also written as ``save_dir/<stem>.png`` (the format
    :class:`PredictionFolder` reads), so a run can be re-scored or compared later. ``diagnostics`` sums
    the segmentations' counts (e.g. transport problems that did not converge) over the images segmented
    by this predictor (``images``; a resumed run does not segment finished shards again).
    """

    needs_image = True
    in_loader = False

    def __init__(
        self,
        segmenter: Any,
        dataset: SegDataset,
        description: dict[str, Any] | None = None,
        save_dir: str | Path | None = None,
    ):
        self.segmenter = segmenter
        self.dataset = dataset
        self.description = description or {}
        self.save_dir = Path(save_dir) if save_dir is not None else None
        self.diagnostics: dict[str, int] = {}

    def describe(self) -> dict[str, Any]:
        return {"kind": "segmenter", **self.description}

    def inputs(self) -> dict[str, Any]:
        bank = getattr(self.segmenter, "bank", None)
        return {"bank": bank.fingerprint() if bank is not None else None}

    def __call__(self, index: int, image: np.ndarray | None) -> np.ndarray:
        assert image is not None
        background = self.dataset.has_background
        result = self.segmenter.segment(image, self.dataset.query_classes, background=background)
        self.diagnostics["images"] = self.diagnostics.get("images", 0) + 1
        for key, count in getattr(result, "diagnostics", {}).items():
            self.diagnostics[key] = self.diagnostics.get(key, 0) + count
        labels = result.labels + 1 if background else result.labels  # BACKGROUND (-1) -> 0, class i -> i + 1
        if self.save_dir is not None:
            save_label_png(labels, self.save_dir / f"{self.dataset.samples[index].stem}.png", self.dataset.classes)
        return labels


def save_label_png(labels: np.ndarray, path: Path, classes: list[str] | tuple[str, ...] | None = None) -> None:
    """Write class indices ``[H, W]`` as an 8-bit (or 16-bit, above 255) PNG, atomically; ``classes`` are
    recorded in the PNG's ``protoseg`` text chunk."""
    import io

    from PIL import Image

    from protoseg.viz import png_info

    dtype = np.uint8 if labels.max(initial=0) <= 255 else np.uint16
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(labels.astype(dtype))).save(
        buf, format="PNG", pnginfo=png_info(list(classes or []), None))
    write_atomic(path, buf.getvalue())


class PredictionFolder:
    """Label-map PNGs ``folder/<stem>.png`` written by any method.

    A pixel holds the index of a class in ``dataset.classes`` (what ``--list-classes`` prints). Values
    outside ``0..C-1`` count as "no class" (they never match, like MMSeg's histogram range).
    """

    needs_image = False
    in_loader = True

    def __init__(self, folder: str | Path, dataset: SegDataset):
        self.folder = Path(folder).expanduser()
        self.dataset = dataset
        if not self.folder.is_dir():
            raise ProtosegError(f"predictions folder {self.folder} does not exist")
        present = {p.name for p in self.folder.iterdir()}
        self.paths: list[Path] = []
        missing = []
        for sample in dataset.samples:
            name = self._find(sample.stem, sample.label.name, present)
            if name is None:
                missing.append(sample.stem)
            else:
                self.paths.append(self.folder / name)
        if missing:
            raise ProtosegError(
                f"{len(missing)} of {len(dataset)} predictions are missing in {self.folder} (e.g. "
                f"{', '.join(m + '.png' for m in missing[:3])}); expected one <image stem>.png per image, "
                f"pixel = class index as `protoseg eval --dataset {dataset.name} --list-classes` prints it"
            )

    def check_sizes(self) -> None:
        """Check every prediction against its ground truth from the file headers (readable, single-channel,
        same size), so a bad file stops the run before it starts.

        Raises:
            ProtosegError: naming the first bad prediction.
        """
        from protoseg.datasets.base import label_size

        for sample, path in zip(self.dataset.samples, self.paths, strict=True):
            pw, ph = label_size(path)
            gw, gh = label_size(sample.label)
            if (pw, ph) != (gw, gh):
                raise ProtosegError(f"{sample.stem}: prediction is {pw}x{ph} but the ground truth is {gw}x{gh}; "
                                    "predict at the original size")

    @staticmethod
    def _find(stem: str, label_name: str, present: set[str]) -> str | None:
        candidates = [stem + ".png"]
        for suffix in ("_leftImg8bit",):  # Cityscapes: also accept MMSeg's short name
            if stem.endswith(suffix):
                candidates.append(stem.removesuffix(suffix) + ".png")
        return next((c for c in candidates if c in present), None)

    def describe(self) -> dict[str, Any]:
        return {"kind": "predictions", "folder": str(self.folder.resolve())}

    def inputs(self) -> dict[str, Any]:
        return {"predictions": files_digest(self.paths)}

    def __call__(self, index: int, image: np.ndarray | None) -> np.ndarray:
        return read_label_png(self.paths[index]).astype(np.int64)


@dataclass
class EvalResult:
    """Outcome of :func:`evaluate`.

    Attributes:
        dataset: dataset name; classes: scored class names.
        totals: int64 ``[4, C]`` dataset-wide intersect / union / pred / label pixel counts.
        images: number of images scored.
        scores: :class:`~protoseg.metrics.Scores` from ``totals``.
        config: what was evaluated (predictor description, protocol).
    """

    dataset: str
    classes: tuple[str, ...]
    totals: np.ndarray
    images: int
    scores: Scores
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able report; scores in percent (×100) as the papers report them, NaN -> null."""

        def pct(x: float) -> float | None:
            return None if np.isnan(x) else round(float(x) * 100, 4)

        return {
            "dataset": self.dataset,
            "images": self.images,
            "num_classes": len(self.classes),
            "mIoU": pct(self.scores.miou),
            "mAcc": pct(self.scores.macc),
            "aAcc": pct(self.scores.aacc),
            "per_class": [
                {"class": c, "IoU": pct(i), "Acc": pct(a)}
                for c, i, a in zip(self.classes, self.scores.iou, self.scores.acc, strict=True)
            ],
            "totals": {
                k: self.totals[r].tolist() for r, k in enumerate(("intersect", "union", "pred", "label"))
            },
            "config": self.config,
        }

    def to_markdown(self, per_class: bool = True) -> str:
        """A Markdown report: summary row, then (optionally) per-class IoU / Acc."""
        d = self.to_dict()

        def fmt(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.2f}"

        lines = [
            f"# {self.dataset}: {self.images} images",
            "",
            "| mIoU | mAcc | aAcc |",
            "|---:|---:|---:|",
            f"| {fmt(d['mIoU'])} | {fmt(d['mAcc'])} | {fmt(d['aAcc'])} |",
        ]
        if per_class:
            lines += ["", "| # | class | IoU | Acc |", "|---:|---|---:|---:|"]
            lines += [
                f"| {i} | `{row['class']}` | {fmt(row['IoU'])} | {fmt(row['Acc'])} |"
                for i, row in enumerate(d["per_class"])
            ]
        if self.config:
            lines += ["", "```json", json.dumps(self.config, indent=2, sort_keys=True), "```"]
        return "\n".join(lines) + "\n"


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file + rename."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_reports(result: EvalResult, out: str | Path, per_class: bool = True) -> tuple[Path, Path]:
    """Write ``out`` (JSON) and the same path with ``.md`` (Markdown); returns both paths."""
    out = Path(out)
    md = out.with_suffix(".md")
    write_atomic(out, (json.dumps(result.to_dict(), indent=2) + "\n").encode())
    write_atomic(md, result.to_markdown(per_class).encode())
    return out, md


def run_fingerprint(dataset: SegDataset, predictor: Predictor, shard_size: int) -> dict[str, Any]:
    """What identifies a run (stored in ``run.json``; a run resumes only when it is unchanged).

    ``inputs`` holds the content stamps: images and ground truth (sizes + modification times) and the
    predictor's own inputs (prediction files, bank id and files).
    """
    stems = hashlib.sha256("\n".join(dataset.stems).encode()).hexdigest()
    own = predictor.inputs() if hasattr(predictor, "inputs") else {}
    return {
        "format": RUN_FORMAT,
        "protoseg": __version__,
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


#: Files of a run folder that belong to protoseg (removed when the run starts fresh).
RUN_FILE = "run.json"
RUN_OWNED = ("shard-*.npz",)


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


def evaluate(
    dataset: SegDataset,
    predictor: Predictor,
    run_dir: str | Path | None = None,
    shard_size: int = 50,
    workers: int = 4,
    progress: Callable[[int, int], None] | None = None,
    config: dict[str, Any] | None = None,
) -> EvalResult:
    """Score ``predictor`` on every image of ``dataset``.

    Args:
        run_dir: folder for resumable shards (``None``: keep nothing, no resume).
        shard_size: images per shard.
        workers: loader threads (0 = load in the calling thread).
        progress: ``progress(done, total)`` after each image (resumed images count as done at once).
        config: extra JSON-able description stored in the result.

    Raises:
        ProtosegError: unreadable files, size mismatches, or a run folder that is not protoseg's.

    A run folder holding another run (other settings, or inputs whose contents changed) is started fresh.
    """
    if shard_size <= 0:
        raise ProtosegError("shard size must be positive")
    C, N = dataset.num_classes, len(dataset)
    n_shards = (N + shard_size - 1) // shard_size
    counts = np.zeros((N, 4, C), dtype=np.int64)
    done_shards: set[int] = set()
    root: Path | None = None
    if run_dir is not None:
        root = prepare_work_dir(run_dir, run_fingerprint(dataset, predictor, shard_size), marker=RUN_FILE,
                                owned=RUN_OWNED, what="evaluation")
        for s in range(n_shards):
            path = root / f"shard-{s:05d}.npz"
            if path.is_file():
                with np.load(path) as z:
                    lo, hi = s * shard_size, min(N, (s + 1) * shard_size)
                    if z["counts"].shape != (hi - lo, 4, C):
                        raise ProtosegError(f"{path} does not match this run; delete {root} to start over")
                    counts[lo:hi] = z["counts"]
                done_shards.add(s)

    todo = [i for i in range(N) if i // shard_size not in done_shards]
    done = N - len(todo)
    if progress:
        progress(done, N)

    def check(i: int, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
        if pred.shape != gt.shape:
            raise ProtosegError(
                f"{dataset.samples[i].stem}: prediction is {pred.shape[1]}x{pred.shape[0]} but "
                f"the ground truth is {gt.shape[1]}x{gt.shape[0]}; predict at the original size"
            )
        return intersect_and_union(pred, gt, C)

    def load(i: int) -> tuple[np.ndarray | None, np.ndarray]:
        """``(image or None, counts [4, C])`` for in-loader predictors, else ``(image or None, gt)``."""
        if predictor.in_loader:
            image = dataset.load_image(i) if predictor.needs_image else None
            return None, check(i, predictor(i, image), dataset.load_label(i))
        if predictor.needs_image:
            image, gt = dataset.load(i)
            return image, gt
        return None, dataset.load_label(i)

    for i, (image, payload) in _prefetch(load, todo, workers):
        counts[i] = payload if predictor.in_loader else check(i, predictor(i, image), payload)
        done += 1
        if progress:
            progress(done, N)
        shard = i // shard_size
        last = min(N, (shard + 1) * shard_size) - 1
        if root is not None and i == last:
            buf = _npz_bytes(counts[shard * shard_size : last + 1])
            write_atomic(root / f"shard-{shard:05d}.npz", buf)

    totals = counts.sum(0)
    return EvalResult(
        dataset.name,
        dataset.classes,
        totals,
        N,
        summarize(totals),
        {"predictor": predictor.describe(), **(config or {}), **_diagnostics(predictor)},
    )


def _diagnostics(predictor: Predictor) -> dict[str, Any]:
    """``{"diagnostics": counts}`` of a predictor that keeps counts beyond the image count, else ``{}``."""
    counts = getattr(predictor, "diagnostics", None)
    return {"diagnostics": dict(counts)} if counts and set(counts) != {"images"} else {}


def _npz_bytes(counts: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, counts=counts)
    return buf.getvalue()
