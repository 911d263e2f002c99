"""The matching modes: one function each, ``(sub-regions, matching) -> class scores [N, C]``, chosen by
name in :data:`MODES` (the option ``mode``; the matcher's module docstring has the math of each)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from protoseg.config.matchers import DpsmOptions
from protoseg.match.dpsm.exact import exact_emd, exact_subregion_ot
from protoseg.match.dpsm.subregions import SubRegions
from protoseg.match.dpsm.supply import Suppliers
from protoseg.match.transport import (
    SinkhornResult,
    aggregate_suppliers,
    plan_from_potentials,
    sinkhorn_grouped_mass,
    sinkhorn_log,
)

#: ``prune_keep`` keeps at least this many prototypes per proposal (smaller banks are solved unpruned).
PRUNE_MIN = 256
#: Memory budget of the costs of one transport bucket chunk.
COST_CHUNK_BYTES = 64 << 20
#: ``mode="single"`` / ``"image-to-class"``: cost entries per batch of proposals (~16M).
EMD_BATCH_ENTRIES = 1 << 24


@dataclass
class Matching:
    """What the matching modes read, and the counts they add to.

    Attributes:
        suppliers: the classes' prototypes (:func:`~protoseg.match.dpsm.supply.class_suppliers`).
        options: the matcher's options.
        stats: ``transport_problems`` / ``transport_not_converged`` counts, added to in place.
        cost_chunk_bytes: memory budget of the costs built at once (:func:`buckets`).
        prune_min: ``prune_keep`` keeps at least this many prototypes (:func:`pruned_count`).
    """

    suppliers: Suppliers
    options: DpsmOptions
    stats: dict[str, int]
    cost_chunk_bytes: int = COST_CHUNK_BYTES
    prune_min: int = PRUNE_MIN

    def count(self, result: SinkhornResult) -> None:
        """Add the entropic problems of ``result`` to :attr:`stats`."""
        self.stats["transport_problems"] += int(result.converged.numel())
        self.stats["transport_not_converged"] += int((~result.converged).sum())


# ---------------------------------------------------------------------------------------------- modes
def image_to_image(sub: SubRegions, matching: Matching) -> torch.Tensor:
    """Cosine between each proposal's pooled feature and every whole prototype; a class scores its best."""
    s = matching.suppliers
    cos = sub.proposal_features @ s.prototypes.T  # [N, m]
    out = torch.full((len(cos), s.num_classes), -2.0, device=cos.device)
    return out.scatter_reduce(1, s.prototype_class.expand_as(cos), cos, "amax")


def single(sub: SubRegions, matching: Matching) -> torch.Tensor:
    """``1 - min EMD`` over each class's support groups (support images / coarse clusters)."""
    s = matching.suppliers
    costs = group_emd(sub, matching, s.support_group)  # [N, G]
    out = torch.full((len(costs), s.num_classes), -2.0, device=costs.device)
    return out.scatter_reduce(1, s.group_class.expand_as(costs), 1.0 - costs, "amax")


def image_to_class(sub: SubRegions, matching: Matching) -> torch.Tensor:
    """``1 - EMD`` between the sub-regions and all part prototypes of a class at once."""
    return 1.0 - group_emd(sub, matching, matching.suppliers.prototype_class)


