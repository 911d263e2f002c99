"""Exact transport with POT's network simplex (``emd_solver="exact"``), float64."""

from __future__ import annotations

import numpy as np
import torch

from protoseg.match.dpsm.subregions import SubRegions
from protoseg.match.dpsm.supply import Suppliers


def exact_subregion_ot(sub: SubRegions, suppliers: Suppliers) -> torch.Tensor:
    """Eq. 10 solved exactly per proposal on its capacity candidates (:func:`capacity_candidates`):
    ``[N, C]`` class masses delivered to the real sub-regions."""
    # POT takes about 1.8 s to import (after torch); only the exact solver needs it.
    import ot

    C = suppliers.num_classes
    N = len(sub.features)
    out = torch.zeros(N, C, dtype=torch.float64)
    supply = suppliers.supply.double().cpu()
    classes = suppliers.prototype_class.cpu()
    for p in range(N):
        live = sub.valid[p]
        c = (1.0 - sub.features[p][live] @ suppliers.prototypes.T).double().cpu()  # [n_p, m] (eq. 6)
        d = sub.demand[p][live].double().cpu()
        keep = capacity_candidates(c, supply, float(d.sum()))
        a = supply[keep]
        b = torch.cat([d, (a.sum() - d.sum()).clamp_min(0).reshape(1)])  # dustbin (>= -1e-9 before clamping)
        M = torch.cat([c[:, keep].T, torch.zeros(len(a), 1, dtype=torch.float64)], dim=1)  # [k, n_p + 1]
        plan = torch.as_tensor(ot.emd(a.numpy(), b.numpy(), M.numpy(), numItermax=10_000_000))
        out[p] = torch.zeros(C, dtype=torch.float64).index_add_(0, classes[keep], plan[:, :-1].sum(1))
    return out.to(sub.features.device, torch.float32)


def capacity_candidates(cost: torch.Tensor, supply: torch.Tensor, demand: float) -> torch.Tensor:
    """Suppliers an optimal plan of eq. 9 needs: bool ``[m]`` from costs ``[n, m]`` and supplies ``[m]``.

    For every sub-region ``j`` keep the cheapest suppliers whose cumulative supply first reaches the
    total ``demand`` (ties at the cut-off included). Lossless: if an optimal plan ships ``x_ij > 0`` from
    a supplier ``i`` outside ``j``'s set ``T_j``, then ``T_j`` ships less than ``demand`` in total while
    holding at least that much, so some ``k`` in ``T_j`` has spare supply; moving the mass from ``(i, j)``
    to ``(k, j)`` costs ``c_kj - c_ij <= 0`` more and breaks no constraint. Repeating gives an optimal plan
    that uses only ``T_j`` for every ``j``.
    """
    n, m = cost.shape
    target = demand * (1 - 1e-9)
    # The cheapest k suppliers of every sub-region, k doubled until each prefix holds the demand (a full
    # sort of all m would do, but k is usually a small fraction of m).
    k = min(m, max(16, 2 * int(np.ceil(target * m / max(float(supply.sum()), 1e-30)))))
    while True:
        sorted_cost, order = cost.topk(k, dim=1, largest=False)  # ascending
        reached = supply[order].cumsum(1) >= target
        if bool(reached.any(1).all()) or k == m:
            break
        k = min(m, 2 * k)
    first = torch.where(reached.any(1), reached.float().argmax(1), torch.full((n,), k - 1, device=cost.device))
    cutoff = sorted_cost.gather(1, first[:, None])  # [n, 1]
    return (cost <= cutoff).any(0)


def exact_emd(a: torch.Tensor, b: torch.Tensor, M: torch.Tensor, mask: torch.Tensor) -> float:
    """Exact balanced EMD with POT's network simplex on the live entries: supplies ``a [m]``, demands
    ``b [n]`` (``mask [n]``: live), costs ``M [m, n]``."""
    import ot  # about 1.8 s to import; only the exact solver needs it

    rows = (a > 0).cpu().numpy()
    cols = mask.cpu().numpy()
    a_np = a.double().cpu().numpy()[rows]
    b_np = b.double().cpu().numpy()[cols]
    cost = M.double().cpu().numpy()[np.ix_(rows, cols)]
    return float(ot.emd2(a_np / a_np.sum(), b_np / b_np.sum(), cost))
