"""The overlay people look at: swatches equal the drawn colours, a unicode font sized to the image,
distinct and benchmark palettes, a legend that never runs off the picture, side-by-side pictures."""

import json
from itertools import combinations

import numpy as np
from PIL import Image, ImageFont

from protoseg import viz
from protoseg.datasets.names import ADE20K_CLASSES, CITYSCAPES_CLASSES, VOC20_CLASSES
from protoseg.datasets.variants import class_names


def blocks(h: int, w: int) -> np.ndarray:
    """Three vertical bands (classes 0, 1, 2) over the lower half; the upper half is class 0."""
    labels = np.zeros((h, w), np.int64)
    labels[h // 2:, w // 3: 2 * w // 3] = 1
    labels[h // 2:, 2 * w // 3:] = 2
    return labels


def test_swatches_are_the_colours_drawn_in_the_written_overlay(tmp_path):
    h, w = 300, 450
    image = np.full((h, w, 3), 128, np.uint8)
    labels = blocks(h, w)
    classes = ["sky", "grass", "road"]
    paths = viz.save_segmentation(tmp_path, "x", image, labels, classes)
    drawn = np.asarray(Image.open(paths["overlay"])).astype(int)  # the JPEG as written
    assert drawn.shape == (h, w, 3)  # the legend fits in the corner
    layout = viz.legend_layout(h, w, [0, 1, 2], classes)
    colours = viz.class_colours(classes).astype(int)
    width = viz.outline_width(h, w)
    # the outline band of each region: along the boundary between class 0 and the bands below it
    y_edge = h // 2 + width // 2
    xs = {1: w // 2, 2: 5 * w // 6}
    for k, cls in enumerate(classes):
        x0, y0, x1, y1 = layout.swatch_box(0, k)
        swatch = drawn[(y0 + y1) // 2, (x0 + x1) // 2]
        assert np.abs(swatch - colours[k]).max() <= 12, cls  # the swatch is the class colour
        if k:
            outline = drawn[y_edge, xs[k]]
            assert np.abs(outline - swatch).max() <= 16, (cls, outline, swatch)  # ... as drawn in the overlay
            interior = drawn[3 * h // 4, xs[k]]
            blend = 0.45 * 128 + 0.55 * colours[k]
            assert np.abs(interior - blend).max() <= 6  # regions are the colour blended over the image
    outline0 = drawn[h // 2 - 1 - width // 2, w // 2]
    x0, y0, x1, y1 = layout.swatch_box(0, 0)
    assert np.abs(outline0 - drawn[(y0 + y1) // 2, (x0 + x1) // 2]).max() <= 16


def test_the_font_is_scalable_unicode_and_sized_to_the_image():
    assert viz.font_file() is not None and viz.font_file().endswith("DejaVuSans.ttf")
    small, large = viz.font_size_for(224, 224), viz.font_size_for(1200, 1800)
    assert small == 11 and large == 40
    font = viz.legend_font(large)
    assert isinstance(font, ImageFont.FreeTypeFont) and font.size == 40
    missing = font.getmask("\U0010fffd")  # a private-use code point: DejaVu has no glyph
    for text in ("Ж", "Ω", "ü"):
        glyph = font.getmask(text)
        assert glyph.getbbox() is not None and bytes(glyph) != bytes(missing), text


def test_the_legend_never_runs_off_the_picture_with_60_long_unicode_names():
    h, w = 72, 96
    image = np.full((h, w, 3), 90, np.uint8)
    labels = (np.arange(h * w).reshape(h, w) * 60) // (h * w)  # 60 classes present
    classes = [f"Straßenbahn-Oberleitungsmast Nr. {i} — Ωμέγα Жёлтый ünïcödé näme {'x' * i}" for i in range(60)]
    picture = viz.overlay(image, labels, classes)
    layout = viz.legend_layout(h, w, list(range(60)), classes)
    assert picture.size == layout.size and picture.size[1] == h
    pixels = np.asarray(picture).astype(int)
    colours = viz.class_colours(classes).astype(int)
    listed = [i for rows in layout.rows for i in rows]
    assert listed == list(range(60))  # every class in the legend, once
    for c, (box, rows) in enumerate(zip(layout.boxes, layout.rows, strict=True)):
        x0, y0, x1, y1 = box
        assert 0 <= x0 < x1 < picture.size[0] and 0 <= y0 < y1 < picture.size[1]
        for k, i in enumerate(rows):
            sx0, sy0, sx1, sy1 = layout.swatch_box(c, k)
            assert sy1 < picture.size[1]
            assert (pixels[sy0:sy1 + 1, sx0:sx1 + 1] == colours[i]).all()
        # text stays inside its column: the padding at the column's right edge is untouched black
        assert (pixels[:, x1 - layout.pad + 2: x1 + 1] == 0).all()
        assert pixels[:, x0:x1].max() == 255  # names are written
    assert layout.text_width < picture.size[0]  # long names are shortened to a column width


def test_the_distinct_palette_and_its_prefix_stability():
    first = viz.palette(15).astype(int)
    distances = [np.linalg.norm(a - b) for a, b in combinations(first, 2)]
    assert min(distances) > 70  # no two of the first 15 colours are near each other
    many = viz.palette(300)
    assert len({tuple(c) for c in many}) == 300
    assert (viz.palette(5) == many[:5]).all() and (viz.palette(40) == many[:40]).all()


def test_benchmark_class_lists_get_their_own_palette(tmp_path):
    ade = viz.class_colours(list(ADE20K_CLASSES))
    assert ade.shape == (150, 3) and ade[0].tolist() == [120, 120, 120] and ade[149].tolist() == [92, 0, 255]
    assert viz.class_colours(list(CITYSCAPES_CLASSES))[0].tolist() == [128, 64, 128]  # road
    assert viz.class_colours([c.upper() for c in VOC20_CLASSES])[0].tolist() == [128, 0, 0]  # aeroplane
    renamed = [names[0] for names in class_names("voc", "sclip")][1:]  # SCLIP's VOC names, no background
    assert renamed != list(VOC20_CLASSES) and viz.class_colours(renamed)[14].tolist() == [192, 128, 128]
    assert (viz.class_colours(["cat", "sofa", "floor"]) == viz.palette(3)).all()
    # the label map's palette is the same
    labels = np.arange(19).repeat(4).reshape(4, 19)
    paths = viz.save_segmentation(tmp_path, "c", np.zeros((4, 19, 3), np.uint8), labels, list(CITYSCAPES_CLASSES))
    pal = np.array(Image.open(paths["labels"]).getpalette()[:19 * 3]).reshape(19, 3)
    assert pal[:2].tolist() == [[128, 64, 128], [244, 35, 232]]
    assert json.loads(paths["sidecar"].read_text())["classes"] == list(CITYSCAPES_CLASSES)


def test_side_by_side_writes_input_left_of_the_overlay(tmp_path):
    rng = np.random.default_rng(0)
    image = (rng.random((120, 160, 3)) * 255).astype(np.uint8)
    paths = viz.save_segmentation(tmp_path, "s", image, blocks(120, 160), ["a", "b", "c"], side_by_side=True)
    picture = Image.open(paths["overlay"])
    assert picture.size == (160 + 8 + 160, 120)
    left = np.asarray(picture).astype(int)[:, :160]
    assert np.abs(left - image).mean() < 8  # the input as it is (JPEG)
    assert viz.written_by_protoseg(paths["overlay"])
