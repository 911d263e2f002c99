"""The MMSeg test protocol in windows.py: mmcv rescale sizes, mmseg's window grid, overlap averaging."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from protoseg.windows import rescale_size, resize_image, slide, window_grid


def mmseg_grid(h, w, crop=448, stride=224):
    """mmseg 0.27 ``slide_inference`` loop, transcribed literally (the reference formula)."""
    h_grids = max(h - crop + stride - 1, 0) // stride + 1
    w_grids = max(w - crop + stride - 1, 0) // stride + 1
    out = []
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1 = h_idx * stride
            x1 = w_idx * stride
            y2 = min(y1 + crop, h)
            x2 = min(x1 + crop, w)
            y1 = max(y2 - crop, 0)
            x1 = max(x2 - crop, 0)
            out.append((y1, y2, x1, x2))
    return out


@pytest.mark.parametrize(
    "length, spans",
    [
        (300, [(0, 300)]),  # shorter than a crop: one window, whole image
        (448, [(0, 448)]),  # exactly one crop
        (449, [(0, 448), (1, 449)]),  # one pixel more: second window clamped to the edge
        (500, [(0, 448), (52, 500)]),  # VOC-like width after resize (clamped)
        (597, [(0, 448), (149, 597)]),
        (672, [(0, 448), (224, 672)]),  # exact fit of two strides
        (673, [(0, 448), (224, 672), (225, 673)]),
        (896, [(0, 448), (224, 672), (448, 896)]),  # Cityscapes 1024x2048 -> 448x896
        (897, [(0, 448), (224, 672), (448, 896), (449, 897)]),
    ],
)
def test_axis_windows_hand_checked(length, spans):
    grid = window_grid(448, length)
    assert [(x1, x2) for _, _, x1, x2 in grid] == spans
    grid = window_grid(length, 448)
    assert [(y1, y2) for y1, y2, _, _ in grid] == spans


def test_grid_matches_mmseg_formula_on_many_sizes():
    sizes = list(range(1, 1400, 7)) + [223, 224, 225, 447, 448, 449, 671, 672, 673, 2048]
    for h in sizes[::3]:
        for w in sizes:
            assert window_grid(h, w) == mmseg_grid(h, w), (h, w)
    # other crop / stride settings too
    for h, w in [(100, 250), (513, 1024), (37, 37)]:
        assert window_grid(h, w, crop=64, stride=32) == mmseg_grid(h, w, 64, 32)


def test_grid_covers_every_pixel_and_order_is_rows_then_columns():
    grid = window_grid(500, 700)
    assert grid[0] == (0, 448, 0, 448) and grid[1] == (0, 448, 224, 672) and grid[2] == (0, 448, 252, 700)
    cover = np.zeros((500, 700), int)
    for y1, y2, x1, x2 in grid:
        assert y2 - y1 == 448 and x2 - x1 == 448
        cover[y1:y2, x1:x2] += 1
    assert cover.min() >= 1


@pytest.mark.parametrize(
    "hw, expected",
    [
        ((375, 500), (448, 597)),  # VOC landscape: 500*448/375 = 597.33 -> 597
        ((500, 375), (597, 448)),
        ((512, 683), (448, 598)),  # ADE: 683*0.875 = 597.625 -> 598
        ((1024, 2048), (448, 896)),  # Cityscapes
        ((256, 302), (448, 529)),  # 302*1.75 = 528.5 -> 529: mmcv rounds half up (Python round() gives 528)
        ((448, 448), (448, 448)),
        ((100, 5000), (41, 2048)),  # long side cap 2048 wins: factor 0.4096, 100*0.4096 = 40.96 -> 41
        ((200, 300), (448, 672)),  # small images are upsampled
    ],
)
def test_rescale_size_hand_checked(hw, expected):
    assert rescale_size(*hw) == expected


def test_rescale_size_matches_mmcv_rule_on_many_sizes():
    rng = np.random.default_rng(0)
    for h, w in rng.integers(16, 4000, size=(500, 2)):
        f = min(2048 / max(h, w), 448 / min(h, w))
        assert rescale_size(int(h), int(w)) == (int(h * f + 0.5), int(w * f + 0.5))


def test_resize_image_is_cv2_bilinear_and_close_to_half_pixel_interpolation():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    out = resize_image(img, (80, 41))
    ref = F.interpolate(torch.from_numpy(img).permute(2, 0, 1).float()[None], size=(80, 41), mode="bilinear",
                        align_corners=False)[0]
    assert (out - ref).abs().max() <= 1.0  # cv2's fixed-point weights round, torch's float ones do not
    assert torch.equal(out, out.round())  # uint8 results, as mmcv returns


def test_resize_image_is_half_pixel_bilinear_without_antialias():
    # A 2x2 image upsampled to 4x4: half-pixel centres give weights 1/4, 3/4 at interior pixels.
    img = np.array([[[0] * 3, [100] * 3], [[200] * 3, [40] * 3]], dtype=np.uint8)
    out = resize_image(img, (4, 4))[0].numpy()
    row0 = [0, 25, 75, 100]  # edge clamped, then 0.75*0+0.25*100, ...
    assert np.allclose(out[0], row0)
    assert out.shape == (4, 4) and out.dtype == np.float32
    assert resize_image(img, (2, 2)).shape == (3, 2, 2)  # same size: untouched


def test_slide_averages_overlaps_exactly():
    H, W = 500, 700
    image = torch.zeros(3, H, W)
    grid = window_grid(H, W)
    calls = []

    def score(crop):
        k = len(calls)
        calls.append(crop.shape)
        return torch.full((2, *crop.shape[-2:]), float(k))

    out = slide(image, score, 2)
    total = np.zeros((H, W))
    count = np.zeros((H, W))
    for k, (y1, y2, x1, x2) in enumerate(grid):
        total[y1:y2, x1:x2] += k
        count[y1:y2, x1:x2] += 1
    assert len(calls) == len(grid)
    assert np.allclose(out[0].numpy(), total / count) and np.allclose(out[1].numpy(), total / count)
