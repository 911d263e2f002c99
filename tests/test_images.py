import numpy as np
import pytest
from PIL import Image

from protoseg.classes import parse_class_list, validate_classes
from protoseg.errors import ProtosegError
from protoseg.images import as_rgb_array, load_image


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "LA", "CMYK", "1", "F"])
def test_any_mode_becomes_uint8_rgb(tmp_path, mode):
    rgb = (np.random.default_rng(0).random((20, 30, 3)) * 255).astype(np.uint8)
    img = Image.fromarray(rgb).convert(mode) if mode not in ("I;16", "F") else None
    if mode == "I;16":
        img = Image.fromarray((np.arange(600).reshape(20, 30) * 100).astype(np.uint16))
    if mode == "F":
        img = Image.fromarray(np.linspace(-1, 1, 600, dtype=np.float32).reshape(20, 30))
    path = tmp_path / ("x.tif" if mode in ("F", "CMYK") else "x.png")
    img.save(path)
    out = load_image(path)
    assert out.dtype == np.uint8 and out.shape == (20, 30, 3)


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(tmp_path / "w.png")
    assert load_image(tmp_path / "w.png").min() == 255


def test_transparent_pixels_become_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    assert (load_image(tmp_path / "t.png") == 255).all()


def test_bad_files_raise_one_clear_error(tmp_path):
    with pytest.raises(ProtosegError, match="not found"):
        load_image(tmp_path / "missing.jpg")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(ProtosegError, match="cannot read"):
        load_image(tmp_path / "text.jpg")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "ok.jpg")
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(ProtosegError, match="cannot read"):
        load_image(tmp_path / "cut.jpg")
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(ProtosegError, match="limit"):
        load_image(tmp_path / "big.png", max_pixels=5000)


def test_class_lists():
    assert parse_class_list(" road, car,sky ") == ["road", "car", "sky"]
    assert validate_classes(["bed ", "bed"]) == ["bed ", "bed"]  # names stay byte-identical (ADE's 'bed ')
    for bad, msg in [("", "empty class name"), ("car, , sky", "empty class name"), ("car, car", "duplicate"),
                     ("background, car", "background")]:
        with pytest.raises(ProtosegError, match=msg):
            parse_class_list(bad)
    with pytest.raises(ProtosegError, match="no classes"):
        validate_classes([])


def test_as_rgb_array_takes_uint8_rgb_arrays_rgb_pil_images_and_paths(tmp_path):
    rgb = (np.random.default_rng(1).random((12, 20, 3)) * 255).astype(np.uint8)
    assert as_rgb_array(rgb) is rgb
    np.testing.assert_array_equal(as_rgb_array(Image.fromarray(rgb)), rgb)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    for path in (tmp_path / "x.png", str(tmp_path / "x.png")):
        np.testing.assert_array_equal(as_rgb_array(path), rgb)


@pytest.mark.parametrize("image, fragments", [
    (np.zeros((12, 20, 3), np.float32), ["float32 array of shape (12, 20, 3)", "(x * 255).round().astype(np.uint8)"]),
    (np.zeros((12, 20), np.uint8), ["uint8 array of shape (12, 20)", "np.repeat(x[..., None], 3, axis=2)"]),
    (np.zeros((12, 20, 4), np.uint8), ["shape (12, 20, 4)", "alpha"]),
    (np.zeros((3, 12, 20), np.uint8), ["shape (3, 12, 20)", "x.transpose(1, 2, 0)"]),
    (np.zeros((12, 20, 3), np.uint16), ["uint16 array", ".astype(np.uint8)"]),
    (np.zeros((0, 20, 3), np.uint8), ["empty"]),
    ([[0, 0, 0]], ["got list"]),
    (Image.new("RGBA", (4, 4)), ["mode 'RGBA'", "image.convert('RGB')"]),
    (Image.new("L", (4, 4)), ["mode 'L'", "image.convert('RGB')"]),
])
def test_as_rgb_array_names_what_it_got_and_converts_nothing(image, fragments):
    with pytest.raises(ProtosegError) as caught:
        as_rgb_array(image)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
