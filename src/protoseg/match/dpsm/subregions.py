"""Sub-regions (eq. 5): fine superpixels intersected with each proposal, their pooled features and
demands (eq. 8)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from protoseg.regions import POOLING_MODES, area_axis_weights, mask_weights, point_axis_weights, pool_features


@dataclass
class SubRegions:
    """Sub-regions of a window's proposals, padded to ``n`` per proposal.

    Attributes:
        features: ``[N, n, D]`` L2-normalised sub-region features (zeros at padding).
        demand: ``[N, n]`` area shares (eq. 8), rows sum to 1 (zeros at padding).
        valid: bool ``[N, n]``.
        proposal_features: ``[N, D]`` L2-normalised mask-pooled feature of each whole proposal.
        masks: bool ``[N, H, W]`` the proposals (after fallback proposals were appended).
    """

    features: torch.Tensor
    demand: torch.Tensor
    valid: torch.Tensor
    proposal_features: torch.Tensor
    masks: torch.Tensor


def pool_subregions(feats: torch.Tensor, masks: torch.Tensor, fine: torch.Tensor, pooling: str,
                    weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> SubRegions:
    """Sub-regions of proposals ``masks`` (bool ``[N, H, W]``) cut by superpixels ``fine`` (int ``[H, W]``),
    pooled from patch features ``feats [D, h, w]`` with ``pooling`` (``"area"`` / ``"point"``); ``weights``:
    :func:`subregion_weights` of them when already computed (e.g. in a worker process).

    Sub-regions with no weight on the feature grid are dropped (demands renormalised); a proposal none of
    whose sub-regions touches the grid becomes one sub-region (its area-pooled mask).
    """
    D, gh, gw = feats.shape
    N = len(masks)
    dev = feats.device
    if N == 0:
        return SubRegions(torch.zeros(0, 1, D, device=dev), torch.zeros(0, 1, device=dev),
                          torch.zeros(0, 1, dtype=torch.bool, device=dev), torch.zeros(0, D, device=dev), masks)
    weights, area, pair_proposal = (tuple(t.to(dev) for t in weights) if weights is not None
                                    else subregion_weights(masks, fine, (gh, gw), pooling))
    pooled, mass = pool_features(feats, weights)  # [S, D], [S]
    keep = mass > 0
    has = torch.zeros(N, dtype=torch.bool, device=dev).index_fill_(0, pair_proposal[keep], True)
    if not bool(has.all()):
        lost = (~has).nonzero()[:, 0]
        extra, _ = pool_features(feats, mask_weights(masks[lost], (gh, gw), "area"))
        pooled = torch.cat([pooled[keep], extra])
        area = torch.cat([area[keep], masks[lost].flatten(1).sum(1).float()])
        pair_proposal = torch.cat([pair_proposal[keep], lost])
    else:
        pooled, area, pair_proposal = pooled[keep], area[keep], pair_proposal[keep]
    features, demand, valid = _pad_per_proposal(F.normalize(pooled.float(), dim=-1), area, pair_proposal, N)
    whole, _ = pool_features(feats, mask_weights(masks, (gh, gw), pooling))
    return SubRegions(features, demand / demand.sum(1, keepdim=True), valid, F.normalize(whole.float(), dim=-1),
                      masks)


def _pad_per_proposal(features: torch.Tensor, area: torch.Tensor, proposal: torch.Tensor, N: int
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sub-region rows ``features [S, D]``, ``area [S]`` of proposals ``proposal [S]`` -> ``[N, n, D]``,
    ``[N, n]`` and ``valid [N, n]``, padded to the largest count ``n`` (in row order per proposal)."""
    dev = features.device
    order = torch.argsort(proposal, stable=True)
    features, area, proposal = features[order], area[order], proposal[order]
    counts = torch.bincount(proposal, minlength=N)
    slot = torch.arange(len(proposal), device=dev) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts,
                                                                             counts)
    n = int(counts.max())
    padded = torch.zeros(N, n, features.shape[1], device=dev)
    demand = torch.zeros(N, n, device=dev)
    valid = torch.zeros(N, n, dtype=torch.bool, device=dev)
    padded[proposal, slot] = features
    demand[proposal, slot] = area
    valid[proposal, slot] = True
    return padded, demand, valid


