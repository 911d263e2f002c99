"""Images per second of `Segmenter.segment_many` over a folder of parts-world scenes, with 1 and 2 worker
processes for the region work, and the CPU seconds per image spent outside the model forwards — the figure
that bounds an accelerator's throughput per CPU core.

    python benchmarks/throughput.py [--images 16] [--size 448] [--preset handcrafted] [--batch-size 4]
                                    [--replay-forwards]

The scenes and their hand-crafted bank are written to a temporary folder. Every run's labels are compared
with one-image-at-a-time `Segmenter.segment`. With ``--replay-forwards`` the matcher's model outputs
(``forward_windows``) are recorded once, during that reference pass, and replayed, so the runs measure the
pipeline alone, as beside a fast accelerator. First the one-at-a-time reference pass, then one line per
worker count::

    one-at-a-time images N seconds T images_per_s X forward_s_per_image F cpu_s_per_image_outside_forwards C
    workers W images N seconds T images_per_s X forward_s_per_image F cpu_s_per_image_outside_forwards C

(``C``: CPU time of this process and its worker processes, minus the CPU time spent in the forwards, per
image), and last::

    throughput images N images_per_s_1worker A images_per_s_2workers B scaling S identical 1

(``S = B / A``; ``identical``: 1 when every run's labels equal the one-at-a-time path's).
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from protoseg.images import load_image  # noqa: E402
from protoseg.offline.examples import bank_from_examples  # noqa: E402
from protoseg.segment import Segmenter  # noqa: E402
from protoseg.worlds import PARTS_WORLD_CLASSES, write_examples  # noqa: E402


def _key(crop: torch.Tensor) -> str:
    return hashlib.sha1(crop.detach().cpu().numpy().tobytes()).hexdigest()


class Forwards:
    """Wraps a matcher's ``forward_windows``: times it (wall and process CPU seconds), records its per-window
    outputs, or replays recorded ones."""

    def __init__(self, matcher):
        self.matcher, self.real = matcher, matcher.forward_windows
        self.recorded: dict[str, object] = {}
        self.replay = False
        self.wall = self.cpu = 0.0
        matcher.forward_windows = self

    def __call__(self, crops: torch.Tensor) -> list:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            if self.replay:
                return [self.recorded[_key(c)] for c in crops]
            out = self.real(crops)
            self.recorded.update((_key(c), item) for c, item in zip(crops, out, strict=True))
            return out
        finally:
            self.wall += time.perf_counter() - wall
            self.cpu += time.process_time() - cpu


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _report(label: str, images: int, seconds: float, cpu: float, forwards: Forwards) -> None:
    """One line: rate, forward seconds and CPU seconds outside the forwards, per image."""
    print(f"{label} images {images} seconds {seconds:.2f} images_per_s {images / seconds:.3f} "
          f"forward_s_per_image {forwards.wall / images:.4f} "
          f"cpu_s_per_image_outside_forwards {(cpu - forwards.cpu) / images:.4f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=448, help="scene side in pixels")
    parser.add_argument("--preset", default="handcrafted")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per forward, across images")
    parser.add_argument("--replay-forwards", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_examples(root / "train", 4, seed=7, size=args.size)
        write_examples(root / "test", args.images, seed=6, size=args.size)
        bank_from_examples(root / "train", "handcrafted").save(root / "bank")
        paths = sorted((root / "test" / "images").glob("*.png"))
        seg = Segmenter.from_preset(args.preset, bank=root / "bank", device="cpu")
        forwards = Forwards(seg.matcher)
        cpu, wall = _cpu_seconds(), time.perf_counter()
        reference = [seg.segment(load_image(p), PARTS_WORLD_CLASSES).labels for p in paths]
        _report("one-at-a-time", len(paths), time.perf_counter() - wall, _cpu_seconds() - cpu, forwards)
        forwards.replay = args.replay_forwards
        rates, identical = {}, True
        for workers in (1, 2):
            forwards.wall = forwards.cpu = 0.0
            cpu, wall = _cpu_seconds(), time.perf_counter()
            results = list(seg.segment_many((load_image(p) for p in paths), PARTS_WORLD_CLASSES, workers=workers,
                                            batch_size=args.batch_size))
            seconds = time.perf_counter() - wall
            identical &= all(np.array_equal(r.labels, ref) for r, ref in zip(results, reference, strict=True))
            rates[workers] = len(paths) / seconds
            _report(f"workers {workers}", len(paths), seconds, _cpu_seconds() - cpu, forwards)
    print(f"throughput images {len(paths)} images_per_s_1worker {rates[1]:.3f} images_per_s_2workers "
          f"{rates[2]:.3f} scaling {rates[2] / rates[1]:.2f} identical {int(identical)}")


if __name__ == "__main__":
    main()
