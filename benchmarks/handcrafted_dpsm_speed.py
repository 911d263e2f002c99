"""Seconds per 448 x 448 image of ``--preset handcrafted-dpsm`` on this machine's CPU.

A bank is built from a world's 40 support scenes with ``protoseg bank from-examples EXAMPLES --preset
handcrafted-dpsm`` (the same builder, in process), then held-out 448-px scenes are segmented with
``Segmenter.segment`` exactly as ``protoseg segment --preset handcrafted-dpsm`` does (one sliding
window per image). The first image is a warm-up; the rest are timed, whole and per stage: hand-crafted
features, superpixels (fine sub-regions + coarse proposals), sub-region pooling, transport and
composition. Torch threads are left at their default (set ``OMP_NUM_THREADS`` to pin them).

Usage: ``python benchmarks/handcrafted_dpsm_speed.py [--world parts|recombined] [--images 10] [--workdir DIR]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import functools  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import protoseg.match.dpsm.matcher as dpsm_module  # noqa: E402
from protoseg.bank import PrototypeBank  # noqa: E402
from protoseg.config.segment import get_preset  # noqa: E402
from protoseg.images import load_image  # noqa: E402
from protoseg.offline.examples import bank_from_examples  # noqa: E402
from protoseg.segment import Segmenter  # noqa: E402
from protoseg.worlds import PARTS_WORLD_CLASSES, write_examples  # noqa: E402
from protoseg.worlds.cache import WORLD_SPLITS  # noqa: E402

TIMES: dict[str, float] = {}


def timed(name: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        TIMES[name] = TIMES.get(name, 0.0) + time.perf_counter() - t0
        return out

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", choices=("parts", "recombined"), default="parts")
    parser.add_argument("--images", type=int, default=10, help="timed images (after one warm-up)")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="handcrafted-dpsm-speed-"))
    splits = WORLD_SPLITS[args.world]
    if not (root / "bank").is_dir():
        train, test = splits["train"], splits["test"]
        write_examples(root / "train", int(train["count"]), int(train["seed"]), world=args.world,
                       combos=str(train["combos"]))
        write_examples(root / "test", args.images + 1, int(test["seed"]), world=args.world, combos=str(test["combos"]))
        t0 = time.perf_counter()
        bank_from_examples(root / "train", "handcrafted-dpsm").save(root / "bank")
        print(f"bank from {train['count']} support scenes: {time.perf_counter() - t0:.1f} s")
    bank = PrototypeBank.load(root / "bank")
    seg = Segmenter(get_preset("handcrafted-dpsm"), bank)
    m = seg.matcher
    features = seg.models.features
    features.__class__.__call__ = timed("features", features.__class__.__call__)
    dpsm_module.superpixels = timed("superpixels (fine)", dpsm_module.superpixels)
    m.propose = timed("proposals (coarse superpixels)", m.propose)
    m.subregions = timed("sub-regions + pooling", m.subregions)
    m.proposal_scores = timed("transport", m.proposal_scores)
    m.compose = timed("composition", m.compose)
    paths = sorted((root / "test" / "images").glob("*.png"))[: args.images + 1]
    seg.segment(load_image(paths[0]), PARTS_WORLD_CLASSES)  # warm-up
    TIMES.clear()
    totals = []
    for path in paths[1:]:
        image = load_image(path)
        t0 = time.perf_counter()
        seg.segment(image, PARTS_WORLD_CLASSES)
        totals.append(time.perf_counter() - t0)
    n = len(totals)
    parts = int((bank.table["level"] == "part").sum())
    print(f"{args.world} world, {n} scenes of 448 x 448 (one window each), bank {parts} part prototypes, "
          f"torch threads {torch.get_num_threads()}, preset handcrafted-dpsm: {seg.preset.matcher_options}")
    print(f"per image: mean {np.mean(totals):.2f} s, median {np.median(totals):.2f} s, max {np.max(totals):.2f} s")
    for name, value in TIMES.items():
        print(f"  {name}: {value / n:.3f} s / image")


if __name__ == "__main__":
    main()
