"""The MMSegmentation test protocol: keep-ratio resize and sliding-window inference.

- :func:`rescale_size` reproduces mmcv ``imrescale`` with ``scale=(2048, 448)``: the factor is
  ``min(long_max / long_side, short_max / short_side)`` and each side becomes ``int(side * f + 0.5)``.
- :func:`window_grid` reproduces mmseg 0.27 ``slide_inference``: per axis
  ``max(L - crop + stride - 1, 0) // stride + 1`` windows, the last one clamped to the image edge.
- :func:`resize_image` is mmcv's cv2 bilinear resize.
- :func:`slide` sums window scores, divides by the per-pixel overlap count; :func:`slide_batches` does
  the same with windows scored in batches (one model forward for several windows).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch


def rescale_size(height: int, width: int, scale: tuple[int, int] = (2048, 448)) -> tuple[int, int]:
    """mmcv ``imrescale`` output ``(new_h, new_w)`` for ``scale = (long_max, short_max)``."""
    long_max, short_max = max(scale), min(scale)
    factor = min(long_max / max(height, width), short_max / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """mmcv's resize: ``cv2.resize(..., INTER_LINEAR)`` on uint8 (half-pixel centres, no antialias,
    cv2's fixed-point weights and uint8 rounding), so resized pixels equal mmcv's bit for bit.

    ``image``: uint8 ``[H, W, 3]`` -> float32 ``[3, h, w]`` in 0-255.
    """
    if tuple(image.shape[:2]) != tuple(size):
        image = cv2.resize(np.ascontiguousarray(image, dtype=np.uint8), (size[1], size[0]),
                           interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)  # one copy, writable


def crop_pixels(crop: torch.Tensor) -> np.ndarray:
    """A window as the CPU region steps read it: float ``[3, h, w]`` 0-255 -> uint8 ``[h, w, 3]`` (rounded,
    clamped, on the CPU)."""
    return crop.permute(1, 2, 0).round().clamp(0, 255).byte().cpu().numpy()


def _axis_windows(length: int, crop: int, stride: int) -> list[tuple[int, int]]:
    count = max(length - crop + stride - 1, 0) // stride + 1
    spans = []
    for i in range(count):
        start = i * stride
        end = min(start + crop, length)
        start = max(end - crop, 0)
        spans.append((start, end))
    return spans


def window_grid(height: int, width: int, crop: int = 448, stride: int = 224) -> list[tuple[int, int, int, int]]:
    """Windows ``(y1, y2, x1, x2)`` in mmseg's order (rows outer, columns inner)."""
    return [(y1, y2, x1, x2) for y1, y2 in _axis_windows(height, crop, stride)
            for x1, x2 in _axis_windows(width, crop, stride)]


def slide(image: torch.Tensor, score_fn: Callable[[torch.Tensor], torch.Tensor], num_channels: int,
          crop: int = 448, stride: int = 224) -> torch.Tensor:
    """Sliding-window scores averaged over overlaps.

    Args:
        image: float ``[3, H, W]``.
        score_fn: crop ``[3, h, w]`` -> scores ``[C, h, w]``.
        num_channels: ``C``.

    Returns:
        ``[C, H, W]`` float32 on the device ``score_fn`` returns.
    """
    return slide_batches(image, lambda crops: torch.stack([score_fn(c) for c in crops]), num_channels, crop,
                         stride, batch_size=1)


def slide_batches(image: torch.Tensor, score_fn: Callable[[torch.Tensor], torch.Tensor], num_channels: int,
                  crop: int = 448, stride: int = 224, batch_size: int = 1) -> torch.Tensor:
    """:func:`slide` with windows scored ``batch_size`` at a time (in mmseg's order).

    Every window of an image has the same size (``min(crop, H) x min(crop, W)``: the last one is clamped
    to the edge, not cut), so a batch is one tensor.

    Args:
        image: float ``[3, H, W]``.
        score_fn: crops ``[B, 3, h, w]`` -> scores ``[B, C, h, w]``.
        num_channels: ``C``.
        batch_size: windows per call of ``score_fn``.

    Returns:
        ``[C, H, W]`` float32 on the device ``score_fn`` returns.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    H, W = image.shape[-2:]
    total = None
    count = torch.zeros(1, H, W)
    grid = window_grid(H, W, crop, stride)
    for first in range(0, len(grid), batch_size):
        spans = grid[first:first + batch_size]
        crops = torch.stack([image[:, y1:y2, x1:x2] for y1, y2, x1, x2 in spans])
        scores = score_fn(crops)
        if total is None:
            total = torch.zeros(num_channels, H, W, device=scores.device)
            count = count.to(scores.device)
        for (y1, y2, x1, x2), window in zip(spans, scores, strict=True):
            total[:, y1:y2, x1:x2] += window.float()
            count[:, y1:y2, x1:x2] += 1
    assert total is not None
    return total / count
