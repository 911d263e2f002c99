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
--subregions 20 --dim 768 --eps 0.05 --iterations 100] [--skip-fixed]``. The line
``speedup <x> max_abs_diff <y>`` compares the batched solver with the POT log-domain loop at a fixed iteration
count (max abs difference of the class probabilities). The last line,
``vs_pot_sinkhorn <x> max_abs_diff <y>``, times POT's plain ``ot.sinkhorn`` per-proposal loop against
protoseg's default DPSM transport (``protoseg.match.dpsm.modes.subregion_ot``: size buckets, ``prune_keep``
pruning with class aggregates, the real sub-regions' stop criterion), both at the matcher's ``stop_thr`` and iteration
cap, given the cost matrices (their construction, the same GEMM work for both, is timed and printed on its own;
the ratio with it included is printed above); ``y`` is the max abs difference of the default transport's class
probabilities from an unpruned float64 solve converged to a marginal error of ``1e-7``.
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
from protoseg.bank import PrototypeBank  # noqa: E402
from protoseg.config.matchers import DpsmOptions  # noqa: E402
from protoseg.match.dpsm import DPSMMatcher, SubRegions, modes  # noqa: E402
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
    parser.add_argument("--skip-fixed", action="store_true",
                        help="only the default-transport comparison (the last line)")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    protos, groups, supply, feats, demand, counts = make_problem(args, rng)
    C, P = args.classes, args.proposals
    m, n = protos.shape[0], demand.shape[1]
    print(f"suppliers m={m} ({C} classes x {args.clusters} clusters x {args.parts} parts), proposals={P}, "
          f"sub-regions {counts.min()}-{counts.max()} (+dustbin, padded n={n}), dim={args.dim}, "
          f"eps={args.eps}, iterations={args.iterations}, torch threads={torch.get_num_threads()}")
    if args.skip_fixed:
        default_transport(args, protos, groups, supply, feats, demand, counts)
        return

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
    del Mt
    default_transport(args, protos, groups, supply, feats, demand, counts)


def dpsm_matcher(protos, groups, supply, C: int, **options) -> DPSMMatcher:
    """A DPSM matcher over the benchmark's prototypes (an in-memory bank; supply = its eq. 7 table column)."""
    table = {"label": [f"class{c}" for c in groups], "level": ["part"] * len(groups),
             "image_id": list(range(len(groups))), "part_id": [0] * len(groups), "supply": supply.tolist()}
    bank = PrototypeBank.create(protos, table, method="benchmark", feature_encoder="benchmark", dtype="float32")

    class _Models:
        device = torch.device("cpu")
        sam = None

    matcher = DPSMMatcher(bank, _Models(), DpsmOptions(proposals="superpixels", **options))
    matcher.prepare([f"class{c}" for c in range(C)])
    return matcher


def default_transport(args, protos, groups, supply, feats, demand, counts) -> None:
    """protoseg's default sub-region transport (buckets, pruning with class aggregates, stop on the real
    sub-regions' marginal error) against POT's plain ``ot.sinkhorn`` per-proposal loop (same ``eps``, same
    iteration cap and stop threshold, costs built inside both timings) and an unpruned, converged float64
    reference."""
    C, P = args.classes, args.proposals
    n = demand.shape[1] - 1
    valid = torch.arange(n)[None, :] < torch.from_numpy(counts)[:, None]
    d = torch.from_numpy(demand[:, :-1]).float()
    sub = SubRegions(torch.from_numpy(feats), d, valid, torch.zeros(P, feats.shape[2]), torch.zeros(P, 1, 1).bool())
    ours = dpsm_matcher(protos, groups, supply, C, epsilon=args.eps)
    t_ours_cost = [0.0]
    build = modes.costs

    def costs(features, prototypes):
        t = time.perf_counter()
        out = build(features, prototypes)
        t_ours_cost[0] += time.perf_counter() - t
        return out

    modes.costs = costs
    t0 = time.perf_counter()
    probs = modes.subregion_ot(sub, ours.prepared()).double().numpy()
    t_ours = time.perf_counter() - t0
    modes.costs = build
    t_ours_cost = t_ours_cost[0]
    stats = dict(ours.stats)
    keep = modes.pruned_count(len(protos), ours.prepared())
    t_pot = t_pot_cost = 0.0
    pot = np.zeros((P, C))
    for p in range(P):
        k = int(counts[p])
        t0 = time.perf_counter()
        M = np.concatenate([1.0 - protos @ feats[p, :k].T, np.zeros((len(protos), 1), np.float32)], 1)
        b = np.concatenate([demand[p, :k], [demand[p, -1]]])
        t1 = time.perf_counter()
        t_pot_cost += t1 - t0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            G = ot.sinkhorn(supply, b, M.astype(np.float64), args.eps, numItermax=ours.options.iterations,
                            stopThr=ours.options.stop_thr)
        pot[p] = np.bincount(groups, weights=G[:, :k].sum(1), minlength=C)
        t_pot += time.perf_counter() - t1
    t0 = time.perf_counter()
    reference = dpsm_matcher(protos, groups, supply, C, epsilon=args.eps, prune_keep=0.0,
                             transport_dtype="float64", stop_thr=1e-7, iterations=20000)
    ref = modes.subregion_ot(sub, reference.prepared()).double().numpy()
    t_ref = time.perf_counter() - t0
    unpruned = dpsm_matcher(protos, groups, supply, C, epsilon=args.eps, prune_keep=0.0)
    t0 = time.perf_counter()
    plain = modes.subregion_ot(sub, unpruned.prepared()).double().numpy()
    t_plain = time.perf_counter() - t0
    o = ours.options
    print(f"default transport (prune_keep {o.prune_keep}: {keep} prototypes kept + {C} class aggregates per "
          f"proposal, stop_thr {o.stop_thr}, {o.transport_dtype}): {t_ours:.2f} s of which cost matrices "
          f"{t_ours_cost:.2f} s; {stats['transport_not_converged']}/{stats['transport_problems']} not converged")
    print(f"unpruned (prune_keep 0): {t_plain:.2f} s (max_abs_diff {np.abs(plain - ref).max():.2e}); "
          f"reference (unpruned, float64, stop_thr 1e-7) {t_ref:.2f} s, "
          f"{reference.stats['transport_not_converged']} not converged")
    print(f"POT ot.sinkhorn per-proposal loop: {t_pot:.2f} s + cost matrices {t_pot_cost:.2f} s "
          f"(max_abs_diff {np.abs(pot - ref).max():.2e}); with cost matrices in both timings: ratio "
          f"{(t_pot + t_pot_cost) / t_ours:.1f}")
    # X: transport given the cost matrices (as the fixed-iteration comparison above)
    print(f"vs_pot_sinkhorn {t_pot / (t_ours - t_ours_cost):.1f} max_abs_diff {np.abs(probs - ref).max():.2e}")

if __name__ == "__main__":
    main()
