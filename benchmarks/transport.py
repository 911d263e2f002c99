"""Batched log-domain Sinkhorn vs a per-proposal POT ``ot.sinkhorn`` loop, at ADE20K scale.

The problem is DPSM's sub-region transport (eq. 10) for one image: suppliers are the fused part prototypes
of all classes (``classes x coarse clusters x parts per cluster``, supply eq. 7/12 normalised to 1 per
class), demanders are the sub-regions of each proposal (demand = area share) plus a dustbin demanding
``C - 1`` at zero cost; cost ``1 - cosine``. Both solvers run the same ``eps`` and the same number of
iterations (POT with ``stopThr=0``, ours with ``stop_thr=0``). Timed: the Sinkhorn solve and the class
probabilities (eq. 11) given the cost matrices; building the cost matrices is reported on its own line.

Ours is a log-domain solver (stable at small ``eps``). The per-proposal reference of the same kind is POT's
log-domain ``ot.sinkhorn(method="sinkhorn_log")``; the last line compares against it. POT's plain
``sinkhorn`` (kernel-space, underflows at small ``eps``) and ``sinkhorn_stabilized`` (log-domain absorption)
loops are timed too and printed above it.

Features are random unit vectors with class structure (timing does not depend on their values).

Usage: ``python benchmarks/transport.py [--classes 150 --clusters 64 --parts 8 --proposals 100
--subregions 20 --dim 768 --eps 0.05 --iterations 100]``. The last line reads
``speedup <x> max_abs_diff <y>`` (max abs difference of the class probabilities).
"""

from __future__ import annotations

import os

# With two cores, OpenMP threads that spin-wait between MKL and ATen calls stall the many small ops of an
# iteration loop; passive waiting is set before torch loads (it does not affect numpy/POT's BLAS).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import ot  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from protoseg.match.transport import sinkhorn_grouped_mass  # noqa: E402


def make_problem(args, rng: np.random.Generator):
    C, K, F, P, D = args.classes, args.clusters, args.parts, args.proposals, args.dim
    centres = rng.standard_normal((C, D)).astype(np.float32)
    protos = centres[:, None, :] + 0.8 * rng.standard_normal((C, K * F, D)).astype(np.float32)
    protos = protos.reshape(C * K * F, D)
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    groups = np.repeat(np.arange(C), K * F)
    area = rng.random(C * K * F).astype(np.float64) + 0.1
    supply = np.zeros_like(area)
    for c in range(C):  # eq. 7 / 12: area share within each support image, 1/N per image -> 1 per class
        rows = slice(c * K * F, (c + 1) * K * F)
        per_image = area[rows].reshape(K, F)
        supply[rows] = (per_image / per_image.sum(1, keepdims=True) / K).reshape(-1)
    counts = rng.integers(max(1, args.subregions - 5), args.subregions + 6, size=P)
    n = int(counts.max()) + 1  # + dustbin
    feats = np.zeros((P, n - 1, D), np.float32)
    demand = np.zeros((P, n), np.float64)
    for p in range(P):
        c = rng.integers(C)
        q = centres[c] + 0.8 * rng.standard_normal((counts[p], D)).astype(np.float32)
        feats[p, :counts[p]] = q / np.linalg.norm(q, axis=1, keepdims=True)
        d = rng.random(counts[p]) + 0.05
        demand[p, :counts[p]] = d / d.sum()
        demand[p, -1] = C - 1
    return protos, groups, supply, feats, demand, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=150)
    parser.add_argument("--clusters", type=int, default=64)
    parser.add_argument("--parts", type=int, default=8)
    parser.add_argument("--proposals", type=int, default=100)
    parser.add_argument("--subregions", type=int, default=20)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--eps", type=float, default=0.05)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    protos, groups, supply, feats, demand, counts = make_problem(args, rng)
    C, P = args.classes, args.proposals
    m, n = protos.shape[0], demand.shape[1]
    print(f"suppliers m={m} ({C} classes x {args.clusters} clusters x {args.parts} parts), proposals={P}, "
          f"sub-regions {counts.min()}-{counts.max()} (+dustbin, padded n={n}), dim={args.dim}, "
          f"eps={args.eps}, iterations={args.iterations}, torch threads={torch.get_num_threads()}")

    # ---- ours: one GEMM for all costs, [P, n, m] layout (dustbin row = 0), batched solve
    t0 = time.perf_counter()
    P_t = torch.from_numpy(protos)
    Q_t = torch.from_numpy(feats)
    Mt = torch.cat([torch.matmul(Q_t, P_t.T).neg_().add_(1.0), torch.zeros(P, 1, m)], dim=1)
    real = torch.arange(n)[None, :] < torch.from_numpy(counts)[:, None]  # [P, n] sub-regions
    mask = real.clone()
    mask[:, -1] = True  # dustbin
    t_cost_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    probs, res = sinkhorn_grouped_mass(torch.from_numpy(supply).float(), torch.from_numpy(demand).float(),
                                       Mt.transpose(1, 2), args.eps, torch.from_numpy(groups), C, real,
                                       mask=mask, num_iter_max=args.iterations, stop_thr=0.0)
    t_ours = time.perf_counter() - t0
    probs = probs.double().numpy()

    # ---- POT: per-proposal loops on the same problems (float64)
    t_cost_pot = 0.0
    t_pot = {"sinkhorn": 0.0, "sinkhorn_stabilized": 0.0, "sinkhorn_log": 0.0}
    pot_probs = {name: np.zeros((P, C)) for name in t_pot}
    for p in range(P):
        k = int(counts[p])
        t0 = time.perf_counter()
        M = np.concatenate([1.0 - protos @ feats[p, :k].T, np.zeros((m, 1), np.float32)], 1)
        M = M.astype(np.float64)
        b = np.concatenate([demand[p, :k], [demand[p, -1]]])
        t_cost_pot += time.perf_counter() - t0
        for method in t_pot:
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                G = ot.sinkhorn(supply, b, M, args.eps, method=method, numItermax=args.iterations, stopThr=0.0)
            pot_probs[method][p] = np.bincount(groups, weights=G[:, :k].sum(1), minlength=C)
            t_pot[method] += time.perf_counter() - t0

    print(f"cost matrices: ours {t_cost_ours:.2f} s (one GEMM), POT loop {t_cost_pot:.2f} s")
    for method, seconds in t_pot.items():
        d = float(np.abs(probs - pot_probs[method]).max())
        print(f"sinkhorn + class probabilities: ours {t_ours:.2f} s, POT {method} loop {seconds:.2f} s "
              f"(ratio {seconds / t_ours:.1f}, max_abs_diff {d:.2e})")
    pot_probs, t_pot = pot_probs["sinkhorn_log"], t_pot["sinkhorn_log"]  # the log-domain reference
    diff = float(np.abs(probs - pot_probs).max())
    print(f"class-probability sums: ours {probs.sum(1).min():.6f}-{probs.sum(1).max():.6f}, "
          f"POT {pot_probs.sum(1).min():.6f}-{pot_probs.sum(1).max():.6f}")
    print(f"speedup {t_pot / t_ours:.1f} max_abs_diff {diff:.2e}")


if __name__ == "__main__":
    main()
