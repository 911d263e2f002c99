"""The Python API people reach for first: `Segmenter.from_pretrained` (a bank knows its preset, published names
resolve), `segment` / `segment_many` on arrays, PIL images and paths, and the CLI's `--preset` taken from the
bank."""

import json
import shutil
import sys

import numpy as np
import pytest
from conftest import assert_one_error, make_small_world, world_scenes
from PIL import Image

from protoseg import Segmenter
from protoseg.bank import BankManifest
from protoseg.bank_preset import check_preset_fits, preset_conflicts, preset_for_bank
from protoseg.bank_source import open_bank
from protoseg.config.segment import PRESETS
from protoseg.errors import ProtosegError
from protoseg.images import load_image
from protoseg.worlds import PARTS_WORLD_CLASSES

CLASSES = list(PARTS_WORLD_CLASSES)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_small_world(tmp_path_factory.mktemp("api"), size=96, test=2)


@pytest.fixture(scope="module")
def seg(world):
    return Segmenter.from_pretrained(world / "bank", device="cpu")


def scene(world, i=0):
    return world_scenes(world)[i]


def manifest(method="freeda", features="facebook/dinov2-base", text="openai/clip-vit-base-patch16", recorded=None,
             **settings):
    if recorded is not None:
        settings["preset"] = {"segment_preset": recorded}
    return BankManifest(method=method, feature_encoder=features, feature_dim=768, count=1, classes=["cat"],
                        text_encoder=text, key_dim=512 if text else None, settings=settings)


# ---------------------------------------------------------------------------------------------- a bank's preset
def test_from_pretrained_picks_the_preset_the_bank_calls_for(seg):
    assert seg.preset == PRESETS["handcrafted"]  # hand-crafted prototypes from labelled examples, no text keys


@pytest.mark.parametrize("bank, preset", [
    (manifest(recorded="freeda-b"), "freeda-b"),
    (manifest(), "freeda-b"),  # nothing recorded: the first preset in PRESETS order that fits
    (manifest(features="/models/dinov2-large", text="/models/clip-vit-large-patch14"), "freeda-l"),
    (manifest("freeda-import", "facebook/dinov2-large", "openai/clip-vit-large-patch14", recorded="freeda-l",
              source="FreeDA release"), "freeda-l"),
    # a recorded preset that contradicts the encoders is passed over
    (manifest("freeda-import", recorded="freeda-l"), "freeda-b"),
    (manifest("dpsm", text=None, recorded="dpsm"), "dpsm"),
    (manifest("dpsm", text=None), "dpsm"),
    (manifest("examples", "protoseg/handcrafted-v1", None), "handcrafted"),
    (manifest("examples", "protoseg/handcrafted-v1", None, recorded="handcrafted-dpsm"), "handcrafted-dpsm"),
    (manifest("dpsm", "protoseg/handcrafted-v1", None), "handcrafted-dpsm"),
    (manifest("freeda", "/cache/tiny/tiny-dinov2", "/cache/tiny/tiny-clip"), "freeda-tiny"),
    (manifest("dpsm", "/cache/tiny/tiny-dinov2", None, recorded="dpsm-tiny"), "dpsm-tiny"),
    # a merged bank: its parts record different presets, so the encoders decide
    (manifest("dpsm+examples", text=None, merged_from=[{"preset": {"segment_preset": "dpsm"}},
                                                       {"preset": {"segment_preset": "freeda-b"}}]), "dpsm"),
])
def test_preset_for_bank_rule(bank, preset):
    assert preset_for_bank(bank) == preset
    assert preset_conflicts(PRESETS[preset], bank) == []


def test_no_preset_for_unknown_encoders_is_one_clear_error():
    with pytest.raises(ProtosegError, match="no preset reads this bank .*'my/encoder'.*--preset NAME"):
        preset_for_bank(manifest(features="my/encoder"))


def test_a_contradicting_preset_is_named_with_the_bank():
    bank = manifest("dpsm", text=None)
    with pytest.raises(ProtosegError) as caught:
        check_preset_fits(PRESETS["freeda-l"], bank, "banks/parts")
    message = str(caught.value)
    for fragment in ("preset 'freeda-l' does not fit bank banks/parts", "'facebook/dinov2-large'",
                     "'facebook/dinov2-base'", "matcher 'freeda' does not read a 'dpsm' bank", "('dpsm')"):
        assert fragment in message, message
    text = manifest(text="openai/clip-vit-large-patch14")
    assert preset_conflicts(PRESETS["freeda-b"], text) == [
        "its text encoder is 'openai/clip-vit-base-patch16', the bank's keys come from 'openai/clip-vit-large-patch14'"]


