import numpy as np
import torch

from protoseg.bank.parts import image_prototypes, object_prototypes, supply_units
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


def test_single_foreground_wrapper_and_empty_foreground():
    feats = torch.randn(3, 4, 4)
    image = np.zeros((32, 32, 3), np.uint8)
    fg = np.zeros((32, 32), bool)
    assert image_prototypes(feats, image, fg) is None
    fg[8:24, 8:24] = True
    p = image_prototypes(feats, image, fg)
    assert p is not None and p.whole_area == 256 and p.parts.shape[1] == 3
