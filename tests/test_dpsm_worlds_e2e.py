"""End to end on the recombined world: examples -> ``handcrafted-dpsm`` bank -> segmentation -> mIoU.

Support scenes show each object's parts in some look pairings and proportions; the held-out scenes
recombine them, and small parts of stuff classes look exactly like large parts of objects (dandelions /
yellow petals, road dashes / white petals, foam / white car paint, clouds / plaster walls). There,
``handcrafted-dpsm`` must beat whole-prototype matching and FreeDA's local matching on its own superpixel
proposals, and with whole-object proposals (the world's object masks) transport at a moderate capacity
(τ = 4) must beat the nearest-part vote that the look-alike parts fool (τ → ∞), whole-prototype matching,
and DPSM's own unit capacity (τ = 1), which the several looks per class starve.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from protoseg.config.segment import get_preset
from protoseg.images import load_image
from protoseg.offline.examples import bank_from_examples
from protoseg.segment import Segmenter
from protoseg.worlds import PARTS_WORLD_CLASSES, read_objects, write_examples


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("recombined")
    write_examples(root / "train", 16, seed=19, world="recombined", combos="support")  # every class
    write_examples(root / "test", 4, seed=22, world="recombined", combos="novel")
    return root, bank_from_examples(root / "train", "handcrafted-dpsm")


def miou(world, preset, oracle: bool = False) -> float:
    root, bank = world
    if oracle:
        preset = preset.with_options(proposals="given")
    segmenter = Segmenter(preset, bank)
    C = len(PARTS_WORLD_CLASSES)
    inter, union = np.zeros(C), np.zeros(C)
    for path in sorted((root / "test" / "images").glob("*.png")):
        gt = np.asarray(Image.open(root / "test" / "masks" / path.name)).astype(np.int64)
        given = read_objects(root / "test" / "objects" / path.name) if oracle else None
        pred = segmenter.segment(load_image(path), PARTS_WORLD_CLASSES, proposals=given).labels
        for c in range(C):
            inter[c] += ((pred == c) & (gt == c)).sum()
            union[c] += ((pred == c) | (gt == c)).sum()
    present = union > 0
    return float((inter[present] / union[present]).mean())


def test_transport_beats_whole_prototypes_and_freeda_on_superpixel_proposals(world):
    chosen = get_preset("handcrafted-dpsm")
    ot = miou(world, chosen)
    whole = miou(world, chosen.with_options(mode="image-to-image"))
    freeda = miou(world, get_preset("handcrafted"))
    assert ot > whole + 0.05 and ot > freeda + 0.05, (ot, whole, freeda)


def test_with_whole_object_proposals_moderate_capacity_beats_nearest_part_and_the_papers_capacity(world):
    exact = get_preset("handcrafted-dpsm").with_options(emd_solver="exact", supply="class")
    ot = miou(world, exact.with_options(capacity=4.0), oracle=True)
    nearest = miou(world, exact.with_options(mode="nearest-part"), oracle=True)
    whole = miou(world, exact.with_options(mode="image-to-image"), oracle=True)
    paper = miou(world, exact.with_options(capacity=1.0), oracle=True)
    assert ot > 0.9, ot
    assert ot > nearest + 0.05 and ot > whole + 0.05 and ot > paper + 0.05, (ot, nearest, whole, paper)
