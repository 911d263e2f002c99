"""DPSM's test-time method: proposals -> sub-regions -> optimal transport from part prototypes -> labels.

Per window (``crop [3, h, w]``):

1. **Proposals**: SAM automatic masks (``proposals="sam"``, :func:`protoseg.proposals.generate_masks` with
   this matcher's ``sam_options`` as :class:`~protoseg.proposals.MaskGenerationSettings`, passed per call) or,
   as a SAM-free alternative, the segments of a coarse Felzenszwalb partition (``proposals="superpixels"``,
   ``proposal_superpixels``). Pixels no proposal covers are handled by ``fallback``: ``"superpixels"``
   (default) makes the uncovered part of every fine superpixel an extra proposal, so every pixel is
   classified by the same matching rule; ``"none"`` leaves them at score 0 for every class.
2. **Sub-regions** (eq. 5): fine superpixels (``superpixels``) intersected with each proposal; a
   sub-region's feature is the mask-pooled dense feature (``pooling="area"``: area-weighted, or
   ``"point"``: the paper's bilinear resizing of the mask); its demand is its share of the proposal's
   pixels (eq. 8). Sub-regions with no weight on the feature grid are dropped (demands renormalised).
3. **Matching** (``mode``; one per matching column of Table 3, plus one reference beyond the paper):

   - ``"image-to-image"``: cosine between the mask-pooled proposal feature and every whole-level
     prototype; a class scores its best prototype (Table 3 row 1, Table 2 rows 1-3).
   - ``"single"``: EMD between the proposal's sub-regions and the part prototypes of one support image
     (the fused parts of one coarse cluster when the bank is clustered); a class scores
     ``1 - min EMD`` over its support images (rows 2 and 5).
   - ``"image-to-class"``: EMD between the sub-regions and all part prototypes of a class at once;
     score ``1 - EMD`` (rows 3 and 6).
   - ``"subregion-ot"``: DPSM's sub-region matching (rows 4 and 7): suppliers are all part prototypes of
     all classes with supply units (eq. 7 / 12, renormalised to sum to 1 per class so that total supply is
     exactly ``C``), demanders are the sub-regions plus a dustbin demanding ``C - 1`` at zero cost
     (eq. 10), cost ``1 - cosine`` (eq. 6), entropic Sinkhorn in the log domain batched over all
     proposals; the class probability is the mass a class delivers to the real sub-regions (eq. 11).
     Iterations stop at ``iterations`` or once the marginal L2 error of the real sub-regions is below
     ``stop_thr`` (the dustbin's error is minus their sum, as rows are exact after every iteration; its
     large demand is left out of the test because ``float32`` cannot resolve it to ``1e-4``). Problems
     that hit the cap are counted in ``stats``. Proposals are solved in buckets of similar sub-region
     counts with costs built per chunk (:meth:`DPSMMatcher.buckets`); ``prune_keep`` keeps each
     proposal's cheapest prototypes exactly and merges each class's others into one aggregate supplier
     (:func:`~protoseg.match.transport.aggregate_suppliers`, which states when that is exact).
   - ``"nearest-part"`` (reference, not in the paper): every sub-region gives its demand to the class of
     its nearest part prototype — the limit of ``"subregion-ot"`` as ``capacity`` grows without bound.

   EMDs use balanced OT with supplies normalised to 1 per support image / class and the same demands;
   ``emd_solver="sinkhorn"`` (default) takes the transport cost of the entropic plan at ``epsilon``,
   ``"exact"`` solves each problem with POT's network simplex (``ot.emd``).

   **Switches of ``"subregion-ot"`` beyond the paper** (defaults = the paper's setting):

   - ``capacity`` τ (default 1): every supply unit is multiplied by τ and the dustbin demands
     ``total supply - 1``. With τ = 1 a class supplies exactly one proposal's demand, split over its
     support views (eq. 7's ``1/N``), so when a class comes in several looks the look that matches owns
     only a sliver of supply and cheaper parts of other classes take the rest; τ > 1 lets the matching
     look serve the whole proposal, τ → ∞ is ``"nearest-part"``.
   - ``supply`` (default ``"class"``: eq. 7 / 12, one unit per class): ``"view"`` gives one unit to each
     support group (a support image / an examples view, or a coarse cluster of a clustered bank: a view's
     parts were fused into its cluster), split over its parts by area as eq. 7; ``"cluster"`` one unit to
     each coarse cluster — the bank's own (eq. 12) when it has them, otherwise ``supply_clusters``
     k-means clusters of the class's views by their whole-level prototypes (the coarse step of DPSM's
     coarse-fine clustering, done at ``prepare``).
   - ``epsilon="auto"``: a per-proposal ε = ``epsilon_ratio`` × the proposal's *deciding spread* — the
     demand-weighted mean, over its sub-regions, of the cost gap between the cheapest part of the
     second-best class and of the best class — floored at ``epsilon_floor``. A fixed ε is compared
     against costs whose deciding gaps are much smaller than their range; "auto" puts it on the scale
     of the gap. Solved as the same problem with costs ``M / ε_p`` and ε = 1.
   - ``emd_solver="exact"``: eq. 10 is solved exactly (POT ``ot.emd``, float64) after keeping, for every
     sub-region, the cheapest suppliers whose cumulative supply first reaches the proposal's demand
     (:func:`capacity_candidates`; lossless: some optimal plan of eq. 9 uses no other supplier).

4. **Composition** (``composition``): ``"mean"`` (default) — a pixel's class scores are the mean of the
   scores of all proposals covering it; ``"smallest"`` — the smallest covering proposal decides;
   ``"confident"`` — the covering proposal with the highest top score decides; ``"confident-smallest"``
   — SAM's order: the most confident covering proposal, the smaller one among equally confident ones
   (top scores within ``1e-6``).

With ``proposals="sam"`` and ``sam_scope="image"`` (default) SAM runs once on the whole resized image
(:meth:`DPSMMatcher.image_proposals`, called by the segmenter) and every window gets its crop of those
masks; ``sam_scope="window"`` runs SAM on each window.

Proposals may also come from the caller (``proposals="given"``): ``__call__(crop, proposals=masks)``
with bool ``[N, h, w]`` masks of the window (:meth:`protoseg.segment.Segmenter.segment` takes
whole-image masks and crops them per window) — e.g. an external mask generator's output, or a test
world's object masks as an oracle.

Scores are "higher = more likely": probabilities for ``"subregion-ot"`` and ``"nearest-part"``, cosine /
``1 - EMD`` otherwise.

``stats`` counts the entropic transport problems solved since the last ``prepare`` / ``reset_stats``
(``transport_problems``) and those that stopped at ``iterations`` before their marginal error reached
``stop_thr`` (``transport_not_converged``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from protoseg.bank import PrototypeBank
from protoseg.errors import ProtosegError
from protoseg.match.prototypes import class_rows, served_names
from protoseg.match.transport import (
    SinkhornResult,
    aggregate_suppliers,
    plan_from_potentials,
    sinkhorn_grouped_mass,
    sinkhorn_log,
)
from protoseg.proposals import MaskGenerationSettings, generate_masks, superpixel_proposals, uncovered_superpixels
from protoseg.regions import (
    SuperpixelParams,
    _area_axis_weights,
    _point_axis_weights,
    mask_weights,
    pool_features,
    superpixels,
)

MODES = ("image-to-image", "single", "image-to-class", "subregion-ot", "nearest-part")
PROPOSAL_SOURCES = ("sam", "superpixels", "given")
COMPOSITIONS = ("mean", "smallest", "confident", "confident-smallest")
FALLBACKS = ("superpixels", "none")
EMD_SOLVERS = ("sinkhorn", "exact")
SUPPLIES = ("class", "view", "cluster")
TRANSPORT_DTYPES = ("float32", "float64")
SAM_SCOPES = ("image", "window")
#: ``prune_keep`` keeps at least this many prototypes per proposal (smaller banks are solved unpruned).
PRUNE_MIN = 256
#: Top scores closer than this count as equally confident (``composition="confident-smallest"``).
CONFIDENCE_TIE = 1e-6
FINE_SUPERPIXELS = SuperpixelParams()
#: Coarse Felzenszwalb segments used as proposals when ``proposals="superpixels"``.
PROPOSAL_SUPERPIXELS = SuperpixelParams(scale=1000.0, sigma=1.0, min_size=400)


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


class DPSMMatcher:
    """Sub-region matching against a bank's part (and whole) prototypes (module docstring)."""

    def __init__(self, bank: PrototypeBank, models: Any, *, mode: str = "subregion-ot",
                 proposals: str = "sam", epsilon: float | str = 0.05, epsilon_ratio: float = 0.5,
                 epsilon_floor: float = 1e-3, capacity: float = 1.0, supply: str = "class",
                 supply_clusters: int = 4, iterations: int = 1000,
                 stop_thr: float = 1e-4, superpixels: SuperpixelParams = FINE_SUPERPIXELS,
                 proposal_superpixels: SuperpixelParams = PROPOSAL_SUPERPIXELS,
                 pooling: str = "area", composition: str = "mean", fallback: str = "superpixels",
                 emd_solver: str = "sinkhorn", sam_options: dict[str, Any] | None = None,
                 max_proposals: int | None = None, chunk_bytes: int | None | str = "auto",
                 prune_keep: float = 0.05, transport_dtype: str = "float32", sam_scope: str = "image",
                 cost_chunk_bytes: int = 64 << 20, prune_min: int = PRUNE_MIN):
        choices = (("mode", mode, MODES), ("proposals", proposals, PROPOSAL_SOURCES),
                   ("composition", composition, COMPOSITIONS), ("fallback", fallback, FALLBACKS),
                   ("emd_solver", emd_solver, EMD_SOLVERS), ("pooling", pooling, ("area", "point")),
                   ("supply", supply, SUPPLIES), ("transport_dtype", transport_dtype, TRANSPORT_DTYPES),
                   ("sam_scope", sam_scope, SAM_SCOPES))
        for name, value, allowed in choices:
            if value not in allowed:
                raise ProtosegError(f"dpsm {name} must be one of {', '.join(allowed)}; got {value!r}")
        if proposals == "sam" and models.sam is None:
            raise ProtosegError("dpsm with proposals='sam' needs a SAM model (preset field `sam`); or use "
                                "proposals='superpixels'")
        if epsilon != "auto" and (isinstance(epsilon, str) or not float(epsilon) > 0):
            raise ProtosegError(f"dpsm epsilon must be a number > 0 or 'auto'; got {epsilon!r}")
        if epsilon == "auto" and mode in ("single", "image-to-class") and emd_solver == "sinkhorn":
            raise ProtosegError(f"dpsm epsilon='auto' is a per-proposal scale of mode 'subregion-ot'; give mode "
                                f"{mode!r} a number (or emd_solver='exact')")
        if not 0 <= float(prune_keep or 0.0) < 1:
            raise ProtosegError(f"dpsm prune_keep must be in [0, 1) (0 disables pruning); got {prune_keep!r}")
        if not capacity >= 1:
            raise ProtosegError(f"dpsm capacity must be >= 1; got {capacity!r}")
        self.bank, self.models = bank, models
        self.mode, self.proposals = mode, proposals
        self.epsilon: float | str = epsilon if epsilon == "auto" else float(epsilon)
        self.epsilon_ratio, self.epsilon_floor = float(epsilon_ratio), float(epsilon_floor)
        self.capacity, self.supply_mode, self.supply_clusters = float(capacity), supply, int(supply_clusters)
        self.iterations, self.stop_thr = int(iterations), float(stop_thr)
        self.superpixel_params, self.proposal_superpixel_params = superpixels, proposal_superpixels
        self.pooling, self.composition, self.fallback = pooling, composition, fallback
        self.emd_solver, self.max_proposals, self.chunk_bytes = emd_solver, max_proposals, chunk_bytes
        self.prune_keep, self.transport_dtype = float(prune_keep or 0.0), transport_dtype
        self.sam_scope, self.cost_chunk_bytes, self.prune_min = sam_scope, int(cost_chunk_bytes), int(prune_min)
        # Passed with every call: the SAM predictor of a shared ModelSet is never changed.
        self.sam_settings = MaskGenerationSettings.from_options(sam_options)
        self.classes: list[str] = []
        self.stats: dict[str, int] = {}
        self.reset_stats()

    def reset_stats(self) -> None:
        """Zero the transport counts of ``stats`` (module docstring)."""
        self.stats = {"transport_problems": 0, "transport_not_converged": 0}

    def _count(self, result: SinkhornResult) -> None:
        self.stats["transport_problems"] += int(result.converged.numel())
        self.stats["transport_not_converged"] += int((~result.converged).sum())

    # ------------------------------------------------------------------ prototypes
    def serves(self, names: list[str]) -> list[bool]:
        """Which names the bank labels with a finite prototype of the level this mode matches."""
        return served_names(self.bank, names, False, "whole" if self.mode == "image-to-image" else "part")

    def prepare(self, classes: list[str]) -> None:
        """Collect each class's prototypes: part rows (supplies, support-image groups) or whole rows."""
        device = self.models.device
        self.classes = list(classes)
        self.reset_stats()
        level = "whole" if self.mode == "image-to-image" else "part"
        rows = class_rows(self.bank, self.classes, None, 0, level=level)
        vectors = [F.normalize(torch.from_numpy(self.bank.vectors(r)).float(), dim=-1) for r in rows]
        self.prototypes = torch.cat(vectors).to(device)  # [m, D]
        self.prototype_class = torch.cat([torch.full((len(r),), c, dtype=torch.long)
                                          for c, r in enumerate(rows)]).to(device)
        if level == "whole":
            return
        supply, group, unit = [], [], []
        group_count = unit_count = 0
        for name, r in zip(self.classes, rows, strict=True):
            key = np.where(self.bank.table["coarse_cluster"][r] >= 0, self.bank.table["coarse_cluster"][r],
                           self.bank.table["image_id"][r])
            _, local = np.unique(key, return_inverse=True)
            local = local.reshape(-1)
            group.append(torch.from_numpy(local + group_count))
            group_count += int(local.max()) + 1
            s = np.clip(np.asarray(self.bank.table["supply"][r], np.float64), 0, None)
            if s.sum() <= 0:  # no supply recorded: every support image 1/N, spread evenly over its parts
                counts = np.bincount(local)
                s = 1.0 / (len(counts) * counts[local])
            units = self._supply_units(name, r, local)
            totals = np.bincount(units, weights=s)
            supply.append(torch.from_numpy(s / totals[units]))  # each unit sums to 1
            unit.append(torch.from_numpy(units + unit_count))
            unit_count += int(units.max()) + 1
        #: ``[m]`` supply of every part prototype: each supply unit sums to ``capacity``.
        self.supply = (torch.cat(supply) * self.capacity).float().to(device)
        self.supply_unit = torch.cat(unit).to(device)  # [m] class / support group / cluster id
        self.support_group = torch.cat(group).to(device)  # [m] support image / coarse cluster id
        self.group_class = torch.zeros(group_count, dtype=torch.long, device=device)
        self.group_class[self.support_group] = self.prototype_class  # groups never span classes

    def _supply_units(self, name: str, rows: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """Supply unit ``[len(rows)]`` (``0..k-1``) of each part row of class ``name`` (``supply`` option).

        ``groups``: the rows' support group (support image / coarse cluster) ids ``0..G-1``.
        """
        if self.supply_mode == "class":
            return np.zeros(len(rows), np.int64)
        if self.supply_mode == "view" or (self.bank.table["coarse_cluster"][rows] >= 0).any():
            return groups
        # "cluster" on a bank without coarse clusters: k-means of the views' whole-level prototypes
        views = self.bank.table["image_id"][rows]
        ids = np.unique(views)
        wholes = self.bank.rows_of(name, "whole")
        whole_of = dict(zip(self.bank.table["image_id"][wholes].tolist(), wholes.tolist(), strict=True))
        parts = np.asarray(self.bank.vectors(rows), np.float64)
        guides = np.stack([self.bank.vectors(np.asarray([whole_of[v]]))[0].astype(np.float64) if v in whole_of
                           else parts[views == v].mean(0) for v in ids])
        guides /= np.linalg.norm(guides, axis=1, keepdims=True).clip(1e-12)
        labels = _kmeans_labels(guides, self.supply_clusters)
        return labels[np.searchsorted(ids, views)]

    # ------------------------------------------------------------------ proposals and sub-regions
    @property
    def image_scope(self) -> bool:
        """SAM runs once per image (``proposals="sam"``, ``sam_scope="image"``), its masks cropped per window."""
        return self.proposals == "sam" and self.sam_scope == "image"

    @torch.no_grad()
    def image_proposals(self, image: torch.Tensor) -> torch.Tensor | None:
        """SAM masks ``bool [N, H, W]`` of the whole (resized) image ``[3, H, W]`` with ``sam_scope="image"``
        (the segmenter crops them with every window and passes them to :meth:`__call__`); ``None`` otherwise."""
        if not self.image_scope:
            return None
        masks, _ = generate_masks(self.models.sam, image, self.sam_settings)
        return masks.to(image.device)

    def propose(self, crop: torch.Tensor, image: np.ndarray, given: torch.Tensor | None = None) -> torch.Tensor:
        """Class-agnostic proposals ``bool [N, h, w]`` of a crop (``given``: the caller's, ``proposals="given"``,
        or this window's crop of the image-level SAM masks, ``sam_scope="image"``)."""
        if self.proposals == "given" or (self.image_scope and given is not None):
            if given is None:
                raise ProtosegError("dpsm with proposals='given' needs the proposals of every image: "
                                    "Segmenter.segment(image, classes, proposals=masks)")
            masks = given.bool()
            masks = masks[masks.flatten(1).any(1)]
        elif self.proposals == "sam":
            masks, _ = generate_masks(self.models.sam, crop, self.sam_settings)
        else:
            masks = superpixel_proposals(image, self.proposal_superpixel_params)
        masks = masks.to(crop.device)
        if self.max_proposals is not None:
            masks = masks[: self.max_proposals]
        return masks

    def add_fallback(self, masks: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
        """Append one proposal per fine superpixel's uncovered part (``fallback="superpixels"``)."""
        if self.fallback == "none":
            return masks
        extra = uncovered_superpixels(masks, fine)
        return torch.cat([masks, extra]) if len(extra) else masks

    def subregions(self, feats: torch.Tensor, masks: torch.Tensor, fine: torch.Tensor) -> SubRegions:
        """Sub-regions (fine superpixels ∩ proposal), their pooled features (eq. 5) and demands (eq. 8)."""
        D, gh, gw = feats.shape
        N = len(masks)
        dev = feats.device
        if N == 0:
            return SubRegions(torch.zeros(0, 1, D, device=dev), torch.zeros(0, 1, device=dev),
                              torch.zeros(0, 1, dtype=torch.bool, device=dev), torch.zeros(0, D, device=dev),
                              masks)
        weights, area, pair_proposal = subregion_weights(masks, fine, (gh, gw), self.pooling)
        pooled, mass = pool_features(feats, weights)  # [S, D], [S]
        keep = mass > 0
        # A proposal none of whose sub-regions touches the grid becomes one sub-region (its area-pooled mask).
        has = torch.zeros(N, dtype=torch.bool, device=dev).index_fill_(0, pair_proposal[keep], True)
        if not bool(has.all()):
            lost = (~has).nonzero()[:, 0]
            extra, _ = pool_features(feats, mask_weights(masks[lost], (gh, gw), "area"))
            pooled = torch.cat([pooled[keep], extra])
            area = torch.cat([area[keep], masks[lost].flatten(1).sum(1).float()])
            pair_proposal = torch.cat([pair_proposal[keep], lost])
        else:
            pooled, area, pair_proposal = pooled[keep], area[keep], pair_proposal[keep]
        order = torch.argsort(pair_proposal, stable=True)
        pooled, area, pair_proposal = pooled[order], area[order], pair_proposal[order]
        counts = torch.bincount(pair_proposal, minlength=N)
        slot = torch.arange(len(pair_proposal), device=dev) - torch.repeat_interleave(
            torch.cumsum(counts, 0) - counts, counts)
        n = int(counts.max())
        features = torch.zeros(N, n, D, device=dev)
        demand = torch.zeros(N, n, device=dev)
        valid = torch.zeros(N, n, dtype=torch.bool, device=dev)
        features[pair_proposal, slot] = F.normalize(pooled.float(), dim=-1)
        demand[pair_proposal, slot] = area
        valid[pair_proposal, slot] = True
        demand = demand / demand.sum(1, keepdim=True)
        whole, _ = pool_features(feats, mask_weights(masks, (gh, gw), self.pooling))
        return SubRegions(features, demand, valid, F.normalize(whole.float(), dim=-1), masks)

    # ------------------------------------------------------------------ matching
    def proposal_scores(self, sub: SubRegions) -> torch.Tensor:
        """Class scores ``[N, C]`` of every proposal under the configured ``mode``."""
        C = len(self.classes)
        if len(sub.masks) == 0:
            return torch.zeros(0, C, device=sub.features.device)
        if self.mode == "image-to-image":
            cos = sub.proposal_features @ self.prototypes.T  # [N, m]
            out = torch.full((len(cos), C), -2.0, device=cos.device)
            return out.scatter_reduce(1, self.prototype_class.expand_as(cos), cos, "amax")
        if self.mode == "subregion-ot":
            return self.subregion_ot(sub)
        if self.mode == "nearest-part":
            return self.nearest_part(sub)
        groups = self.support_group if self.mode == "single" else self.prototype_class
        costs = self.group_emd(sub, groups)  # [N, G]
        if self.mode == "image-to-class":
            return 1.0 - costs
        out = torch.full((len(costs), C), -2.0, device=costs.device)
        return out.scatter_reduce(1, self.group_class.expand_as(costs), 1.0 - costs, "amax")

    def subregion_ot(self, sub: SubRegions) -> torch.Tensor:
        """DPSM eq. 10-11: ``[N, C]`` class probabilities (each row sums to 1).

        Suppliers: the ``m`` part prototypes with ``self.supply [m]`` (total ``S``: ``C`` in the paper's
        setting, times ``capacity``); demanders: each proposal's sub-regions (``sub.demand``, rows summing
        to 1) and a dustbin demanding ``S - 1`` at cost 0; cost = 1 - cosine. Proposals are solved in
        buckets of similar sub-region counts (:meth:`buckets`), each bucket's costs built on their own
        (never the whole padded ``[N, n, m]`` tensor) and, with ``prune_keep``, reduced to each proposal's
        cheapest prototypes plus one aggregate per class (:func:`aggregate_suppliers`).
        """
        if self.emd_solver == "exact":
            return self._exact_subregion_ot(sub)
        C = len(self.classes)
        N = len(sub.features)
        m = len(self.prototypes)
        dev = sub.features.device
        out = torch.zeros(N, C, device=dev)
        keep = self.pruned_count(m)
        suppliers = m if keep is None else keep + C
        for idx, n in self.buckets(sub.valid.sum(1), suppliers):
            # costs for at most cost_chunk_bytes at a time; pruned problems of a bucket are solved together
            step = max(1, self.cost_chunk_bytes // max(n * m * 4, 1))
            parts = [self._bucket_problem(sub, idx[s:s + step], n, keep) for s in range(0, len(idx), step)]
            if keep is None:
                for part_idx, problem in zip([idx[s:s + step] for s in range(0, len(idx), step)], parts,
                                             strict=True):
                    out[part_idx] = self._solve(*problem).to(out.dtype)
            else:
                problem = [torch.cat(x) if isinstance(x[0], torch.Tensor) else x[0] for x in zip(*parts, strict=True)]
                out[idx] = self._solve(*problem).to(out.dtype)
        return out

    def _bucket_problem(self, sub: SubRegions, idx: torch.Tensor, n: int, keep: int | None) -> tuple:
        """Eq. 10 for proposals ``idx`` padded to ``n`` sub-regions: ``(supply, cost [b, n, k], groups,
        demand [b, n], valid [b, n], eps)`` — with ``keep``, each proposal's ``keep`` cheapest prototypes
        plus one aggregate per class (:func:`aggregate_suppliers`)."""
        valid, demand = sub.valid[idx, :n], sub.demand[idx, :n]
        cost = self.costs(sub.features[idx, :n])  # [b, n, m] (eq. 6)
        eps = self.epsilon
        if eps == "auto":  # the same problem with costs M / eps_p and eps = 1
            cost = cost.div_(self.proposal_epsilon(cost, demand)[:, None, None])
            eps = 1.0
        supply, groups = self.supply, self.prototype_class
        if keep is not None:
            supply, cost, groups = aggregate_suppliers(cost, supply, groups, len(self.classes), keep, float(eps),
                                                       valid)
            groups = groups.contiguous()
        else:
            supply = supply.expand(len(idx), -1)
        return supply, cost, groups, demand, valid, float(eps)

    def costs(self, features: torch.Tensor) -> torch.Tensor:
        """``1 - cosine`` ``[b, n, m]`` between sub-region features ``[b, n, D]`` and every part prototype."""
        return (features @ self.prototypes.T).neg_().add_(1.0)

    def _solve(self, supply, cost, groups, demand, valid, eps) -> torch.Tensor:
        """Sinkhorn on problems with a dustbin appended: class masses to the real sub-regions ``[b, C]``."""
        dev = cost.device
        dtype = torch.float64 if self.transport_dtype == "float64" else torch.float32
        b, _, k = cost.shape
        dustbin = float(self.supply.double().sum()) - 1.0
        Mt = torch.cat([cost, torch.zeros(b, 1, k, device=dev, dtype=cost.dtype)], dim=1).to(dtype)
        demand = torch.cat([demand, torch.full((b, 1), dustbin, device=dev)], dim=1).to(dtype)
        mask = torch.cat([valid, torch.ones(b, 1, dtype=torch.bool, device=dev)], dim=1)
        real = torch.cat([valid, torch.zeros(b, 1, dtype=torch.bool, device=dev)], dim=1)
        probs, result = sinkhorn_grouped_mass(supply.to(dtype), demand, Mt.transpose(1, 2), eps, groups,
                                              len(self.classes), real, mask=mask, num_iter_max=self.iterations,
                                              stop_thr=self.stop_thr, chunk_bytes=self.chunk_bytes, measured=real)
        self._count(result)
        return probs

    def pruned_count(self, m: int) -> int | None:
        """Prototypes kept exactly per proposal under ``prune_keep``, at least ``prune_min`` (``None``: no
        pruning — off, or a bank too small for it to shrink the problem)."""
        if not self.prune_keep:
            return None
        keep = max(self.prune_min, math.ceil(self.prune_keep * m))
        return keep if keep + len(self.classes) < m else None

    def buckets(self, counts: torch.Tensor, m: int) -> list[tuple[torch.Tensor, int]]:
        """Proposals grouped by sub-region count: ``[(indices, padded count)]``.

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
                   and (end + 1 - start) * sizes[end] * m * 4 <= 4 * self.cost_chunk_bytes):
                end += 1
            out.append((order[start:end], int(sizes[end - 1])))
            start = end
        return out

    def proposal_epsilon(self, cost: torch.Tensor, demand: torch.Tensor | SubRegions) -> torch.Tensor:
        """``epsilon="auto"``: ``[N]`` per-proposal ε from costs ``[N, n, m]`` and demands ``[N, n]``
        (module docstring)."""
        if isinstance(demand, SubRegions):
            demand = demand.demand
        C = len(self.classes)
        N, n, m = cost.shape
        if C < 2:
            return torch.full((N,), self.epsilon_floor, device=cost.device)
        best = torch.full((N, n, C), torch.inf, device=cost.device)
        best = best.scatter_reduce(2, self.prototype_class.expand(N, n, m), cost, "amin")  # [N, n, C]
        two = best.topk(2, dim=2, largest=False).values
        spread = ((two[..., 1] - two[..., 0]) * demand).sum(1)  # padding has demand 0
        return (self.epsilon_ratio * spread).clamp_min(self.epsilon_floor)

    def _exact_subregion_ot(self, sub: SubRegions) -> torch.Tensor:
        """Eq. 10 solved exactly per proposal (POT network simplex, float64) on its capacity candidates."""
        import ot

        C = len(self.classes)
        N = len(sub.features)
        out = torch.zeros(N, C, dtype=torch.float64)
        supply = self.supply.double().cpu()
        classes = self.prototype_class.cpu()
        for p in range(N):
            live = sub.valid[p]
            c = (1.0 - sub.features[p][live] @ self.prototypes.T).double().cpu()  # [n_p, m] (eq. 6)
            d = sub.demand[p][live].double().cpu()
            keep = capacity_candidates(c, supply, float(d.sum()))
            a = supply[keep]
            b = torch.cat([d, (a.sum() - d.sum()).clamp_min(0).reshape(1)])  # dustbin (>= -1e-9 before clamping)
            M = torch.cat([c[:, keep].T, torch.zeros(len(a), 1, dtype=torch.float64)], dim=1)  # [k, n_p + 1]
            plan = torch.as_tensor(ot.emd(a.numpy(), b.numpy(), M.numpy(), numItermax=10_000_000))
            out[p] = torch.zeros(C, dtype=torch.float64).index_add_(0, classes[keep], plan[:, :-1].sum(1))
        return out.to(sub.features.device, torch.float32)

    def nearest_part(self, sub: SubRegions, chunk: int = 8) -> torch.Tensor:
        """``mode="nearest-part"``: ``[N, C]``, each sub-region's demand to its nearest part's class."""
        N = len(sub.features)
        out = torch.zeros(N, len(self.classes), device=sub.features.device)
        for s in range(0, N, chunk):
            nearest = (sub.features[s:s + chunk] @ self.prototypes.T).argmax(2)  # [b, n]
            out[s:s + chunk].scatter_add_(1, self.prototype_class[nearest], sub.demand[s:s + chunk])
        return out

    def group_emd(self, sub: SubRegions, groups: torch.Tensor) -> torch.Tensor:
        """Balanced EMD ``[N, G]`` between each proposal's sub-regions and each group's part prototypes."""
        G = int(groups.max()) + 1
        sizes = torch.bincount(groups, minlength=G)
        mg = int(sizes.max())
        order = torch.argsort(groups, stable=True)
        slot = torch.arange(len(groups), device=groups.device) - torch.repeat_interleave(
            torch.cumsum(sizes, 0) - sizes, sizes)
        D = self.prototypes.shape[1]
        protos = torch.zeros(G, mg, D, device=self.prototypes.device)
        supply = torch.zeros(G, mg, device=self.prototypes.device)
        protos[groups[order], slot] = self.prototypes[order]
        supply[groups[order], slot] = self.supply[order]
        supply = supply / supply.sum(1, keepdim=True)
        N, n, _ = sub.features.shape
        out = torch.zeros(N, G, device=sub.features.device)
        step = max(1, (1 << 24) // max(G * mg * n, 1))  # proposals per batch: ~16M cost entries
        for s in range(0, N, step):
            q, d, v = sub.features[s:s + step], sub.demand[s:s + step], sub.valid[s:s + step]
            P = len(q)
            M = (1.0 - torch.einsum("gmd,pnd->pgmn", protos, q)).reshape(P * G, mg, n)
            b = d[:, None].expand(P, G, n).reshape(P * G, n)
            mask = v[:, None].expand(P, G, n).reshape(P * G, n)
            a = supply.repeat(P, 1)
            if self.emd_solver == "exact":
                cost = torch.tensor([_exact_emd(a[k], b[k], M[k], mask[k]) for k in range(P * G)])
            else:
                res = sinkhorn_log(a, b, M, self.epsilon, mask=mask, num_iter_max=self.iterations,
                                   stop_thr=self.stop_thr, chunk_bytes=self.chunk_bytes)
                self._count(res)
                cost = (plan_from_potentials(res.f, res.g, M, self.epsilon) * M).sum((1, 2))
            out[s:s + step] = cost.view(P, G).to(out)
        return out

    # ------------------------------------------------------------------ composition
    def compose(self, scores: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Paint proposal scores ``[N, C]`` through ``masks [N, h, w]`` -> ``[C, h, w]`` (see module doc)."""
        N, C = scores.shape
        h, w = masks.shape[-2:]
        if N == 0:
            return torch.zeros(C, h, w, device=scores.device)
        m = masks.float()
        if self.composition == "mean":
            total = torch.einsum("nc,nhw->chw", scores, m)
            count = m.sum(0)
            return torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))
        area = masks.flatten(1).sum(1)
        if self.composition == "smallest":
            key = -area.float()  # larger key = preferred
        elif self.composition == "confident":
            key = scores.amax(1)
        else:  # confident, then smaller: rank by (top score to CONFIDENCE_TIE, -area)
            top = torch.round(scores.amax(1).double() / CONFIDENCE_TIE)
            order = np.lexsort((-area.cpu().numpy(), top.cpu().numpy()))  # ascending: last = preferred
            key = torch.empty(N, device=scores.device)
            key[torch.from_numpy(order).to(scores.device)] = torch.arange(N, dtype=torch.float32,
                                                                          device=scores.device)
        ranked = torch.where(masks, key[:, None, None], torch.full_like(m, -torch.inf))
        best = ranked.argmax(0)  # [h, w]
        painted = scores[best].permute(2, 0, 1)
        return torch.where(masks.any(0)[None], painted, torch.zeros_like(painted))

    # ------------------------------------------------------------------ one window
    @torch.no_grad()
    def __call__(self, crop: torch.Tensor, proposals: torch.Tensor | None = None) -> torch.Tensor:
        """``crop`` float ``[3, h, w]`` RGB 0-255 -> scores ``[C, h, w]``.

        ``proposals``: bool ``[N, h, w]`` masks of this window, with ``proposals="given"`` (or the window's
        crop of :meth:`image_proposals`; without them, ``sam_scope="image"`` runs SAM on the crop).
        """
        if not self.classes:
            raise ProtosegError("call prepare(classes) before matching")
        if proposals is not None and self.proposals != "given" and not self.image_scope:
            raise ProtosegError(f"proposals were passed but this dpsm matcher makes its own ({self.proposals!r}); "
                                "set matcher option proposals='given'")
        feats = self.models.features(crop[None])[0].float()
        image = crop.permute(1, 2, 0).round().clamp(0, 255).byte().cpu().numpy()
        fine = torch.from_numpy(superpixels(image, self.superpixel_params)).to(feats.device)
        masks = self.propose(crop, image, proposals).to(feats.device)
        masks = self.add_fallback(masks, fine)
        sub = self.subregions(feats, masks, fine)
        return self.compose(self.proposal_scores(sub), sub.masks)


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
    N, H, W = masks.shape
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
        by, wy = (t.to(dev) for t in _area_axis_weights(H, h))
        bx, wx = (t.to(dev) for t in _area_axis_weights(W, w))
        pid = compact[key]
        for a in range(2):
            for b in range(2):
                ok = (by[ys, a] >= 0) & (bx[xs, b] >= 0)
                idx = pid * (h * w) + by[ys, a] * w + bx[xs, b]
                out.index_add_(0, idx[ok], (wy[ys, a] * wx[xs, b])[ok])
    elif mode == "point":
        sy, wy = (t.to(dev) for t in _point_axis_weights(H, h))
        sx, wx = (t.to(dev) for t in _point_axis_weights(W, w))
        cell = torch.arange(h * w, device=dev).view(h, w)
        for a in range(2):
            for b in range(2):
                yy, xx = sy[:, a, None].expand(h, w), sx[None, :, b].expand(h, w)
                inside = masks[:, yy, xx]  # [N, h, w]
                val = (wy[:, a, None] * wx[None, :, b]).expand(N, h, w)
                pid = compact[torch.arange(N, device=dev)[:, None, None] * R + fine[yy, xx][None]]
                ok = inside & (pid >= 0) & (val > 0)
                out.index_add_(0, (pid * (h * w) + cell[None])[ok], val[ok])
    else:
        raise ValueError(f"pooling mode must be 'area' or 'point', got {mode!r}")
    return out.view(len(pairs), h * w), counts[pairs].float(), pairs // R


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


def _kmeans_labels(x: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """K-means labels ``[n]`` (``0..k'-1``) of ``x [n, D]`` into at most ``k`` clusters (deterministic)."""
    k = min(k, len(np.unique(x, axis=0)))
    if k <= 1:
        return np.zeros(len(x), np.int64)
    from sklearn.cluster import KMeans

    labels = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(x).labels_
    return np.unique(labels, return_inverse=True)[1].reshape(-1)


def _exact_emd(a: torch.Tensor, b: torch.Tensor, M: torch.Tensor, mask: torch.Tensor) -> float:
    """Exact balanced EMD with POT's network simplex on the live entries."""
    import ot

    rows = (a > 0).cpu().numpy()
    cols = mask.cpu().numpy()
    a_np = a.double().cpu().numpy()[rows]
    b_np = b.double().cpu().numpy()[cols]
    cost = M.double().cpu().numpy()[np.ix_(rows, cols)]
    return float(ot.emd2(a_np / a_np.sum(), b_np / b_np.sum(), cost))
