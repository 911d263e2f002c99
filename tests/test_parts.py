import numpy as np
import pytest
import torch

from protoseg.config.superpixels import SuperpixelParams
from protoseg.offline.parts import image_prototypes, object_prototypes, supply_units
from protoseg.regions import mask_weights, pool_features


def test_object_prototypes_equal_pooling_each_mask_separately():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(5, 8, 8, generator=g)
    sp = torch.arange(64).view(8, 8).repeat_interleave(8, 0).repeat_interleave(8, 1) // 2 % 9  # 64x64 stripes
    objects = torch.full((64, 64), 255)
    objects[10:40, 5:50] = 3
    objects[45:60, 20:60] = 1
    got = object_prototypes(feats, objects.numpy(), sp.numpy(), "area")
    assert sorted(got) == [1, 3]
    for o in (1, 3):
        fg = objects == o
        whole, _ = pool_features(feats, mask_weights(fg[None], (8, 8), "area"))
        torch.testing.assert_close(got[o].whole, whole[0], atol=1e-5, rtol=1e-5)
        parts = [fg & (sp == s) for s in range(9) if (fg & (sp == s)).any()]
        ref, mass = pool_features(feats, mask_weights(torch.stack(parts), (8, 8), "area"))
        torch.testing.assert_close(got[o].parts, ref[mass > 0], atol=1e-5, rtol=1e-5)
        assert got[o].part_areas.sum() == fg.sum() == got[o].whole_area


def test_supply_units_follow_eq7():
    s = supply_units(torch.tensor([30.0, 10.0, 60.0]), images_per_class=4)
    torch.testing.assert_close(s, torch.tensor([0.3, 0.1, 0.6]) / 4)


def _quadrant_case():
    """An 8x8 image, 4x4 feature grid (2x2 pixels per cell); labels are four vertical stripes."""
    image = np.zeros((8, 8, 3), np.uint8)
    labels = np.repeat(np.arange(4)[None, :], 8, axis=0).repeat(2, axis=1)  # [8, 8] stripes of width 2
    feats = torch.arange(4 * 4, dtype=torch.float32).view(1, 4, 4).repeat(2, 1, 1)
    feats[1] *= -1
    return image, labels, feats


def test_parts_supplies_and_pooling_by_hand():
    image, labels, feats = _quadrant_case()
    fg = np.zeros((8, 8), bool)
    fg[:, 0:6] = True  # stripes 0, 1, 2 fully inside; stripe 3 outside
    fg[0:4, 4:6] = False  # stripe 2 half inside
    out = image_prototypes(feats, image, fg, SuperpixelParams(), pooling="area", labels=labels)
    assert out is not None
    whole, parts, areas = out.whole.numpy(), out.parts.numpy(), out.part_areas.numpy()
    supplies = supply_units(out.part_areas, 4).numpy()
    np.testing.assert_array_equal(areas, [16, 16, 8])
    np.testing.assert_allclose(supplies, np.array([16, 16, 8]) / 40 / 4, rtol=1e-6)
    assert supplies.sum() == pytest.approx(0.25)
    # Stripe f covers feature column f; stripe 2 covers rows 2-3 of column 2 only.
    grid = feats[0].numpy()
    np.testing.assert_allclose(parts[:, 0], [grid[:, 0].mean(), grid[:, 1].mean(), grid[2:, 2].mean()])
    np.testing.assert_allclose(parts[:, 1], -parts[:, 0])
    cells = np.concatenate([grid[:, 0], grid[:, 1], grid[2:, 2]])
    np.testing.assert_allclose(whole[0], cells.mean(), rtol=1e-6)


def test_empty_foreground_gives_none():
    image, labels, feats = _quadrant_case()
    assert image_prototypes(feats, image, np.zeros((8, 8), bool), labels=labels) is None


def test_felzenszwalb_path_supplies_sum_to_one_over_n():
    rng = np.random.default_rng(0)
    image = np.zeros((64, 64, 3), np.uint8)
    image[:, :32] = (200, 30, 30)
    image[:, 32:] = (30, 30, 200)
    image = np.clip(image + rng.integers(0, 10, image.shape), 0, 255).astype(np.uint8)
    fg = np.zeros((64, 64), bool)
    fg[16:48, 16:48] = True
    feats = torch.randn(5, 8, 8, generator=torch.Generator().manual_seed(0))
    out = image_prototypes(feats, image, fg, SuperpixelParams(scale=100, sigma=0.5, min_size=20))
    assert out is not None
    assert len(out.parts) >= 2  # the colour edge splits the foreground
    assert float(out.part_areas.sum()) == fg.sum() == out.whole_area
    supplies = supply_units(out.part_areas, 8)
    assert float(supplies.sum()) == pytest.approx(1 / 8, rel=1e-5)
    assert out.parts.shape == (len(supplies), 5) and out.whole.shape == (5,)
