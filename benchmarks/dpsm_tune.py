"""Choose the ``handcrafted-dpsm`` settings on the *development* splits of both procedural worlds.

Every candidate runs DPSM sub-region transport on the hand-crafted backend with the preset's SAM-free
(superpixel) proposals over the ``dev`` split of the parts world and of the recombined world (seeds of
their own: neither the support scenes that build the banks nor the held-out ``test`` scenes that
``protoseg ablate`` reports on). Candidates are ranked by the mean of the two worlds' mIoU; the
held-out numbers come from ``protoseg ablate --suite dpsm --split test`` afterwards.

Grids: ``capacity`` (supply per class / per view / per cluster x capacity τ, exact transport, with the
image-to-image, nearest-part and FreeDA-local references), ``proposals`` (coarse-superpixel scale of the
proposals for the best settings), ``solver`` (Sinkhorn at fixed / automatic ε against exact transport at
the best capacity, and the next capacity up).

Usage: ``python benchmarks/dpsm_tune.py [--grid capacity|proposals|solver] [--limit N] [--data-root DIR]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from protoseg.config.superpixels import SuperpixelParams  # noqa: E402
from protoseg.eval.ablations import Ablation, run_ablations  # noqa: E402

EXACT = {"mode": "subregion-ot", "emd_solver": "exact", "composition": "mean"}


def _row(name: str, **options) -> Ablation:
    return Ablation(name, {**EXACT, **options}, preset="handcrafted-dpsm")


GRIDS: dict[str, list[Ablation]] = {
    "capacity": [
        Ablation("FreeDA local", {}, preset="handcrafted"),
        Ablation("img-to-img", {"mode": "image-to-image"}, preset="handcrafted-dpsm"),
        Ablation("nearest part", {"mode": "nearest-part"}, preset="handcrafted-dpsm"),
        *[_row(f"class · τ {t:g}", supply="class", capacity=t) for t in (1.0, 4.0, 16.0, 64.0)],
        *[_row(f"view · τ {t:g}", supply="view", capacity=t) for t in (1.0, 2.0, 4.0, 8.0)],
        *[_row(f"cluster · τ {t:g}", supply="cluster", capacity=t) for t in (1.0, 2.0, 4.0, 8.0)],
    ],
    "proposals": [
        _row(f"view · τ {t:g} · proposals scale {s:g}", supply="view", capacity=t,
             proposal_superpixels=SuperpixelParams(scale=s, sigma=1.0, min_size=int(0.4 * s)))
        for t in (4.0, 8.0) for s in (300.0, 1000.0, 3000.0)
    ],
    "solver": [
        Ablation(f"view · τ 8 · Sinkhorn ε {e}", {"mode": "subregion-ot", "emd_solver": "sinkhorn", "epsilon": e,
                                                 "supply": "view", "capacity": 8.0, "prune_keep": 0.0},
                 preset="handcrafted-dpsm")
        for e in (0.05, 0.01, "auto")
    ] + [_row("view · τ 8 · exact", supply="view", capacity=8.0),
         _row("view · τ 16 · exact", supply="view", capacity=16.0)],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", choices=sorted(GRIDS), default="capacity")
    parser.add_argument("--limit", type=int, default=None, help="first N dev scenes of each world")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="folder holding parts-world/ and recombined-world/ (default: $PROTOSEG_CACHE)")
    args = parser.parse_args()
    rows = GRIDS[args.grid]
    scores: dict[str, dict[str, float]] = {r.name: {} for r in rows}
    for world in ("parts", "recombined"):
        root = None if args.data_root is None else args.data_root / f"{world}-world"
        def progress(stage: str, done: int, total: int, world: str = world) -> None:
            if done == total or done % 10 == 0:
                print(f"  {world}: {stage} {done}/{total}", file=sys.stderr, flush=True)

        for row, res in run_ablations(root, tuple(rows), limit=args.limit, workers=1, world=world, split="dev",
                                      progress=progress):
            scores[row.name][world] = 100 * res.scores.miou
            iou = " ".join(f"{100 * x:5.1f}" for x in res.scores.iou)
            print(f"{world:10s} | {row.name:40s} | {100 * res.scores.miou:5.1f} | {iou} | "
                  f"{res.config['seconds_per_image']:.2f} s", flush=True)
    print("\n| candidate | parts (dev) | recombined (dev) | mean |\n|---|---:|---:|---:|")
    for name, s in sorted(scores.items(), key=lambda kv: -sum(kv[1].values())):
        print(f"| {name} | {s['parts']:.1f} | {s['recombined']:.1f} | {(s['parts'] + s['recombined']) / 2:.1f} |")


if __name__ == "__main__":
    main()
