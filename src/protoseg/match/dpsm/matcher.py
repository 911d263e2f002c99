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
3. **Matching** (``mode``; one per matching column of Table 3, plus one reference beyond the paper; one
   function each in :mod:`protoseg.match.dpsm.modes`):

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
     counts with costs built per chunk (:func:`~protoseg.match.dpsm.modes.buckets`); ``prune_keep`` keeps each
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
     (:func:`~protoseg.match.dpsm.exact.capacity_candidates`; lossless: some optimal plan of eq. 9 uses no
     other supplier).

4. **Composition** (``composition``, :mod:`protoseg.match.dpsm.compose`): ``"mean"`` (default) — a
   pixel's class scores are the mean of the scores of all proposals covering it; ``"smallest"`` — the
   smallest covering proposal decides; ``"confident"`` — the covering proposal with the highest top
   score decides; ``"confident-smallest"`` — SAM's order: the most confident covering proposal, the
   smaller one among equally confident ones (top scores within ``1e-6``).

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

from typing import Any

import numpy as np
import torch

from protoseg.bank import PrototypeBank
from protoseg.config.matchers import DpsmOptions
from protoseg.config.superpixels import SuperpixelParams
from protoseg.errors import ProtosegError
from protoseg.match.base import Matcher
from protoseg.match.dpsm.compose import compose
from protoseg.match.dpsm.modes import COST_CHUNK_BYTES, MODES, PRUNE_MIN, Matching
from protoseg.match.dpsm.partition import WindowPartition, WindowRegions
from protoseg.match.dpsm.subregions import SubRegions, pool_subregions
from protoseg.match.dpsm.supply import Suppliers, class_suppliers
from protoseg.match.prototypes import served_names
from protoseg.proposals import MaskGenerationSettings, generate_masks, superpixel_proposals, uncovered_superpixels
from protoseg.windows import crop_pixels


