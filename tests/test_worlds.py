"""The procedural worlds: determinism, object masks (oracle proposals), recombined splits, generation on demand."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from protoseg.atomic import GENERATED_MARKER
from protoseg.datasets import open_dataset
from protoseg.datasets.examples import open_parts_world
from protoseg.worlds import (
    PARTS_WORLD_CLASSES,
    canvas,
    read_objects,
    recombined,
    render_recombined_scene,
    render_scene,
    render_scene_objects,
    write_examples,
)
from protoseg.worlds import cache as world_cache
from protoseg.worlds.cache import WORLD_SPLITS, ensure_parts_world_split


def _check_objects(labels: np.ndarray, objects: np.ndarray) -> None:
    ids = np.unique(objects)
    assert ids.tolist() == list(range(len(ids)))  # dense ids 0..K-1
    for k in ids:
        assert len(np.unique(labels[objects == k])) == 1  # an object (or stuff region) has one class


@pytest.mark.parametrize("combos", ["support", "novel"])
def test_recombined_scenes_are_deterministic_with_consistent_object_masks(combos):
    a = render_recombined_scene(np.random.default_rng([3, 1]), 224, combos)
    b = render_recombined_scene(np.random.default_rng([3, 1]), 224, combos)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x, y)
    image, labels, objects = a
    assert image.shape == (224, 224, 3) and image.dtype == np.uint8
    assert set(np.unique(labels)) <= set(range(len(PARTS_WORLD_CLASSES)))
    _check_objects(labels, objects)
    things = {canvas.CAR, canvas.TREE, canvas.HOUSE, canvas.FLOWER}
    assert len(set(np.unique(labels)) & things) >= 2  # every scene has two or three objects


def test_recombined_held_out_scenes_recombine_parts():
    # the look pairings of held-out scenes never occur in support scenes
    for looks in (recombined._HOUSE_LOOKS, recombined._TREE_LOOKS, recombined._FLOWER_LOOKS):
        assert not set(looks["support"]) & set(looks["novel"])
    support = render_recombined_scene(np.random.default_rng([0, 0]), 224, "support")[0]
    novel = render_recombined_scene(np.random.default_rng([0, 0]), 224, "novel")[0]
    assert not np.array_equal(support, novel)
    with pytest.raises(ValueError, match="combos"):
        render_recombined_scene(np.random.default_rng(0), 64, "mixed")


def test_parts_world_object_masks_leave_its_scenes_unchanged():
    for seed in range(4):
        image, labels = render_scene(np.random.default_rng([seed, 2]), 160)
        image2, labels2, objects = render_scene_objects(np.random.default_rng([seed, 2]), 160)
        assert np.array_equal(image, image2) and np.array_equal(labels, labels2)
        _check_objects(labels, objects)


@pytest.mark.parametrize("world", ["parts", "recombined"])
def test_written_examples_carry_object_masks(tmp_path, world):
    write_examples(tmp_path / "a", 2, seed=4, size=160, world=world)
    write_examples(tmp_path / "b", 2, seed=4, size=160, world=world)
    for stem in ("scene_00000", "scene_00001"):
        for sub in ("images", "masks", "objects"):
            a, b = (tmp_path / x / sub / f"{stem}.png" for x in ("a", "b"))
            assert a.read_bytes() == b.read_bytes()
        masks = read_objects(tmp_path / "a" / "objects" / f"{stem}.png")
        assert masks.dtype == bool and masks.shape[1:] == (160, 160)
        assert (masks.sum(0) == 1).all()  # the oracle proposals partition the image
        labels = np.asarray(Image.open(tmp_path / "a" / "masks" / f"{stem}.png"))
        _check_objects(labels, masks.argmax(0))
    with pytest.raises(ValueError, match="world"):
        write_examples(tmp_path / "c", 1, world="moon")


def test_world_splits_have_their_own_seeds_and_held_out_scenes_recombine():
    for world, splits in WORLD_SPLITS.items():
        seeds = [s["seed"] for s in splits.values()]
        assert len(set(seeds)) == len(seeds), world
    assert WORLD_SPLITS["recombined"]["train"]["combos"] == "support"
    assert WORLD_SPLITS["recombined"]["dev"]["combos"] == WORLD_SPLITS["recombined"]["test"]["combos"] == "novel"


def test_recombined_world_split_is_generated_on_demand_and_older_splits_are_renewed(tmp_path, monkeypatch):
    monkeypatch.setitem(WORLD_SPLITS["recombined"], "test", {"count": 2, "seed": 11, "combos": "novel"})
    calls = []
    original = world_cache.write_examples

    def small(root, count, seed, size=448, world="parts", combos="support"):
        calls.append((count, seed, world, combos))
        return original(root, count, seed, size=96, world=world, combos=combos)

    monkeypatch.setattr(world_cache, "write_examples", small)
    data = open_dataset("recombined-world", tmp_path)
    assert data.name == "recombined-world" and len(data) == 2 and data.classes == tuple(PARTS_WORLD_CLASSES)
    assert calls == [(2, 11, "recombined", "novel")]
    open_parts_world(tmp_path, "test", "recombined")
    assert len(calls) == 1  # complete: reused
    # in protoseg's cache (renew), a split generated in an older format (no "format" in its record) is renewed
    old = tmp_path / "old"
    ensure_parts_world_split(old, "test", 1, 5)
    marker = old / "test" / GENERATED_MARKER
    record = json.loads(marker.read_text())
    del record["spec"]["format"]
    marker.write_text(json.dumps(record))
    (old / "test" / "objects" / "scene_00000.png").unlink()
    ensure_parts_world_split(old, "test", 1, 5)  # a folder the user named: read as it is
    assert len(calls) == 2 and not (old / "test" / "objects" / "scene_00000.png").exists()
    ensure_parts_world_split(old, "test", 1, 5, renew=True)
    assert calls[-1] == (1, 5, "parts", "support") and len(calls) == 3
    assert (old / "test" / "objects" / "scene_00000.png").is_file()
    # a split someone else made is never regenerated, not even in the cache
    mine = tmp_path / "mine" / "test"
    shutil.copytree(old / "test", mine)
    (mine / GENERATED_MARKER).unlink()
    with pytest.raises(Exception, match="not generated by protoseg"):
        ensure_parts_world_split(mine.parent, "test", 1, 6, renew=True)
    ensure_parts_world_split(mine.parent, "test", 1, 6)
    assert len(calls) == 3 and not (mine / GENERATED_MARKER).exists()
    with pytest.raises(Exception, match="split must be one of"):
        open_parts_world(tmp_path, "val", "recombined")
    with pytest.raises(Exception, match="unknown world"):
        open_parts_world(tmp_path, "test", "moon")


def test_cli_writes_the_recombined_world(tmp_path, capsys):
    from protoseg import cli

    assert cli.run(["partsworld", str(tmp_path / "w"), "--world", "recombined", "--train", "1", "--test", "1",
                    "--size", "96", "--seed", "5"]) == 0
    assert "recombined-world" in capsys.readouterr().out
    for split, seed, combos in (("train", 5, "support"), ("test", 6, "novel")):
        image = np.asarray(Image.open(tmp_path / "w" / split / "images" / "scene_00000.png"))
        expected = render_recombined_scene(np.random.default_rng([seed, 0]), 96, combos)[0]
        assert np.array_equal(image, expected)
        assert (tmp_path / "w" / split / "objects" / "scene_00000.png").is_file()
    assert cli.run(["partsworld", str(tmp_path / "x"), "--world", "moon"]) != 0
    assert "--world must be one of parts, recombined" in capsys.readouterr().err
