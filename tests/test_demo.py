"""The web demo's request, without a browser: outputs, legend shares, the segmenter cache, one-line errors."""

import json
import socket
from dataclasses import replace

import numpy as np
import pytest
from conftest import make_small_world
from PIL import Image
from skimage import data

from protoseg import cli
from protoseg.config.segment import PRESETS, get_preset
from protoseg.demo import SegmenterCache, legend_html, run_demo_request
from protoseg.errors import ProtosegError
from protoseg.viz import class_colours, read_label_classes
from protoseg.worlds import PARTS_WORLD_CLASSES

CLASSES = ", ".join(PARTS_WORLD_CLASSES)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = make_small_world(tmp_path_factory.mktemp("demo"), size=96)
    Image.fromarray(data.astronaut()).resize((96, 96)).save(root / "astronaut.jpg")
    return root


def scenes(world):
    return sorted(str(p) for p in (world / "test" / "images").glob("*.png"))


def test_a_request_writes_side_by_side_overlays_label_maps_and_shares(world, tmp_path):
    cache = SegmenterCache()
    seen = []
    result = run_demo_request(scenes(world), CLASSES, "handcrafted", world / "bank", tmp_path, cache, device="cpu",
                              progress=lambda fraction, what: seen.append((fraction, what)))
    assert [item.name for item in result.images] == ["scene_00000.png", "scene_00001.png"]
    for item, scene in zip(result.images, scenes(world), strict=True):
        picture = np.asarray(Image.open(item.overlay)).astype(int)
        assert picture.shape[0] == 96 and picture.shape[1] >= 96 + 8 + 96  # input | overlay (+ legend panel)
        assert np.abs(picture[:, :96] - np.asarray(Image.open(scene))).mean() < 8  # the input, as a JPEG
        labels = np.asarray(Image.open(item.labels))
        assert read_label_classes(item.labels) == PARTS_WORLD_CLASSES
        assert json.loads(item.sidecar.read_text())["preset"] == "handcrafted"
        shares = {e.name: e.share for e in item.legend}
        assert sorted(shares) == sorted(PARTS_WORLD_CLASSES)
        for i, name in enumerate(PARTS_WORLD_CLASSES):
            assert shares[name] == pytest.approx((labels == i).mean())
        assert [e.share for e in item.legend] == sorted(shares.values(), reverse=True)
        colours = class_colours(PARTS_WORLD_CLASSES)
        assert all(e.colour == tuple(colours[PARTS_WORLD_CLASSES.index(e.name)]) for e in item.legend)
    assert result.seconds > 0
    assert seen[0][0] == 0.0 and seen[-1] == (1.0, "done") and any("loading" in what for _, what in seen)
    assert any(what.startswith("segmenting scene_00001.png (2 of 2)") for _, what in seen)
    page = legend_html(result)
    assert page.count("protoseg-legend-row") == 2 * len(PARTS_WORLD_CLASSES) and "%" in page


def test_a_second_request_loads_nothing(world, tmp_path, monkeypatch):
    cache = SegmenterCache()
    first = run_demo_request(scenes(world)[:1], "sky, car", "handcrafted", world / "bank", tmp_path, cache,
                             device="cpu")
    seen = []
    second = run_demo_request(scenes(world)[1:], "sky, car, tree", "handcrafted", str(world / "bank"), tmp_path,
                              cache, device="cpu", progress=lambda f, what: seen.append(what))
    assert cache.loads == 1 and not any("loading" in what for what in seen)
    assert first.images[0].overlay.parent != second.images[0].overlay.parent  # each request its own folder
    mean = replace(get_preset("handcrafted", matcher_options={"aggregation": "mean"}), name="handcrafted-mean")
    monkeypatch.setitem(PRESETS, "handcrafted-mean", mean)
    run_demo_request(scenes(world)[:1], "sky", "handcrafted-mean", world / "bank", tmp_path, cache, device="cpu")
    assert cache.loads == 2  # another preset: another segmenter


@pytest.mark.parametrize(("images", "classes", "preset", "bank", "message"), [
    ("scenes", ",,", "handcrafted", "bank", "empty class name"),
    ("scenes", "   ", "handcrafted", "bank", "type the classes"),
    ("scenes", "car, car", "handcrafted", "bank", "duplicate"),
    ("scenes", "car, zebra", "handcrafted", "bank", "'zebra'"),
    ([], "car", "handcrafted", "bank", "drop one or more images"),
    ("scenes", "car", "nope", "bank", "unknown preset"),
    ("scenes", "car", "handcrafted", "", "give the folder of a prototype bank"),
    ("scenes", "car", "handcrafted", "train", "not a prototype bank"),
    (["astronaut.jpg"], "car", "handcrafted", "bank", "--allow-synthetic-backend"),
    (["missing.png"], "car", "handcrafted", "bank", "not found"),
])
def test_user_errors_are_the_cli_messages_and_write_nothing(world, tmp_path, images, classes, preset, bank,
                                                           message):
    paths = scenes(world) if images == "scenes" else [str(world / p) for p in images]
    with pytest.raises(ProtosegError, match=None) as caught:
        run_demo_request(paths, classes, preset, world / bank if bank else "", tmp_path / "out", SegmenterCache(),
                         device="cpu")
    assert message in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_the_allow_switch_lets_the_handcrafted_preset_segment_a_photo(world, tmp_path):
    result = run_demo_request([world / "astronaut.jpg"], "sky, car", "handcrafted", world / "bank", tmp_path,
                              SegmenterCache(), device="cpu", allow_synthetic=True)
    assert sum(e.share for e in result.images[0].legend) == pytest.approx(1.0)


def test_the_demo_command_checks_its_options_in_one_line(world, tmp_path, capsys):
    def one_line(*args):
        capsys.readouterr()
        code = cli.run([str(a) for a in args])
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
        return lines[0]

    assert "unknown preset" in one_line("demo", "--preset", "nope")
    assert "not a prototype bank" in one_line("demo", "--bank", tmp_path, "--preset", "handcrafted")
    assert "--port" in one_line("demo", "--port", "70000")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert f"127.0.0.1:{port}" in one_line("demo", "--bank", world / "bank", "--preset", "handcrafted", "--port",
                                               port)
