"""The hand-crafted presets are parts-world test backends: they refuse real photos unless asked."""

import numpy as np
import pytest
from conftest import make_small_world
from PIL import Image
from skimage import data

from protoseg.config.segment import get_preset
from protoseg.worlds import is_parts_world_image


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = make_small_world(tmp_path_factory.mktemp("synthetic"), size=96, test=1)
    Image.fromarray(data.astronaut()).resize((96, 96)).save(root / "astronaut.jpg")
    Image.open(root / "test/images/scene_00000.png").convert("RGB").save(root / "scene.jpg")  # re-saved
    return root


@pytest.fixture
def run(cli_run):
    return cli_run


def segment(world, image, out, *extra):
    return ("segment", image, "--classes", "sky, grass, car", "--bank", world / "bank", "--preset", "handcrafted",
            "--out", out, "--device", "cpu", *extra)


def test_parts_world_scenes_are_marked_and_photos_are_not(world):
    assert is_parts_world_image(world / "test/images/scene_00000.png")
    assert not is_parts_world_image(world / "test/masks/scene_00000.png")
    assert not is_parts_world_image(world / "astronaut.jpg")
    assert not is_parts_world_image(world / "scene.jpg")  # the mark is the file's, not the picture's
    assert get_preset("handcrafted").synthetic and not get_preset("freeda-b").synthetic
    assert not get_preset("handcrafted", features="facebook/dinov2-base").synthetic


def test_a_photo_with_the_handcrafted_preset_is_one_error_line_and_writes_nothing(world, tmp_path, run):
    for photo in (world / "astronaut.jpg", world / "scene.jpg"):
        code, stdout, err = run(*segment(world, photo, tmp_path / "out"))
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
        assert lines[0].startswith("error: preset 'handcrafted' uses the hand-crafted test backend")
        assert str(photo) in lines[0] and "--allow-synthetic-backend" in lines[0] and "--preset freeda-b" in lines[0]
        assert not (tmp_path / "out").exists()
    # a scene among photos: the first photo is named, with the count of the others
    code, _, err = run(*segment(world, world / "test/images/scene_00000.png", tmp_path / "out"),)
    assert code == 0, err
    code, _, err = run("segment", world / "astronaut.jpg", world / "scene.jpg", world / "test/images/scene_00000.png",
                       "--classes", "sky", "--bank", world / "bank", "--preset", "handcrafted", "--out",
                       tmp_path / "out2")
    assert code == 2 and "(and 1 more)" in err and not (tmp_path / "out2").exists()


def test_the_flag_lets_the_handcrafted_preset_segment_a_photo(world, tmp_path, run):
    code, stdout, err = run(*segment(world, world / "astronaut.jpg", tmp_path / "out", "--allow-synthetic-backend"))
    assert code == 0, err
    labels = np.asarray(Image.open(tmp_path / "out" / "astronaut.png"))
    assert labels.shape == (96, 96) and labels.max() < 3