def subregion_weights(masks: torch.Tensor, fine: torch.Tensor, grid: tuple[int, int], mode: str = "area",
                      chunk: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grid weights of every non-empty (proposal, superpixel) intersection, in one scatter.

    Args:
        masks: bool ``[N, H, W]`` proposals (may overlap).
        fine: int ``[H, W]`` superpixel ids ``0..R-1``.
        grid: feature grid ``(h, w)``.
        mode: ``"area"`` / ``"point"`` as :func:`protoseg.regions.region_weights`.

    Returns:
        ``weights [S, h * w]`` (row ``s`` equals ``region_weights`` of the binary mask
        ``masks[p] & (fine == r)``), pixel ``area [S]`` and ``proposal [S]`` index of each sub-region,
        ordered by proposal then superpixel id. Proposals are processed ``chunk`` at a time to bound memory.
    """
    if len(masks) > chunk:
        parts = [subregion_weights(masks[s:s + chunk], fine, grid, mode, chunk) for s in range(0, len(masks), chunk)]
        return (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]),
                torch.cat([p[2] + s for p, s in zip(parts, range(0, len(masks), chunk), strict=True)]))
    if mode not in POOLING_MODES:
        raise ValueError(f"pooling mode must be 'area' or 'point', got {mode!r}")
    N = len(masks)
    h, w = grid
    dev = masks.device
    R = int(fine.max()) + 1
    p_idx, ys, xs = masks.nonzero(as_tuple=True)
    key = p_idx * R + fine[ys, xs]
    counts = torch.bincount(key, minlength=N * R)
    pairs = counts.nonzero()[:, 0]  # sorted: by proposal, then superpixel
    compact = torch.full((N * R,), -1, dtype=torch.long, device=dev)
    compact[pairs] = torch.arange(len(pairs), device=dev)
    out = torch.zeros(len(pairs) * h * w, dtype=torch.float32, device=dev)
    if mode == "area":
        _scatter_area(out, compact[key], ys, xs, masks.shape[-2:], grid)
    else:
        _scatter_point(out, compact, masks, fine, R, grid)
    return out.view(len(pairs), h * w), counts[pairs].float(), pairs // R


def _scatter_area(out: torch.Tensor, pid: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor,
                  size: tuple[int, int], grid: tuple[int, int]) -> None:
    """Add the ``"area"`` weights of every masked pixel ``(ys, xs)`` of sub-region ``pid`` into ``out``
    (flat ``[S * h * w]``)."""
    (H, W), (h, w) = size, grid
    dev = out.device
    by, wy = (t.to(dev) for t in area_axis_weights(H, h))
    bx, wx = (t.to(dev) for t in area_axis_weights(W, w))
    for a in range(2):
        for b in range(2):
            ok = (by[ys, a] >= 0) & (bx[xs, b] >= 0)
            idx = pid * (h * w) + by[ys, a] * w + bx[xs, b]
            out.index_add_(0, idx[ok], (wy[ys, a] * wx[xs, b])[ok])


def _scatter_point(out: torch.Tensor, compact: torch.Tensor, masks: torch.Tensor, fine: torch.Tensor, R: int,
                   grid: tuple[int, int]) -> None:
    """Add the ``"point"`` weights (bilinear samples at the grid's points) of every sub-region into ``out``
    (flat ``[S * h * w]``; ``compact [N * R]``: sub-region id of each (proposal, superpixel) pair, -1 when
    empty)."""
    N, H, W = masks.shape
    h, w = grid
    dev = out.device
    sy, wy = (t.to(dev) for t in point_axis_weights(H, h))
    sx, wx = (t.to(dev) for t in point_axis_weights(W, w))
    cell = torch.arange(h * w, device=dev).view(h, w)
    for a in range(2):
        for b in range(2):
            yy, xx = sy[:, a, None].expand(h, w), sx[None, :, b].expand(h, w)
            inside = masks[:, yy, xx]  # [N, h, w]
            val = (wy[:, a, None] * wx[None, :, b]).expand(N, h, w)
            pid = compact[torch.arange(N, device=dev)[:, None, None] * R + fine[yy, xx][None]]
            ok = inside & (pid >= 0) & (val > 0)
            out.index_add_(0, (pid * (h * w) + cell[None])[ok], val[ok])
