"""Throughput of the evaluation harness itself (model excluded), in images/s on this machine.

Generates an ADE20K-layout dataset of ADE-sized images (683x512 JPEG + PNG labels, 150 classes) and a
folder of prediction PNGs, then times:

- ``predictions``: scoring saved predictions (read label PNG + prediction PNG, accumulate counts);
- ``model-path``: what a model run costs besides the model (decode the JPEG image + label PNG,
  accumulate counts of a prediction made in memory).

Usage::

    python benchmarks/eval_harness.py [--images 200] [--workers 0 2 4] [--root /tmp/protoseg-bench]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from protoseg.datasets import open_dataset
from protoseg.eval.labelmaps import PredictionFolder
from protoseg.eval.shards import evaluate


def make_dataset(root: Path, count: int, seed: int = 0) -> Path:
    img_dir, ann_dir, pred_dir = root / "images/validation", root / "annotations/validation", root / "pred"
    for d in (img_dir, ann_dir, pred_dir):
        d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        stem = f"ADE_val_{i:08d}"
        if (pred_dir / f"{stem}.png").exists():
            continue
        h, w = 512, 683
        # piecewise-constant labels (blocks) like real annotations, so PNGs compress realistically
        blocks = rng.integers(0, 151, size=(16, 22)).astype(np.uint8)
        raw = np.kron(blocks, np.ones((32, 32), np.uint8))[:h, :w]
        image = (
            rng.integers(0, 255, (h // 8, w // 8 + 1, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)[:h, :w]
        )
        Image.fromarray(image).save(img_dir / f"{stem}.jpg", quality=90)
        Image.fromarray(raw).save(ann_dir / f"{stem}.png")
        pred = np.where(
            rng.random((h, w)) < 0.7, np.maximum(raw.astype(int) - 1, 0), rng.integers(0, 150, (h, w))
        )
        Image.fromarray(pred.astype(np.uint8)).save(pred_dir / f"{stem}.png")
    return root


class InMemoryPredictor:
    """Stands in for a model: needs the decoded image, returns a label map of its size."""

    needs_image = True
    in_loader = False

    def __init__(self, num_classes: int):
        self.rng = np.random.default_rng(0)
        self.num_classes = num_classes

    def describe(self):
        return {"kind": "in-memory"}

    def __call__(self, index, image):
        h, w = image.shape[:2]
        return np.broadcast_to(np.arange(w) % self.num_classes, (h, w))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4])
    parser.add_argument("--root", type=Path, default=Path("/tmp/protoseg-bench-ade"))
    args = parser.parse_args()
    root = make_dataset(args.root, args.images)
    ds = open_dataset("ade20k", root).limit(args.images)
    print(
        f"dataset: {len(ds)} images of 683x512, 150 classes, at {root}; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    for workers in args.workers:
        for name, predictor in (
            ("predictions", PredictionFolder(root / "pred", ds)),
            ("model-path", InMemoryPredictor(150)),
        ):
            start, cpu = time.perf_counter(), time.process_time()
            result = evaluate(ds, predictor, workers=workers)
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
            print(
                f"{name:12s} workers={workers}: {len(ds) / elapsed:7.1f} images/s "
                f"({elapsed:.2f} s wall, {1000 * cpu / len(ds):.1f} CPU-ms/image, "
                f"mIoU {result.scores.miou * 100:.2f})"
            )


if __name__ == "__main__":
    main()
