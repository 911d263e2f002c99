"""FreeDA's scoring rule on hand-built features, prototypes and CLIP similarities."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from protoseg.bank import PrototypeBank
from protoseg.config.matchers import FreedaOptions
from protoseg.config.superpixels import SuperpixelParams
from protoseg.errors import ProtosegError
from protoseg.match.freeda import FreeDAMatcher

E1, E2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])


class FixedFeatures:
    """Patch features [2, 2, 2]: left column 3*e1 (un-normalised), right column e2."""

    encoder_id, dim, grid, device = "fixed", 2, (2, 2), torch.device("cpu")

    def __call__(self, images):
        f = torch.zeros(images.shape[0], 2, 2, 2)
        f[:, :, :, 0] = 3 * E1[None, :, None]
        f[:, :, :, 1] = E2[None, :, None]
        return f


class FixedClip:
    encoder_id = "clip"

    def encode_classes(self, names, normalize_each=False):
        return F.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])[: len(names)], dim=-1)

    def encode_images(self, images):
        return F.normalize(torch.tensor([[0.3, -0.1, 0.9]]), dim=-1)


def halves_image(size=28):
    crop = torch.zeros(3, size, size)
    crop[:, :, size // 2:] = 255.0
    return crop


def bank(keys=None):
    protos = np.stack([E1, E1 * 2, E2, -E1]).astype(np.float32)
    table = {"label": ["A", "A", "B", "C"], "level": ["whole", "whole", "whole", "part"]}
    return PrototypeBank.create(protos, table, method="t", feature_encoder="fixed", keys=keys,
                                text_encoder="clip" if keys is not None else None, dtype="float32")


def models(with_clip=True):
    return SimpleNamespace(features=FixedFeatures(), clip=FixedClip() if with_clip else None,
                           device=torch.device("cpu"))


@pytest.mark.parametrize("pooling", ["area", "point"])
def test_local_global_mix_matches_hand_computation(pooling):
    m = FreeDAMatcher(bank(), models(), FreedaOptions(beta=0.8, pooling=pooling),
                      superpixels=SuperpixelParams(scale=100, sigma=0.5, min_size=5))
    m.prepare(["A", "B"])
    scores = m(halves_image())
    g = F.normalize(torch.tensor([0.3, -0.1, 0.9]), dim=0)[:2]  # raw cosine with the two text vectors
    left = 0.8 * torch.sigmoid(torch.tensor([1.0, 0.0])) + 0.2 * g
    right = 0.8 * torch.sigmoid(torch.tensor([0.0, 1.0])) + 0.2 * g
    torch.testing.assert_close(scores[:, 5, 2], left)
    torch.testing.assert_close(scores[:, 20, 25], right)
    assert scores.shape == (2, 28, 28)


def test_without_superpixels_is_the_upsampled_dense_map():
    m = FreeDAMatcher(bank(), models(with_clip=False), FreedaOptions(use_global=False, use_superpixels=False))
    m.prepare(["A", "B"])
    scores = m(halves_image())
    dense = torch.sigmoid(torch.tensor([[[1.0, 0.0]] * 2, [[0.0, 1.0]] * 2]))  # [C, 2, 2]
    expected = F.interpolate(dense[None], size=(28, 28), mode="bilinear", align_corners=True)[0]
    torch.testing.assert_close(scores, expected)


def test_region_without_grid_weight_keeps_dense_fallback():
    crop = halves_image(29)
    crop[:, 12:17, 5:9] = torch.tensor([255.0, 0, 0])[:, None, None]  # a small red square away from the samples
    m = FreeDAMatcher(bank(), models(with_clip=False), FreedaOptions(use_global=False, pooling="point"),
                      superpixels=SuperpixelParams(scale=1, sigma=0.1, min_size=1))
    m.prepare(["A", "B"])
    scores = m(crop)
    dense = F.interpolate(torch.sigmoid(torch.tensor([[[1.0, 0.0]] * 2, [[0.0, 1.0]] * 2]))[None],
                          size=(29, 29), mode="bilinear", align_corners=True)[0]
    torch.testing.assert_close(scores[:, 14, 7], dense[:, 14, 7])
    assert not torch.allclose(dense[:, 14, 7], scores[:, 2, 2])  # the left region itself is not dense


def test_retrieval_takes_k_nearest_keys_and_averages_raw_prototypes():
    # Keys: rows 0 and 1 near class A's text vector, row 2 near B's; row 3 is a part row (never used).
    keys = np.array([[1, 0.1, 0], [1, -0.1, 0], [0, 1, 0], [1, 0, 0]], np.float32)
    m = FreeDAMatcher(bank(keys), models(), FreedaOptions(k=3))
    m.prepare(["A", "B"])
    # A retrieves rows {3, 0, 1}; the part row is dropped; mean(e1, 2*e1) normalised = e1.
    torch.testing.assert_close(m.prototypes[0, 0], E1)
    # B retrieves row 2 first, then rows 0/1/3 are the next nearest: mean(e2, e1 or 2e1) direction.
    assert m.prototypes[1, 0, 1] > 0 and m.prototypes[1, 0, 0] > 0


def test_kmeans_aggregation_keeps_several_centroids():
    m = FreeDAMatcher(bank(), models(with_clip=False),
                      FreedaOptions(use_global=False, aggregation="kmeans", clusters=2))
    m.prepare(["A", "B"])
    assert m.prototypes.shape == (2, 2, 2)


def test_unknown_class_without_keys_is_a_clear_error():
    m = FreeDAMatcher(bank(), models(with_clip=False), FreedaOptions(use_global=False))
    with pytest.raises(ProtosegError, match="'zebra'"):
        m.prepare(["A", "zebra"])
