"""The window pipeline of `Segmenter.segment_many` and `segment_files`: results identical to one image at a time
for FreeDA and DPSM presets, any batch size and worker count; the writer thread; an interrupted run resumes."""

import time

import numpy as np
import pytest
from conftest import assert_one_error, assert_same_segmentation, make_small_world, world_scenes

import protoseg.batch
from protoseg.batch import BatchSettings, segment_files
from protoseg.images import load_image
from protoseg.segment import Segmenter
from protoseg.worlds import PARTS_WORLD_CLASSES


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_small_world(tmp_path_factory.mktemp("pipeline"), size=96, test=4)




def _same(a, b):
    assert_same_segmentation(a, b, with_scores=True)


NINE = {"crop": 256, "stride": 128}  # 9 windows per image (1 with the preset's 448 / 224)


@pytest.mark.parametrize("preset, grid, runs", [
    ("handcrafted", {}, [(0, 1), (0, 3), (1, 2), (2, 5)]),
    ("handcrafted", NINE, [(0, 1), (0, 4), (1, 2), (2, 5)]),
    ("handcrafted-dpsm", NINE, [(0, 3), (2, 5)]),
])
def test_segment_many_equals_segment_for_any_batch_size_and_worker_count(world, preset, grid, runs):
    seg = Segmenter.from_preset(preset, bank=world / "bank", device="cpu", **grid)
    images = [load_image(p) for p in world_scenes(world)]
    alone = [seg.segment(image, PARTS_WORLD_CLASSES, background=True, return_scores=True) for image in images]
    for workers, batch_size in runs:
        many = list(seg.segment_many(iter(images), PARTS_WORLD_CLASSES, background=True, return_scores=True,
                                     workers=workers, batch_size=batch_size, prefetch=2))
        assert len(many) == len(images)
        for a, b in zip(alone, many, strict=True):
            _same(a, b)


def test_given_proposals_through_worker_processes(world):
    seg = Segmenter.from_preset("handcrafted-dpsm", bank=world / "bank", device="cpu",
                                matcher_options={"proposals": "given"}, crop=256, stride=128)
    images = [load_image(p) for p in world_scenes(world)[:3]]
    masks = []
    for image in images:
        halves = np.zeros((2, *image.shape[:2]), bool)
        halves[0, : image.shape[0] // 3] = True
        halves[1] = ~halves[0]
        masks.append(halves)
    many = list(seg.segment_many(images, PARTS_WORLD_CLASSES, proposals=masks, return_scores=True, workers=2,
                                 batch_size=4))
    for image, given, result in zip(images, masks, many, strict=True):
        _same(result, seg.segment(image, PARTS_WORLD_CLASSES, proposals=given, return_scores=True))


def _outputs(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix in (".png", ".jpg")}


def test_segment_files_with_workers_writes_what_one_at_a_time_writes(world, tmp_path):
    settings = BatchSettings(classes=PARTS_WORLD_CLASSES, bank=world / "bank", preset="handcrafted-dpsm",
                             device="cpu", out=tmp_path / "serial", workers=0)
    segment_files(world_scenes(world), settings)
    seen = []
    summary = segment_files(world_scenes(world), BatchSettings(**{**settings.__dict__, "out": tmp_path / "piped",
                                                            "workers": 2}),
                            progress=lambda stage, done, total: seen.append((stage, done, total)))
    assert len(summary.written) == 4
    assert seen == [("segmenting", i, 4) for i in range(5)]
    assert _outputs(tmp_path / "serial") == _outputs(tmp_path / "piped")


def test_an_interrupted_run_keeps_what_it_segmented_and_resumes(world, tmp_path, monkeypatch):
    settings = BatchSettings(classes=PARTS_WORLD_CLASSES, bank=world / "bank", preset="handcrafted",
                             device="cpu", out=tmp_path / "out", workers=1)
    real = protoseg.batch.load_image
    calls = []

    def interrupted(path):  # the third image is never read: the run stops there
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(path)

    monkeypatch.setattr(protoseg.batch, "load_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        segment_files(world_scenes(world), settings)
    monkeypatch.setattr(protoseg.batch, "load_image", real)
    assert sorted(p.stem for p in (tmp_path / "out").glob("*.json")) == [p.stem for p in calls[:2]]
    summary = segment_files(world_scenes(world), settings)
    assert summary.skipped == calls[:2] and len(summary.written) == 2
    segment_files(world_scenes(world), BatchSettings(**{**settings.__dict__, "out": tmp_path / "whole"}))
    assert _outputs(tmp_path / "out") == _outputs(tmp_path / "whole")


def test_cli_workers_option(world, tmp_path, cli_process):
    result = cli_process("segment", *world_scenes(world)[:2], "--bank", world / "bank", "--preset", "handcrafted",
                         "--classes", ", ".join(PARTS_WORLD_CLASSES), "--out", tmp_path / "o", "--workers", "2",
                         "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "o").glob("*.png"))) == 2
    assert_one_error(cli_process("segment", world_scenes(world)[0], "--bank", world / "bank", "--preset", "handcrafted",
                                 "--classes", "car", "--workers", "-1"), "--workers")


def test_unreachable_ray_address_is_one_error_line_in_bounded_time(world, tmp_path, cli_process):
    pytest.importorskip("ray")
    started = time.perf_counter()
    result = cli_process("segment", world_scenes(world)[0], "--bank", world / "bank", "--preset", "handcrafted",
                         "--classes", ", ".join(PARTS_WORLD_CLASSES), "--out", tmp_path / "o", "--device", "cpu",
                         "--ray", "--ray-address", "127.0.0.1:9")  # the discard port: nothing listens
    assert_one_error(result, "127.0.0.1:9")
    assert time.perf_counter() - started < 20
