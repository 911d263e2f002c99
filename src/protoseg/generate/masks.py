"""Binary foreground masks from attribution maps: the FreeDA and DPSM rules.

Both take one attribution map ``A(I, w)`` (eq. 1), float ``[H, W]`` (or a batch ``[..., H, W]``, each
map normalised on its own over its last two axes), and return a bool mask of the same shape.

- FreeDA (sec. 3.1): min-max normalise to ``[-1, 1]``, apply a sigmoid, threshold at ``gamma = 0.45``
  (``mask = sigmoid(2 (A - min) / (max - min) - 1) > gamma``). The sigmoid of ``[-1, 1]`` spans
  ``[0.269, 0.731]``, so ``gamma = 0.45`` keeps the pixels whose normalised score is above
  ``logit(0.45) = -0.2007``, i.e. above 39.97 % of the min-max range.
- DPSM (sec. 3.1): min-max normalise to ``[0, 1]``, threshold at ``gamma = 0.4``.

A constant map (``max == min``) carries no localisation: it normalises to the lower end of the range
everywhere, so both rules return an empty mask (for ``gamma`` above ``sigmoid(-1)`` resp. ``0``);
:func:`is_degenerate` tells such maps apart. The comparison is strict (``>``).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["FREEDA_GAMMA", "DPSM_GAMMA", "dpsm_mask", "freeda_mask", "is_degenerate", "minmax_normalize"]

FREEDA_GAMMA = 0.45
DPSM_GAMMA = 0.4

Array = np.ndarray | torch.Tensor


def _as_tensor(x: Array) -> tuple[torch.Tensor, bool]:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.asarray(x, dtype=np.float32)), True
    return x.float(), False


def minmax_normalize(attribution: Array, low: float = 0.0, high: float = 1.0) -> Array:
    """Affine map of each ``[H, W]`` map (last two axes) onto ``[low, high]``; constant maps -> ``low``."""
    x, numpy = _as_tensor(attribution)
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    span = hi - lo
    unit = torch.where(span > 0, (x - lo) / torch.where(span > 0, span, 1.0), torch.zeros_like(x))
    out = low + (high - low) * unit
    return out.numpy() if numpy else out


def freeda_mask(attribution: Array, gamma: float = FREEDA_GAMMA) -> Array:
    """FreeDA rule: ``sigmoid(minmax to [-1, 1]) > gamma`` -> bool mask of the input's shape."""
    x, numpy = _as_tensor(attribution)
    mask = torch.sigmoid(minmax_normalize(x, -1.0, 1.0)) > gamma
    return mask.numpy() if numpy else mask


def dpsm_mask(attribution: Array, gamma: float = DPSM_GAMMA) -> Array:
    """DPSM rule: ``minmax to [0, 1] > gamma`` -> bool mask of the input's shape."""
    x, numpy = _as_tensor(attribution)
    mask = minmax_normalize(x, 0.0, 1.0) > gamma
    return mask.numpy() if numpy else mask


def is_degenerate(attribution: Array) -> Array:
    """True for maps that are constant over their last two axes (no localisation); shape ``[...]``."""
    x, numpy = _as_tensor(attribution)
    flat = x.flatten(-2)
    out = flat.amax(dim=-1) == flat.amin(dim=-1)
    return out.numpy() if numpy else out
