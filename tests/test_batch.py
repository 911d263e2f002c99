"""Many images at once: `Segmenter.segment_many` (identical to `segment` per image) and `segment_files`
(outputs, sidecars, the up-to-date skip, progress through a callback)."""

import json

import numpy as np
import pytest
from conftest import assert_same_segmentation, make_small_world, world_scenes
from PIL import Image

from protoseg.batch import BatchSettings, check_request, segment_files
from protoseg.errors import ProtosegError
from protoseg.images import load_image
from protoseg.models import ModelSet
from protoseg.segment import Segmenter
from protoseg.worlds import PARTS_WORLD_CLASSES


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_small_world(tmp_path_factory.mktemp("batch"), size=96, test=3)




@pytest.mark.parametrize("options", [{}, {"background": True, "return_scores": True},
                                     {"background": "probability", "background_names": ["water"]}])
def test_segment_many_gives_what_segment_gives_each_image(world, options):
    seg = Segmenter.from_preset("handcrafted", bank=world / "bank", device="cpu")
    images = [load_image(p) for p in world_scenes(world)]
    many = list(seg.segment_many(iter(images), PARTS_WORLD_CLASSES, **options))
    assert len(many) == len(images)
    for image, result in zip(images, many, strict=True):
        assert_same_segmentation(result, seg.segment(image, PARTS_WORLD_CLASSES, **options))


def test_segment_many_with_given_proposals_per_image(world):
    seg = Segmenter.from_preset("handcrafted-dpsm", bank=world / "bank", device="cpu",
                                matcher_options={"proposals": "given"})
    images = [load_image(p) for p in world_scenes(world)[:2]]
    masks = []
    for image in images:
        halves = np.zeros((2, *image.shape[:2]), bool)
        halves[0, :, : image.shape[1] // 2] = True
        halves[1] = ~halves[0]
        masks.append(halves)
    many = list(seg.segment_many(images, PARTS_WORLD_CLASSES, proposals=masks))
    for image, given, result in zip(images, masks, many, strict=True):
        assert_same_segmentation(result, seg.segment(image, PARTS_WORLD_CLASSES, proposals=given))


def test_segment_many_wants_one_proposal_item_per_image(world):
    seg = Segmenter.from_preset("handcrafted", bank=world / "bank", device="cpu")
    images = [load_image(p) for p in world_scenes(world)[:2]]
    with pytest.raises(ProtosegError, match="fewer proposals than images"):
        list(seg.segment_many(images, PARTS_WORLD_CLASSES, proposals=[None]))
    with pytest.raises(ProtosegError, match="more proposals than images"):
        list(seg.segment_many(images[:1], PARTS_WORLD_CLASSES, proposals=[None, None]))


def test_segment_files_writes_reports_and_skips_what_is_up_to_date(world, tmp_path, monkeypatch):
    out = tmp_path / "out"
    settings = BatchSettings(classes=PARTS_WORLD_CLASSES, bank=world / "bank", out=out, preset="handcrafted",
                             device="cpu")
    seen = []
    summary = segment_files([world / "test" / "images"], settings, progress=lambda *event: seen.append(event))
    assert summary.written == world_scenes(world) and summary.skipped == [] and summary.generated == []
    assert seen == [("segmenting", k, 3) for k in range(4)]
    seg = Segmenter.from_preset("handcrafted", bank=world / "bank", device="cpu")
    for path in world_scenes(world):
        sidecar = json.loads((out / f"{path.stem}.json").read_text())
        assert sidecar["image"] == str(path) and sidecar["classes"] == PARTS_WORLD_CLASSES
        assert "fingerprint" in sidecar and (out / f"{path.stem}_overlay.jpg").is_file()
        expected = seg.segment(load_image(path), PARTS_WORLD_CLASSES).labels
        np.testing.assert_array_equal(np.asarray(Image.open(out / f"{path.stem}.png")), expected)

    def no_models(*args, **kwargs):
        raise AssertionError("nothing to segment: no model loads")

    monkeypatch.setattr(ModelSet, "for_preset", no_models)
    again = segment_files(world_scenes(world), settings, progress=lambda *event: pytest.fail("nothing to report"))
    assert again.written == [] and again.skipped == world_scenes(world)
    monkeypatch.undo()
    changed = segment_files(world_scenes(world)[:1], BatchSettings(**{**vars(settings), "background": True}))
    assert changed.written == world_scenes(world)[:1]


def test_check_request_refuses_before_a_model_loads(world, tmp_path):
    with pytest.raises(ProtosegError, match="unknown preset"):
        check_request(world_scenes(world), ["sky"], "nope", {}, world / "bank")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ProtosegError):
        check_request([tmp_path / "bad.png"], ["sky"], "handcrafted", {}, world / "bank")
    preset, bank = check_request(world_scenes(world), ["sky"], "handcrafted", {"background_threshold": 0.3},
                                 world / "bank")
    assert preset.background_threshold == 0.3 and bank.source == str(world / "bank")
