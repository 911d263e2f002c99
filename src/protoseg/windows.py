"""The MMSegmentation test protocol: keep-ratio resize and sliding-window inference.

- :func:`rescale_size` reproduces mmcv ``imrescale`` with ``scale=(2048, 448)``: the factor is
  ``min(long_max / long_side, short_max / short_side)`` and each side becomes ``int(side * f + 0.5)``.
- :func:`window_grid` reproduces mmseg 0.27 ``slide_inference``: per axis
  ``max(L - crop + stride - 1, 0) // stride + 1`` windows, the last one clamped to the image edge.
- :func:`slide` sums window scores, divides by the per-pixel overlap count.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F


def rescale_size(height: int, width: int, scale: tuple[int, int] = (2048, 448)) -> tuple[int, int]:
    """mmcv ``imrescale`` output ``(new_h, new_w)`` for ``scale = (long_max, short_max)``."""
    long_max, short_max = max(scale), min(scale)
    factor = min(long_max / max(height, width), short_max / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (cv2 ``INTER_LINEAR`` semantics: half-pixel centres, no antialias).

    ``image``: uint8 ``[H, W, 3]`` -> float32 ``[3, h, w]`` in 0-255.
    """
    t = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).float()[None]
    if tuple(t.shape[-2:]) != tuple(size):
        t = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
        t = t.round().clamp(0, 255)  # cv2 returns uint8 for uint8 input
    return t[0]


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
    H, W = image.shape[-2:]
    total = None
    count = torch.zeros(1, H, W)
    for y1, y2, x1, x2 in window_grid(H, W, crop, stride):
        scores = score_fn(image[:, y1:y2, x1:x2])
        if total is None:
            total = torch.zeros(num_channels, H, W, device=scores.device)
            count = count.to(scores.device)
        total[:, y1:y2, x1:x2] += scores.float()
        count[:, y1:y2, x1:x2] += 1
    assert total is not None
    return total / count
