"""The matching modes of DPSM's Table 3 on the procedural parts world (classes made of parts).

A bank is built from labelled parts-world scenes with the hand-crafted feature backend
(:func:`protoseg.offline.examples.bank_from_examples`: whole-level prototypes + part prototypes with eq. 7
supplies, no coarse-fine clustering), held-out scenes are segmented with the DPSM matcher in each
matching mode, and mIoU is reported (FreeDA's local matching on the same bank for reference).

No SAM weights exist on this machine (a random SAM's masks are meaningless), so proposals are the
SAM-free alternative: coarse Felzenszwalb segments (``proposals="superpixels"``); sub-regions are the
same fine superpixels the bank was built with.

A quick look at the paper's setting on a small world; the full tables (every Table 3 row, the switches
beyond the paper, per-class IoU, both worlds, superpixel or object-mask proposals) come from
``protoseg ablate --suite dpsm``.

Usage: ``python benchmarks/dpsm_partsworld.py [--train 16 --test 6 --workdir DIR]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from protoseg.config.segment import get_preset  # noqa: E402
from protoseg.config.superpixels import SuperpixelParams  # noqa: E402
from protoseg.images import load_image  # noqa: E402
from protoseg.offline.examples import bank_from_examples  # noqa: E402
from protoseg.segment import Segmenter  # noqa: E402
from protoseg.worlds import PARTS_WORLD_CLASSES, write_examples  # noqa: E402

MODES = ["image-to-image", "single", "image-to-class", "subregion-ot"]


def miou(segmenter: Segmenter, test_root: Path) -> tuple[float, float]:
    C = len(PARTS_WORLD_CLASSES)
    inter, union = np.zeros(C), np.zeros(C)
    paths = sorted((test_root / "images").glob("*.png"))
    t0 = time.perf_counter()
    for path in paths:
        gt = np.asarray(Image.open(test_root / "masks" / path.name)).astype(np.int64)
        pred = segmenter.segment(load_image(path), PARTS_WORLD_CLASSES).labels
        for c in range(C):
            inter[c] += ((pred == c) & (gt == c)).sum()
            union[c] += ((pred == c) | (gt == c)).sum()
    present = union > 0
    return float((inter[present] / union[present]).mean()), (time.perf_counter() - t0) / len(paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=16)
    parser.add_argument("--test", type=int, default=6)
    parser.add_argument("--epsilon", type=float, default=0.05)
    parser.add_argument("--proposal-scale", type=float, default=1000.0)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="dpsm-partsworld-"))
    write_examples(root / "train", args.train, seed=11)
    write_examples(root / "test", args.test, seed=12)
    fine = get_preset("handcrafted").superpixels
    bank = bank_from_examples(root / "train", "handcrafted")
    levels = bank.table["level"]
    print(f"bank: {int((levels == 'whole').sum())} whole + {int((levels == 'part').sum())} part prototypes, "
          f"{args.train} train / {args.test} test scenes, fine superpixels {fine}, proposals = Felzenszwalb "
          f"scale {args.proposal_scale}, eps {args.epsilon}")
    print("| matching (Table 3 column) | mIoU | s / image |")
    print("|---|---|---|")
    score, sec = miou(Segmenter(get_preset("handcrafted"), bank), root / "test")
    print(f"| FreeDA local (reference, handcrafted preset) | {100 * score:.1f} | {sec:.1f} |")
    for mode in MODES:
        preset = get_preset("dpsm", features="handcrafted", sam=None, superpixels=fine, matcher_options={
            "mode": mode, "proposals": "superpixels", "epsilon": args.epsilon,
            "proposal_superpixels": SuperpixelParams(scale=args.proposal_scale, sigma=1.0, min_size=400)})
        score, sec = miou(Segmenter(preset, bank), root / "test")
        print(f"| {mode} | {100 * score:.1f} | {sec:.1f} |")


if __name__ == "__main__":
    main()