def subregion_ot(sub: SubRegions, matching: Matching) -> torch.Tensor:
    """DPSM eq. 10-11: ``[N, C]`` class probabilities (each row sums to 1).

    Suppliers: the ``m`` part prototypes with their supplies (total ``S``: ``C`` in the paper's setting,
    times ``capacity``); demanders: each proposal's sub-regions (``sub.demand``, rows summing to 1) and a
    dustbin demanding ``S - 1`` at cost 0; cost = 1 - cosine. Proposals are solved in buckets of similar
    sub-region counts (:func:`buckets`), each bucket's costs built on their own (never the whole padded
    ``[N, n, m]`` tensor) and, with ``prune_keep``, reduced to each proposal's cheapest prototypes plus one
    aggregate per class (:func:`~protoseg.match.transport.aggregate_suppliers`).
    """
    s = matching.suppliers
    if matching.options.emd_solver == "exact":
        return exact_subregion_ot(sub, s)
    m = len(s.prototypes)
    out = torch.zeros(len(sub.features), s.num_classes, device=sub.features.device)
    keep = pruned_count(m, matching)
    for idx, n in buckets(sub.valid.sum(1), m if keep is None else keep + s.num_classes,
                          matching.cost_chunk_bytes):
        # costs for at most cost_chunk_bytes at a time; pruned problems of a bucket are solved together
        step = max(1, matching.cost_chunk_bytes // max(n * m * 4, 1))
        chunks = [idx[start:start + step] for start in range(0, len(idx), step)]
        problems = [_bucket_problem(sub, chunk, n, keep, matching) for chunk in chunks]
        if keep is None:
            for chunk, problem in zip(chunks, problems, strict=True):
                out[chunk] = _solve(*problem, matching).to(out.dtype)
        else:
            problem = [torch.cat(x) if isinstance(x[0], torch.Tensor) else x[0] for x in zip(*problems, strict=True)]
            out[idx] = _solve(*problem, matching).to(out.dtype)
    return out


def nearest_part(sub: SubRegions, matching: Matching, chunk: int = 8) -> torch.Tensor:
    """Each sub-region gives its demand to the class of its nearest part prototype."""
    s = matching.suppliers
    N = len(sub.features)
    out = torch.zeros(N, s.num_classes, device=sub.features.device)
    for start in range(0, N, chunk):
        nearest = (sub.features[start:start + chunk] @ s.prototypes.T).argmax(2)  # [b, n]
        out[start:start + chunk].scatter_add_(1, s.prototype_class[nearest], sub.demand[start:start + chunk])
    return out


#: mode -> its function (``sub-regions, matching -> [N, C]``).
MODES: dict[str, Callable[[SubRegions, Matching], torch.Tensor]] = {
    "image-to-image": image_to_image,
    "single": single,
    "image-to-class": image_to_class,
    "subregion-ot": subregion_ot,
    "nearest-part": nearest_part,
}


# ------------------------------------------------------------------------------------ balanced EMD
def group_emd(sub: SubRegions, matching: Matching, groups: torch.Tensor) -> torch.Tensor:
    """Balanced EMD ``[N, G]`` between each proposal's sub-regions and each group's part prototypes
    (``groups [m]``: group id of each prototype), supplies normalised to 1 per group."""
    s, options = matching.suppliers, matching.options
    protos, supply = _by_group(s.prototypes, s.supply, groups)  # [G, mg, D], [G, mg]
    G, mg, _ = protos.shape
    N, n, _ = sub.features.shape
    out = torch.zeros(N, G, device=sub.features.device)
    step = max(1, EMD_BATCH_ENTRIES // max(G * mg * n, 1))  # proposals per batch
    for start in range(0, N, step):
        q, d, v = (t[start:start + step] for t in (sub.features, sub.demand, sub.valid))
        P = len(q)
        M = (1.0 - torch.einsum("gmd,pnd->pgmn", protos, q)).reshape(P * G, mg, n)
        b = d[:, None].expand(P, G, n).reshape(P * G, n)
        mask = v[:, None].expand(P, G, n).reshape(P * G, n)
        a = supply.repeat(P, 1)
        if options.emd_solver == "exact":
            cost = torch.tensor([exact_emd(a[k], b[k], M[k], mask[k]) for k in range(P * G)])
        else:
            res = sinkhorn_log(a, b, M, options.epsilon, mask=mask, num_iter_max=options.iterations,
                               stop_thr=options.stop_thr, chunk_bytes=options.chunk_bytes)
            matching.count(res)
            cost = (plan_from_potentials(res.f, res.g, M, options.epsilon) * M).sum((1, 2))
        out[start:start + step] = cost.view(P, G).to(out)
    return out


def _by_group(prototypes: torch.Tensor, supply: torch.Tensor, groups: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Prototypes ``[m, D]`` and supplies ``[m]`` laid out per group: ``[G, mg, D]`` and ``[G, mg]``
    (zeros at padding; each group's supplies sum to 1)."""
    G = int(groups.max()) + 1
    sizes = torch.bincount(groups, minlength=G)
    mg = int(sizes.max())
    order = torch.argsort(groups, stable=True)
    slot = torch.arange(len(groups), device=groups.device) - torch.repeat_interleave(
        torch.cumsum(sizes, 0) - sizes, sizes)
    protos = torch.zeros(G, mg, prototypes.shape[1], device=prototypes.device)
    padded = torch.zeros(G, mg, device=prototypes.device)
    protos[groups[order], slot] = prototypes[order]
    padded[groups[order], slot] = supply[order]
    return protos, padded / padded.sum(1, keepdim=True)


# ------------------------------------------------------------------------- sub-region transport
def pruned_count(m: int, matching: Matching) -> int | None:
    """Prototypes kept exactly per proposal under ``prune_keep``, at least ``prune_min`` (``None``: no
    pruning — off, or ``m`` prototypes too few for it to shrink the problem)."""
    prune_keep = matching.options.prune_keep
    if not prune_keep:
        return None
    keep = max(matching.prune_min, math.ceil(prune_keep * m))
    return keep if keep + matching.suppliers.num_classes < m else None


def buckets(counts: torch.Tensor, m: int, cost_chunk_bytes: int = COST_CHUNK_BYTES
            ) -> list[tuple[torch.Tensor, int]]:
    """Proposals grouped by sub-region count ``counts [N]``: ``[(indices, padded count)]``.

    Proposals are sorted by count; a bucket grows while the next count is within 25 % (+ 2) of the
    bucket's smallest and its transport problems ``[b, n, m]`` (``m`` suppliers after pruning) stay
    within ``4 * cost_chunk_bytes``.
    """
    order = torch.argsort(counts, stable=True)
    sizes = counts[order].tolist()
    out, start = [], 0
    while start < len(sizes):
        end = start + 1
        limit = sizes[start] * 1.25 + 2
        while (end < len(sizes) and sizes[end] <= limit
               and (end + 1 - start) * sizes[end] * m * 4 <= 4 * cost_chunk_bytes):
            end += 1
        out.append((order[start:end], int(sizes[end - 1])))
        start = end
    return out


def proposal_epsilon(cost: torch.Tensor, demand: torch.Tensor, matching: Matching) -> torch.Tensor:
    """``epsilon="auto"``: ``[N]`` per-proposal ε from costs ``[N, n, m]`` and demands ``[N, n]``: the
    demand-weighted mean gap between the cheapest part of the second-best and of the best class, times
    ``epsilon_ratio``, at least ``epsilon_floor``."""
    s, options = matching.suppliers, matching.options
    C = s.num_classes
    N, n, m = cost.shape
    if C < 2:
        return torch.full((N,), options.epsilon_floor, device=cost.device)
    best = torch.full((N, n, C), torch.inf, device=cost.device)
    best = best.scatter_reduce(2, s.prototype_class.expand(N, n, m), cost, "amin")  # [N, n, C]
    two = best.topk(2, dim=2, largest=False).values
    spread = ((two[..., 1] - two[..., 0]) * demand).sum(1)  # padding has demand 0
    return (options.epsilon_ratio * spread).clamp_min(options.epsilon_floor)


def costs(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """``1 - cosine`` ``[b, n, m]`` between sub-region features ``[b, n, D]`` and prototypes ``[m, D]``."""
    return (features @ prototypes.T).neg_().add_(1.0)


def _bucket_problem(sub: SubRegions, idx: torch.Tensor, n: int, keep: int | None, matching: Matching) -> tuple:
    """Eq. 10 for proposals ``idx`` padded to ``n`` sub-regions: ``(supply, cost [b, n, k], groups,
    demand [b, n], valid [b, n], eps)`` — with ``keep``, each proposal's ``keep`` cheapest prototypes
    plus one aggregate per class (:func:`~protoseg.match.transport.aggregate_suppliers`)."""
    s = matching.suppliers
    valid, demand = sub.valid[idx, :n], sub.demand[idx, :n]
    cost = costs(sub.features[idx, :n], s.prototypes)  # [b, n, m] (eq. 6)
    eps = matching.options.epsilon
    if eps == "auto":  # the same problem with costs M / eps_p and eps = 1
        cost = cost.div_(proposal_epsilon(cost, demand, matching)[:, None, None])
        eps = 1.0
    supply, groups = s.supply, s.prototype_class
    if keep is not None:
        supply, cost, groups = aggregate_suppliers(cost, supply, groups, s.num_classes, keep, float(eps), valid)
        groups = groups.contiguous()
    else:
        supply = supply.expand(len(idx), -1)
    return supply, cost, groups, demand, valid, float(eps)


def _solve(supply: torch.Tensor, cost: torch.Tensor, groups: torch.Tensor, demand: torch.Tensor,
           valid: torch.Tensor, eps: float, matching: Matching) -> torch.Tensor:
    """Sinkhorn on problems with a dustbin appended: class masses to the real sub-regions ``[b, C]``."""
    options = matching.options
    dev = cost.device
    dtype = torch.float64 if options.transport_dtype == "float64" else torch.float32
    b, _, k = cost.shape
    dustbin = float(matching.suppliers.supply.double().sum()) - 1.0
    Mt = torch.cat([cost, torch.zeros(b, 1, k, device=dev, dtype=cost.dtype)], dim=1).to(dtype)
    demand = torch.cat([demand, torch.full((b, 1), dustbin, device=dev)], dim=1).to(dtype)
    mask = torch.cat([valid, torch.ones(b, 1, dtype=torch.bool, device=dev)], dim=1)
    real = torch.cat([valid, torch.zeros(b, 1, dtype=torch.bool, device=dev)], dim=1)
    probs, result = sinkhorn_grouped_mass(supply.to(dtype), demand, Mt.transpose(1, 2), eps, groups,
                                          matching.suppliers.num_classes, real, mask=mask,
                                          num_iter_max=options.iterations, stop_thr=options.stop_thr,
                                          chunk_bytes=options.chunk_bytes, measured=real)
    matching.count(result)
    return probs
