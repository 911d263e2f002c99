import numpy as np
import pytest
import torch
import torch.nn.functional as F

from protoseg.config.superpixels import SuperpixelParams
from protoseg.regions import mask_weights, pool_features, region_weights, superpixels


def one_hot(labels: torch.Tensor, num: int) -> torch.Tensor:
    return torch.stack([labels == r for r in range(num)])


@pytest.mark.parametrize("shape", [(448, 448), (450, 333), (37, 37), (100, 500)])
def test_area_weights_equal_adaptive_pooling_of_each_mask(shape):
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 12, shape, generator=g)
    labels[:3] = -1  # ignored pixels belong to no region
    fast = region_weights(labels, (37, 37), "area", num_regions=12)
    ref = F.adaptive_avg_pool2d(one_hot(labels, 12).float()[:, None], (37, 37)).flatten(1)
    torch.testing.assert_close(fast, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", [(448, 448), (450, 333)])
def test_point_weights_equal_bilinear_align_corners_resize(shape):
    labels = torch.randint(0, 9, shape, generator=torch.Generator().manual_seed(1))
    fast = region_weights(labels, (37, 37), "point", num_regions=9)
    ref = F.interpolate(one_hot(labels, 9).float()[:, None], size=(37, 37), mode="bilinear",
                        align_corners=True).flatten(1)
    torch.testing.assert_close(fast, ref, atol=1e-4, rtol=0)
    torch.testing.assert_close(mask_weights(one_hot(labels, 9), (37, 37), "point"), ref)


def test_pool_features_hand_computed():
    # 2x2 grid, features D=2; region 0 covers the left column, region 1 one cell with weight 0.5.
    feats = torch.tensor([[[1.0, 3.0], [5.0, 7.0]], [[0.0, 2.0], [4.0, 6.0]]])  # [D=2, 2, 2]
    weights = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    pooled, mass = pool_features(feats, weights)
    torch.testing.assert_close(pooled[0], torch.tensor([3.0, 2.0]))
    torch.testing.assert_close(pooled[1], torch.tensor([3.0, 2.0]) * 0.5 / (0.5 + np.finfo(np.float32).eps))
    assert mass.tolist() == [2.0, 0.5, 0.0]
    assert torch.all(pooled[2] == 0)


def test_area_weights_sum_to_region_share_of_each_cell():
    labels = torch.zeros(74, 74, dtype=torch.long)
    labels[:, 37:] = 1
    w = region_weights(labels, (37, 37), "area")
    assert torch.allclose(w.sum(0), torch.ones(37 * 37))
    assert w[0].view(37, 37)[:, :18].min() == 1 and w[0].view(37, 37)[:, 19:].max() == 0


def test_superpixels_are_dense_and_follow_edges():
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, 32:] = 255
    labels = superpixels(img, SuperpixelParams(scale=100, sigma=0.5, min_size=20))
    assert labels.dtype == np.int64 and labels.shape == (64, 64)
    assert set(np.unique(labels)) == set(range(labels.max() + 1))
    # Flat halves are one region each (a thin strip may form on the blurred edge itself).
    assert len(np.unique(labels[:, :29])) == 1 and len(np.unique(labels[:, 35:])) == 1
    assert labels[0, 0] != labels[0, 63]


def test_unknown_pooling_mode_is_rejected():
    with pytest.raises(ValueError, match="pooling mode"):
        region_weights(torch.zeros(4, 4, dtype=torch.long), (2, 2), "max")
