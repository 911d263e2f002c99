"""Composition: proposal scores painted through (overlapping) proposals into per-pixel class scores.

``"mean"`` (default) — a pixel's class scores are the mean of the scores of all proposals covering it;
``"smallest"`` — the smallest covering proposal decides; ``"confident"`` — the covering proposal with the
highest top score decides; ``"confident-smallest"`` — SAM's order: the most confident covering proposal,
the smaller one among equally confident ones (top scores within :data:`CONFIDENCE_TIE`). Pixels no
proposal covers score 0 for every class.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

#: Top scores closer than this count as equally confident (``composition="confident-smallest"``).
CONFIDENCE_TIE = 1e-6


def compose(scores: torch.Tensor, masks: torch.Tensor, composition: str = "mean") -> torch.Tensor:
    """Paint proposal scores ``[N, C]`` through ``masks`` bool ``[N, h, w]`` -> ``[C, h, w]``."""
    N, C = scores.shape
    h, w = masks.shape[-2:]
    if N == 0:
        return torch.zeros(C, h, w, device=scores.device)
    if composition == "mean":
        m = masks.float()
        total = torch.einsum("nc,nhw->chw", scores, m)
        count = m.sum(0)
        return torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))
    key = PREFERENCES[composition](scores, masks)
    ranked = torch.where(masks, key[:, None, None], torch.full_like(masks, -torch.inf, dtype=torch.float32))
    best = ranked.argmax(0)  # [h, w]
    painted = scores[best].permute(2, 0, 1)
    return torch.where(masks.any(0)[None], painted, torch.zeros_like(painted))


def _smallest(scores: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    return -masks.flatten(1).sum(1).float()


def _confident(scores: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    return scores.amax(1)


def _confident_smallest(scores: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Rank by (top score to :data:`CONFIDENCE_TIE`, smaller area)."""
    area = masks.flatten(1).sum(1)
    top = torch.round(scores.amax(1).double() / CONFIDENCE_TIE)
    order = np.lexsort((-area.cpu().numpy(), top.cpu().numpy()))  # ascending: last = preferred
    key = torch.empty(len(scores), device=scores.device)
    key[torch.from_numpy(order).to(scores.device)] = torch.arange(len(scores), dtype=torch.float32,
                                                                  device=scores.device)
    return key


#: composition -> preference key ``[N]`` of each proposal (larger = preferred) from scores ``[N, C]`` and
#: masks ``[N, h, w]`` (``"mean"`` blends instead of choosing).
PREFERENCES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "smallest": _smallest,
    "confident": _confident,
    "confident-smallest": _confident_smallest,
}
