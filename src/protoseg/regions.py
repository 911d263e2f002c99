"""Class-agnostic regions and pooling of dense features over them.

Two pooling rules turn a full-resolution mask into weights on the ``h x w`` feature grid:

- ``"area"``: the fraction of each grid cell the mask covers (adaptive average pooling of the mask,
  i.e. ``F.adaptive_avg_pool2d`` bins). A region's feature is the area-weighted mean of patch features.
- ``"point"``: FreeDA's rule — the binary mask is bilinearly resized to ``h x w`` with
  ``align_corners=True``, which samples it at the patch centres of an ``align_corners`` grid.

Both are computed from an integer label map in one scatter, without materialising one mask per region,
and agree exactly with resizing each binary mask separately (see tests).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from skimage.segmentation import felzenszwalb

from protoseg.config.superpixels import SuperpixelParams

POOLING_MODES = ("area", "point")


def superpixels(image: np.ndarray, params: SuperpixelParams = SuperpixelParams()) -> np.ndarray:
    """Felzenszwalb superpixels of ``image`` (``uint8 [H, W, 3]`` RGB) -> ``int64 [H, W]`` labels ``0..R-1``.

    As FreeDA's code does, the image is passed as float in ``[0, 1]``.
    """
    labels = felzenszwalb(image.astype(np.float64) / 255.0, scale=params.scale, sigma=params.sigma,
                          min_size=params.min_size)
    # Relabel to a dense 0..R-1 range in sorted order (felzenszwalb already does; keep it a guarantee).
    # Same mapping as np.unique(return_inverse=True), without its sort.
    labels = labels.astype(np.int64)
    present = np.bincount(labels.ravel() - labels.min()) > 0
    if present.all() and labels.min() == 0:
        return labels
    return (np.cumsum(present) - 1)[labels - labels.min()]


def _adaptive_bins(size: int, out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Start/end (exclusive) of each adaptive-avg-pool bin along one axis."""
    i = torch.arange(out)
    start = torch.div(i * size, out, rounding_mode="floor")
    end = torch.div((i + 1) * size + out - 1, out, rounding_mode="floor")
    return start, end


