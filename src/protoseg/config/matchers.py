"""Options of each matcher as a typed record, validated on construction.

Each option is declared and validated here, once; a matcher is constructed from its record
(``Matcher(bank, models, options, superpixels=...)``). ``MATCHER_OPTIONS`` maps a matcher name
(:data:`protoseg.match.MATCHERS`) to its options record; a preset holds one such record, so a bad key
or value fails when the preset (and hence the :class:`~protoseg.segment.Segmenter`) is made, naming
the key and the values it takes. The superpixel parameters are a preset field shared by every matcher,
not a matcher option.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from protoseg.config.fields import checked, from_dict, require
from protoseg.config.superpixels import SuperpixelParams
from protoseg.errors import ProtosegError


@dataclass(frozen=True)
class FreedaOptions:
    """FreeDA's online matcher (:class:`protoseg.match.freeda.FreeDAMatcher`).

    Attributes:
        k: retrieved prototypes per class.
        beta: weight of the local term (``S = β·local + (1-β)·global``).
        aggregation: how retrieved prototypes become class prototypes (``"mean"``: FreeDA; ``"kmeans"``:
            ``clusters`` centroids, max over them).
        clusters: k-means centroids per class.
        pooling: region pooling (``"point"``: FreeDA's bilinear sampling; ``"area"``).
        use_superpixels, use_global: the local region term and the global CLIP term.
        local_sigmoid, global_sigmoid: sigmoid on the local / global cosines.
        normalize_templates: L2 each template embedding before the template mean.
        batch_size: sliding windows per DINOv2 / CLIP forward (scores do not depend on it; larger
            batches pay off on a GPU, about 1.02x on a CPU).
    """

    k: int = 350
    beta: float = 0.8
    aggregation: Literal["mean", "kmeans"] = "mean"
    clusters: int = 1
    pooling: Literal["point", "area"] = "point"
    use_superpixels: bool = True
    use_global: bool = True
    local_sigmoid: bool = True
    global_sigmoid: bool = False
    normalize_templates: bool = False
    batch_size: int = 4

    def __post_init__(self) -> None:
        checked(self, "freeda option")
        require(self.batch_size >= 1, "freeda option", "batch_size", ">= 1", self.batch_size)
        require(self.k >= 1, "freeda option", "k", ">= 1", self.k)
        require(0.0 <= self.beta <= 1.0, "freeda option", "beta", "in [0, 1]", self.beta)
        require(self.clusters >= 1, "freeda option", "clusters", ">= 1", self.clusters)


@dataclass(frozen=True)
class DpsmOptions:
    """DPSM's sub-region matcher (:class:`protoseg.match.dpsm.DPSMMatcher`; its docstring has the math).

    The defaults are the paper's setting; ``capacity``, ``supply``, ``epsilon="auto"``, ``emd_solver="exact"``
    for ``subregion-ot``, ``mode="nearest-part"``, ``proposals="given"`` and
    ``composition="confident-smallest"`` go beyond it (documented deviations, off by default).

    Attributes:
        mode: Table 3's matching column (or the ``"nearest-part"`` reference).
        proposals: SAM automatic masks, coarse superpixels, or masks given per image by the caller.
        epsilon: Sinkhorn regularisation, or ``"auto"`` (per proposal: ``epsilon_ratio`` x its deciding
            spread, at least ``epsilon_floor``).
        epsilon_ratio, epsilon_floor: the ``"auto"`` rule.
        capacity: τ, every class's (view's, cluster's) supply is multiplied by it; dustbin ``S - 1``.
        supply: one supply unit per ``"class"`` (eq. 7 / 12), per support ``"view"`` or per coarse ``"cluster"``.
        supply_clusters: coarse clusters per class for ``supply="cluster"`` on banks without their own.
        iterations, stop_thr: Sinkhorn iteration cap and marginal tolerance.
        proposal_superpixels: Felzenszwalb parameters of superpixel proposals.
        pooling: sub-region pooling on the feature grid.
        composition: how overlapping proposals combine per pixel.
        fallback: what scores pixels no proposal covers.
        emd_solver: solver of every transport problem: entropic ``"sinkhorn"`` or ``"exact"`` (POT).
        sam_options: SAM automatic-mask-generation settings (e.g. ``points_per_side``).
        max_proposals: keep at most this many proposals (largest predicted IoU first).
        chunk_bytes: memory budget of one transport chunk (``"auto"`` or bytes).
        prune_keep: Sinkhorn ``subregion-ot`` only: fraction of the part prototypes kept exactly per
            proposal (its cheapest); each class's other prototypes are merged into one aggregate supplier
            (``0`` disables; docs/dpsm.md has the measured error).
        transport_dtype: precision of the Sinkhorn iterations of ``subregion-ot``.
        sam_scope: ``"image"``: SAM runs once on the whole resized image and its masks are cropped per
            sliding window; ``"window"``: once per window.
    """

    mode: Literal["image-to-image", "single", "image-to-class", "subregion-ot", "nearest-part"] = "subregion-ot"
    proposals: Literal["sam", "superpixels", "given"] = "sam"
    epsilon: float | Literal["auto"] = 0.05
    epsilon_ratio: float = 0.5
    epsilon_floor: float = 1e-3
    capacity: float = 1.0
    supply: Literal["class", "view", "cluster"] = "class"
    supply_clusters: int = 4
    iterations: int = 1000
    stop_thr: float = 1e-4
    proposal_superpixels: SuperpixelParams = SuperpixelParams(scale=1000.0, sigma=1.0, min_size=400)
    pooling: Literal["area", "point"] = "area"
    composition: Literal["mean", "smallest", "confident", "confident-smallest"] = "mean"
    fallback: Literal["superpixels", "none"] = "superpixels"
    emd_solver: Literal["sinkhorn", "exact"] = "sinkhorn"
    sam_options: dict[str, Any] | None = None
    max_proposals: int | None = None
    chunk_bytes: int | Literal["auto"] | None = "auto"
    prune_keep: float = 0.05
    transport_dtype: Literal["float32", "float64"] = "float32"
    sam_scope: Literal["image", "window"] = "image"

    def __post_init__(self) -> None:
        checked(self, "dpsm option")
        require(0 <= self.prune_keep < 1, "dpsm option", "prune_keep", "in [0, 1) (0: off)", self.prune_keep)
        require(self.epsilon == "auto" or self.epsilon > 0, "dpsm option", "epsilon", "> 0 or 'auto'",
                self.epsilon)
        require(self.epsilon_ratio > 0, "dpsm option", "epsilon_ratio", "> 0", self.epsilon_ratio)
        require(self.epsilon_floor > 0, "dpsm option", "epsilon_floor", "> 0", self.epsilon_floor)
        require(self.capacity >= 1, "dpsm option", "capacity", ">= 1", self.capacity)
        require(self.supply_clusters >= 1, "dpsm option", "supply_clusters", ">= 1", self.supply_clusters)
        require(self.iterations >= 1, "dpsm option", "iterations", ">= 1", self.iterations)
        require(self.stop_thr > 0, "dpsm option", "stop_thr", "> 0", self.stop_thr)
        require(self.max_proposals is None or self.max_proposals >= 1, "dpsm option", "max_proposals",
                ">= 1 or None", self.max_proposals)
        if self.epsilon == "auto" and self.mode in ("single", "image-to-class") and self.emd_solver == "sinkhorn":
            raise ProtosegError(f"dpsm epsilon='auto' is a per-proposal scale of mode 'subregion-ot'; give mode "
                                f"{self.mode!r} a number (or emd_solver='exact')")


#: matcher name -> its options record (:func:`protoseg.match.register_matcher` adds to it).
MATCHER_OPTIONS: dict[str, type] = {"freeda": FreedaOptions, "dpsm": DpsmOptions}


def matcher_options(matcher: str, options: Any = None) -> Any:
    """The options record of ``matcher`` from a record, a dict of overrides of its defaults, or ``None``."""
    try:
        cls = MATCHER_OPTIONS[matcher]
    except KeyError:
        raise ProtosegError(f"unknown matcher {matcher!r}; choose one of: {', '.join(MATCHER_OPTIONS)}") from None
    if isinstance(options, cls):
        return options
    return from_dict(cls, options or {}, f"{matcher} option")
