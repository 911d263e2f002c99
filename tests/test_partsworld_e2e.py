"""End to end on the parts world: examples -> bank -> sliding-window segmentation -> mIoU.

The bank is built from generated, labelled support scenes with the hand-crafted feature backend and
held-out scenes are segmented with the ``handcrafted`` preset (FreeDA's local matching). A broken
region-pooling step (features pooled from the wrong place) must make the score collapse.
"""

import numpy as np
import pytest
import torch
from PIL import Image

import protoseg.match.freeda as freeda_module
from protoseg.config.segment import get_preset
from protoseg.images import load_image
from protoseg.offline.examples import bank_from_examples
from protoseg.segment import Segmenter
from protoseg.worlds import PARTS_WORLD_CLASSES, write_examples


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    write_examples(root / "train", 16, seed=11)
    write_examples(root / "test", 6, seed=12)
    bank = bank_from_examples(root / "train", "handcrafted")
    return root, bank


def miou(segmenter, root) -> float:
    inter = np.zeros(len(PARTS_WORLD_CLASSES))
    union = np.zeros(len(PARTS_WORLD_CLASSES))
    for path in sorted((root / "test" / "images").glob("*.png")):
        gt = np.asarray(Image.open(root / "test" / "masks" / path.name)).astype(np.int64)
        pred = segmenter.segment(load_image(path), PARTS_WORLD_CLASSES).labels
        for c in range(len(PARTS_WORLD_CLASSES)):
            inter[c] += ((pred == c) & (gt == c)).sum()
            union[c] += ((pred == c) | (gt == c)).sum()
    present = union > 0
    return float((inter[present] / union[present]).mean())


def test_handcrafted_freeda_segments_the_parts_world(world):
    root, bank = world
    score = miou(Segmenter(get_preset("handcrafted"), bank), root)
    assert score > 0.65, score


def test_broken_region_pooling_is_caught(world, monkeypatch):
    root, bank = world
    real = freeda_module.pool_features

    def pooled_from_mirrored_grid(features, weights):
        return real(torch.flip(features, dims=(-1, -2)), weights)

    monkeypatch.setattr(freeda_module, "pool_features", pooled_from_mirrored_grid)
    score = miou(Segmenter(get_preset("handcrafted"), bank), root)
    assert score < 0.5, score