def area_axis_weights(size: int, out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each input index along an axis: the (up to two) bins it falls in and its weight in each.

    Returns ``bins [size, 2]`` (``-1`` when absent) and ``weights [size, 2]`` (``1 / bin length``).
    """
    start, end = _adaptive_bins(size, out)
    pos = torch.arange(size)
    inside = (pos[:, None] >= start[None, :]) & (pos[:, None] < end[None, :])  # [size, out]
    bins = torch.full((size, 2), -1, dtype=torch.long)
    weights = torch.zeros((size, 2))
    counts = inside.sum(1)
    first = inside.float().argmax(1)
    bins[:, 0] = first
    weights[:, 0] = 1.0 / (end[first] - start[first]).float()
    two = counts > 1
    bins[two, 1] = first[two] + 1
    weights[two, 1] = 1.0 / (end[first[two] + 1] - start[first[two] + 1]).float()
    return bins, weights


def point_axis_weights(size: int, out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each output sample along an axis: the two input pixels bilinear (align_corners=True) reads.

    Returns ``src [out, 2]`` indices and ``weights [out, 2]``.
    """
    coord = torch.arange(out, dtype=torch.float64) * ((size - 1) / (out - 1) if out > 1 else 0.0)
    lo = coord.floor().long().clamp(max=size - 1)
    hi = (lo + 1).clamp(max=size - 1)
    frac = (coord - lo.double()).float()
    return torch.stack([lo, hi], 1), torch.stack([1 - frac, frac], 1)


def region_weights(labels: torch.Tensor | np.ndarray, grid: tuple[int, int], mode: str = "area",
                   num_regions: int | None = None) -> torch.Tensor:
    """Weights of each labelled region on the feature grid.

    Args:
        labels: int ``[H, W]`` region ids in ``0..R-1``; negative ids are ignored (no region).
        grid: feature grid ``(h, w)``.
        mode: ``"area"`` or ``"point"`` (module docstring).
        num_regions: ``R``; defaults to ``labels.max() + 1``.

    Returns:
        float32 ``[R, h * w]``: row ``r`` equals resizing the binary mask ``labels == r`` to ``(h, w)``
        with the chosen rule, flattened.
    """
    labels = torch.as_tensor(labels).long()
    H, W = labels.shape
    h, w = grid
    R = int(labels.max().item()) + 1 if num_regions is None else num_regions
    R = max(R, 0)
    out = torch.zeros(R * h * w, dtype=torch.float32, device=labels.device)
    if R == 0:
        return out.view(0, h * w)
    if mode == "area":
        by, wy = (t.to(labels.device) for t in area_axis_weights(H, h))
        bx, wx = (t.to(labels.device) for t in area_axis_weights(W, w))
        for a in range(2):
            rows = torch.arange(H, device=labels.device) if a == 0 else torch.nonzero(by[:, 1] >= 0)[:, 0]
            for b in range(2):
                cols = torch.arange(W, device=labels.device) if b == 0 else torch.nonzero(bx[:, 1] >= 0)[:, 0]
                lab = labels[rows][:, cols]
                ok = lab >= 0
                idx = lab * (h * w) + by[rows, a, None] * w + bx[None, cols, b]
                val = (wy[rows, a, None] * wx[None, cols, b]).expand_as(lab)
                out.index_add_(0, idx[ok], val[ok])
    elif mode == "point":
        sy, wy = point_axis_weights(H, h)
        sx, wx = point_axis_weights(W, w)
        sy, wy, sx, wx = (t.to(labels.device) for t in (sy, wy, sx, wx))
        cell = torch.arange(h * w, device=labels.device).view(h, w)
        for a in range(2):
            for b in range(2):
                lab = labels[sy[:, a, None], sx[None, :, b]]  # [h, w]
                val = wy[:, a, None] * wx[None, :, b]
                ok = (lab >= 0) & (val > 0)
                out.index_add_(0, (lab * (h * w) + cell)[ok], val[ok])
    else:
        raise ValueError(f"pooling mode must be one of {POOLING_MODES}, got {mode!r}")
    return out.view(R, h * w)


def mask_weights(masks: torch.Tensor, grid: tuple[int, int], mode: str = "area") -> torch.Tensor:
    """Weights on the feature grid of arbitrary (possibly overlapping) masks.

    ``masks``: bool/float ``[R, H, W]`` -> float32 ``[R, h * w]`` (same rules as :func:`region_weights`).
    """
    m = masks.float()[:, None]
    if m.shape[0] == 0:
        return m.new_zeros(0, grid[0] * grid[1])
    if mode == "area":
        pooled = F.adaptive_avg_pool2d(m, grid)
    elif mode == "point":
        pooled = F.interpolate(m, size=grid, mode="bilinear", align_corners=True)
    else:
        raise ValueError(f"pooling mode must be one of {POOLING_MODES}, got {mode!r}")
    return pooled.flatten(1)


def pool_features(features: torch.Tensor, weights: torch.Tensor, eps: float = float(np.finfo(np.float32).eps)
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean of patch features per region (mask average pooling, eq. 2 of both papers).

    Args:
        features: ``[D, h, w]`` (un-normalised) patch features.
        weights: ``[R, h * w]`` from :func:`region_weights` / :func:`mask_weights`.

    Returns:
        ``pooled [R, D]`` = ``sum(w * f) / (sum(w) + eps)`` and ``mass [R]`` = ``sum(w)``;
        regions with zero mass pool to zeros (callers treat ``mass == 0`` as "no feature").
    """
    D = features.shape[0]
    flat = features.reshape(D, -1).to(weights.dtype)
    mass = weights.sum(1)
    pooled = (weights @ flat.T) / (mass[:, None] + eps)
    return pooled, mass


@dataclass(frozen=True)
class SuperpixelRegions:
    """The CPU region work of a window, picklable (run in worker processes): its superpixels and their
    weights on the feature grid.

    ``SuperpixelRegions(params, grid, pooling)(image)``: uint8 ``[h, w, 3]`` -> ``(labels int64 [h, w],
    weights float32 [R, grid_h * grid_w])`` (:func:`superpixels`, :func:`region_weights`).
    """

    params: SuperpixelParams
    grid: tuple[int, int]
    pooling: str = "area"

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        labels = superpixels(image, self.params)
        return labels, region_weights(torch.from_numpy(labels), self.grid, self.pooling)