class DPSMMatcher(Matcher):
    """Sub-region matching against a bank's part (and whole) prototypes (module docstring).

    Args:
        bank: the prototype bank.
        models: loaded models (:class:`protoseg.models.ModelSet`): ``features``, and ``sam`` for
            ``proposals="sam"``.
        options: :class:`~protoseg.config.matchers.DpsmOptions`.
        superpixels: the fine Felzenszwalb superpixels that cut proposals into sub-regions.
        cost_chunk_bytes: memory budget of the transport costs built at once.
        prune_min: ``prune_keep`` keeps at least this many prototypes per proposal.
    """

    def __init__(self, bank: PrototypeBank, models: Any, options: DpsmOptions, *,
                 superpixels: SuperpixelParams = SuperpixelParams(), cost_chunk_bytes: int = COST_CHUNK_BYTES,
                 prune_min: int = PRUNE_MIN):
        if options.proposals == "sam" and models.sam is None:
            raise ProtosegError("dpsm with proposals='sam' needs a SAM model (preset field `sam`); or use "
                                "proposals='superpixels'")
        self.bank, self.models, self.options = bank, models, options
        self.superpixel_params = superpixels
        self.cost_chunk_bytes, self.prune_min = int(cost_chunk_bytes), int(prune_min)
        # Passed with every call: the SAM predictor of a shared ModelSet is never changed.
        self.sam_settings = MaskGenerationSettings.from_options(options.sam_options)
        self.classes: list[str] = []
        self.counts: dict[str, int] = {}
        self.reset_stats()
        self.matching: Matching | None = None

    # ------------------------------------------------------------------ the Matcher interface
    def reset_stats(self) -> None:
        """Zero the transport counts of :attr:`stats` (module docstring)."""
        self.counts.update(transport_problems=0, transport_not_converged=0)

    @property
    def stats(self) -> dict[str, int]:
        return self.counts

    def serves(self, names: list[str]) -> list[bool]:
        """Which names the bank labels with a finite prototype of the level this mode matches."""
        level = "whole" if self.options.mode == "image-to-image" else "part"
        return served_names(self.bank, names, False, level)

    def prepare(self, classes: list[str]) -> None:
        """Collect each class's prototypes: part rows (supplies, support-image groups) or whole rows."""
        self.classes = list(classes)
        self.reset_stats()
        self.matching = Matching(class_suppliers(self.bank, self.classes, self.options, self.models.device),
                                 self.options, self.counts, self.cost_chunk_bytes, self.prune_min)

    def prepared(self) -> Matching:
        """What the matching modes read for the prepared classes."""
        if self.matching is None:
            raise ProtosegError("call prepare(classes) before matching")
        return self.matching

    @property
    def suppliers(self) -> Suppliers:
        """The prepared classes' prototypes (:func:`~protoseg.match.dpsm.supply.class_suppliers`)."""
        return self.prepared().suppliers

    @property
    def proposes_per_image(self) -> bool:
        """SAM runs once per image (``proposals="sam"``, ``sam_scope="image"``), its masks cropped per window."""
        return self.options.proposals == "sam" and self.options.sam_scope == "image"

    @property
    def takes_proposals(self) -> bool:
        return self.options.proposals == "given"

    def check_proposals(self, given: bool) -> None:
        """Proposals are given for every image exactly when ``proposals="given"``."""
        if given and not self.takes_proposals:
            raise ProtosegError(f"proposals were passed but this dpsm matcher makes its own "
                                f"({self.options.proposals!r}); set matcher option proposals='given'")
        if not given and self.takes_proposals:
            raise ProtosegError("dpsm with proposals='given' needs the proposals of every image: "
                                "Segmenter.segment(image, classes, proposals=masks)")

    @torch.no_grad()
    def image_proposals(self, image: torch.Tensor) -> torch.Tensor | None:
        """SAM masks ``bool [N, H, W]`` of the whole (resized) image ``[3, H, W]`` with ``sam_scope="image"``
        (the segmenter crops them with every window and passes them to :meth:`__call__`); ``None`` otherwise."""
        if not self.proposes_per_image:
            return None
        masks, _ = generate_masks(self.models.sam, image, self.sam_settings)
        return masks.to(image.device)

    # ------------------------------------------------------------------ one window
    @torch.no_grad()
    def __call__(self, crop: torch.Tensor, proposals: torch.Tensor | None = None) -> torch.Tensor:
        """``crop`` float ``[3, h, w]`` RGB 0-255 -> scores ``[C, h, w]``: propose -> sub-regions -> match ->
        compose.

        ``proposals``: bool ``[N, h, w]`` masks of this window, with ``proposals="given"`` (or the window's
        crop of :meth:`image_proposals`; without them, ``sam_scope="image"`` runs SAM on the crop).
        """
        return self.finish_window(crop, self.forward_windows(crop[None])[0], None, proposals)

    def window_regions(self) -> WindowRegions:
        """The CPU part of a window (:mod:`protoseg.match.dpsm.partition`): fine superpixels, and with
        ``proposals="superpixels"`` the proposals, fallback proposals and sub-region weights."""
        options = self.options
        return WindowRegions(self.superpixel_params,
                             options.proposal_superpixels if options.proposals == "superpixels" else None,
                             options.max_proposals, options.fallback != "none",
                             tuple(self.models.features.grid), options.pooling)

    @torch.no_grad()
    def forward_windows(self, crops: torch.Tensor) -> list[torch.Tensor]:
        """Patch features ``[D, gh, gw]`` (float32) of each of ``crops [B, 3, h, w]``, one forward."""
        return list(self.models.features(crops).float())

    @torch.no_grad()
    def finish_window(self, crop: torch.Tensor, forwarded: torch.Tensor, regions: WindowPartition | None = None,
                      proposals: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``[C, h, w]`` of ``crop`` from its patch features ``forwarded [D, gh, gw]`` and its
        :meth:`window_regions` (computed here when ``None``); ``proposals`` as :meth:`__call__`."""
        self.prepared()
        feats = forwarded
        partition = regions if regions is not None else self.window_regions()(crop_pixels(crop))
        fine = partition.fine.to(feats.device)
        if partition.masks is None:
            masks, weights = self.add_fallback(self.propose(crop, None, proposals).to(feats.device), fine), None
        else:
            self.check_proposals(proposals is not None)
            masks, weights = partition.masks.to(feats.device), partition.weights
        sub = self.subregions(feats, masks, fine, weights)
        return self.compose(self.proposal_scores(sub), sub.masks)

    # ------------------------------------------------------------------ the steps
    def propose(self, crop: torch.Tensor, image: np.ndarray | None = None,
                given: torch.Tensor | None = None) -> torch.Tensor:
        """Class-agnostic proposals ``bool [N, h, w]`` of a crop (``image``: its pixels, uint8 ``[h, w, 3]``,
        computed when needed and not given; ``given``: the caller's, ``proposals="given"``, or this window's
        crop of the image-level SAM masks, ``sam_scope="image"``)."""
        if given is None or not self.proposes_per_image:
            self.check_proposals(given is not None)
        if given is not None:
            masks = given.bool()
            masks = masks[masks.flatten(1).any(1)]
        elif self.options.proposals == "sam":
            masks, _ = generate_masks(self.models.sam, crop, self.sam_settings)
        else:
            masks = superpixel_proposals(crop_pixels(crop) if image is None else image,
                                         self.options.proposal_superpixels)
        masks = masks.to(crop.device)
        if self.options.max_proposals is not None:
            masks = masks[: self.options.max_proposals]
        return masks

    def add_fallback(self, masks: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
        """Append one proposal per fine superpixel's uncovered part (``fallback="superpixels"``)."""
        if self.options.fallback == "none":
            return masks
        extra = uncovered_superpixels(masks, fine)
        return torch.cat([masks, extra]) if len(extra) else masks

    def subregions(self, feats: torch.Tensor, masks: torch.Tensor, fine: torch.Tensor,
                   weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> SubRegions:
        """Sub-regions (fine superpixels ∩ proposal), their pooled features (eq. 5) and demands (eq. 8)
        (``weights``: their grid weights, :class:`~protoseg.match.dpsm.partition.WindowPartition`)."""
        return pool_subregions(feats, masks, fine, self.options.pooling, weights)

    def proposal_scores(self, sub: SubRegions) -> torch.Tensor:
        """Class scores ``[N, C]`` of every proposal under the configured ``mode``."""
        matching = self.prepared()
        if len(sub.masks) == 0:
            return torch.zeros(0, matching.suppliers.num_classes, device=sub.features.device)
        return MODES[self.options.mode](sub, matching)

    def compose(self, scores: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Paint proposal scores ``[N, C]`` through ``masks [N, h, w]`` -> ``[C, h, w]`` (``composition``)."""
        return compose(scores, masks, self.options.composition)
