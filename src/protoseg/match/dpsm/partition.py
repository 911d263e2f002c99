"""The CPU part of DPSM on one window: its fine superpixels and, with superpixel proposals, the proposals
(plus fallback proposals) and their sub-region weights on the feature grid — a pure function of the
window's pixels, picklable, so :class:`protoseg.pipeline.WindowPipeline` runs it in worker processes while
the models run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from protoseg.config.superpixels import SuperpixelParams
from protoseg.match.dpsm.subregions import subregion_weights
from protoseg.proposals import superpixel_proposals, uncovered_superpixels
from protoseg.regions import superpixels


@dataclass(frozen=True)
class WindowPartition:
    """What :class:`WindowRegions` computes for a window of ``h x w`` pixels.

    Attributes:
        fine: int64 ``[h, w]`` fine superpixel ids.
        masks: bool ``[N, h, w]`` proposals with the fallback proposals appended, or ``None`` when the
            proposals come from a model or the caller (SAM, ``proposals="given"``).
        weights: with ``masks``, :func:`~protoseg.match.dpsm.subregions.subregion_weights` of them
            (``weights [S, gh * gw]``, ``area [S]``, ``proposal [S]``); ``None`` otherwise or when ``N == 0``.
    """

    fine: torch.Tensor
    masks: torch.Tensor | None = None
    weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None


@dataclass(frozen=True)
class WindowRegions:
    """``WindowRegions(...)(image)``: uint8 ``[h, w, 3]`` -> :class:`WindowPartition`.

    Attributes:
        fine: the fine superpixels that cut proposals into sub-regions.
        proposals: the Felzenszwalb parameters of superpixel proposals, or ``None`` (proposals made elsewhere).
        max_proposals: keep the first this many proposals (``None``: all).
        fallback: append the uncovered part of every fine superpixel as a proposal.
        grid: the feature grid ``(gh, gw)``; pooling: ``"area"`` / ``"point"``.
    """

    fine: SuperpixelParams
    proposals: SuperpixelParams | None
    max_proposals: int | None
    fallback: bool
    grid: tuple[int, int]
    pooling: str

    def __call__(self, image: np.ndarray) -> WindowPartition:
        fine = torch.from_numpy(superpixels(image, self.fine))
        if self.proposals is None:
            return WindowPartition(fine)
        masks = superpixel_proposals(image, self.proposals)[: self.max_proposals]
        if self.fallback:
            extra = uncovered_superpixels(masks, fine)
            masks = torch.cat([masks, extra]) if len(extra) else masks
        weights = subregion_weights(masks, fine, self.grid, self.pooling) if len(masks) else None
        return WindowPartition(fine, masks, weights)