def test_from_pretrained_overrides_apply_and_must_fit(world):
    seg = Segmenter.from_pretrained(world / "bank", device="cpu", background_threshold=0.3)
    assert seg.preset.name == "handcrafted" and seg.preset.background_threshold == 0.3
    with pytest.raises(ProtosegError, match="preset 'handcrafted' does not fit bank .*dinov2-base"):
        Segmenter.from_pretrained(world / "bank", device="cpu", features="facebook/dinov2-base")


def test_a_published_name_reads_the_cached_bank(world, tmp_path, monkeypatch):
    """``freeda-l`` resolves to ``$PROTOSEG_HOME/banks/freeda-l`` (already fetched here: nothing downloads)."""
    monkeypatch.setenv("PROTOSEG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PROTOSEG_FREEDA_EMBEDDINGS_URL", "http://127.0.0.1:9/never-asked")
    monkeypatch.chdir(tmp_path)
    cached = tmp_path / "home" / "banks" / "freeda-l"
    shutil.copytree(world / "bank", cached)
    bank = open_bank("freeda-l")
    assert bank.path == cached and bank.source == str(cached)
    seg = Segmenter.from_pretrained("freeda-l", device="cpu")
    assert seg.bank.path == cached and seg.preset.name == "handcrafted"
    (tmp_path / "freeda-l").mkdir()  # a folder of that name where the user is wins
    with pytest.raises(ProtosegError, match="not a prototype bank"):
        open_bank("freeda-l")


# ---------------------------------------------------------------------------------------------- images in
def test_array_pil_image_and_path_give_identical_labels(world, seg):
    path = scene(world)
    array = load_image(path)
    by_array = seg.segment(array, CLASSES)
    for image in (Image.open(path).convert("RGB"), Image.fromarray(array), path, str(path)):
        result = seg.segment(image, CLASSES)
        np.testing.assert_array_equal(result.labels, by_array.labels)
        assert result.classes == by_array.classes


@pytest.mark.parametrize("image, message", [
    (np.zeros((96, 96, 3), np.float32), "images must be uint8 [H, W, 3] RGB arrays; got a float32 array of shape "
                                        "(96, 96, 3); for values in [0, 1] convert with "
                                        "(x * 255).round().astype(np.uint8)"),
    (np.zeros((96, 96), np.uint8), "images must be uint8 [H, W, 3] RGB arrays; got a uint8 array of shape (96, 96); "
                                   "a grayscale image becomes RGB with np.repeat(x[..., None], 3, axis=2)"),
])
def test_a_float_image_or_a_2d_array_is_one_clear_error(seg, image, message):
    with pytest.raises(ProtosegError) as caught:
        seg.segment(image, CLASSES)
    assert str(caught.value) == message


def test_segment_many_takes_any_mix_and_refuses_one_image(world, seg):
    paths = [scene(world, 0), scene(world, 1)]
    mixed = [paths[0], Image.open(paths[1]).convert("RGB")]
    for result, path in zip(seg.segment_many(mixed, CLASSES), paths, strict=True):
        np.testing.assert_array_equal(result.labels, seg.segment(load_image(path), CLASSES).labels)
    for one in (paths[0], str(paths[0]), load_image(paths[0])):
        with pytest.raises(ProtosegError, match="segment_many takes an iterable of images; got one image"):
            next(seg.segment_many(one, CLASSES))


# ---------------------------------------------------------------------------------------------- the CLI
def test_cli_segment_takes_the_preset_from_the_bank(world, tmp_path, cli_process):
    out = tmp_path / "out"
    result = cli_process("segment", scene(world), "--classes", ", ".join(CLASSES), "--bank", world / "bank",
                         "--out", out)
    assert result.returncode == 0, result.stderr
    sidecar = json.loads((out / f"{scene(world).stem}.json").read_text())
    assert sidecar["preset"] == "handcrafted"


@pytest.mark.parametrize("preset, fragments", [
    ("freeda-b", ["preset 'freeda-b' does not fit bank", "'facebook/dinov2-base'", "'protoseg/handcrafted-v1'",
                  "the bank's own ('handcrafted')"]),
    ("dpsm", ["preset 'dpsm' does not fit bank", "'facebook/dinov2-base'"]),
])
def test_cli_segment_with_a_preset_that_contradicts_the_bank_is_one_error_line(world, tmp_path, cli_process,
                                                                                 preset, fragments):
    result = cli_process("segment", scene(world), "--classes", ", ".join(CLASSES), "--bank", world / "bank",
                         "--preset", preset, "--out", tmp_path / "out")
    assert_one_error(result, *fragments)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_demo_without_gradio_says_how_to_install_it(cli_process, monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` raises ModuleNotFoundError
    assert_one_error(cli_process("demo", "--port", "1"), 'pip install "protoseg[demo]"')
