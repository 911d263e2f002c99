"""Evaluation plots: PNG files of the expected size, written atomically; top confusions on a hand-made matrix."""

import numpy as np
import pytest
from PIL import Image

from protoseg.datasets.names import ADE20K_CLASSES, CITYSCAPES_CLASSES
from protoseg.errors import ProtosegError
from protoseg.eval.plots import (
    DPI,
    Confusion,
    chart_size,
    confusion_heatmap,
    expected_chart_pixels,
    per_class_iou_chart,
    row_normalised,
    top_confusions,
)

CLASSES = ["road", "car", "truck", "sky"]
# rows = ground truth, columns = prediction
MATRIX = np.array([
    [900, 50, 0, 50],    # road: 1000 px, 5 % -> car, 5 % -> sky
    [10, 60, 30, 0],     # car: 100 px, 30 % -> truck, 10 % -> road
    [0, 200, 800, 0],    # truck: 1000 px, 20 % -> car
    [0, 0, 0, 0],        # sky: no ground truth
], dtype=np.int64)


def _png(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_top_confusions_by_share_of_the_ground_truth_class():
    tops = top_confusions(MATRIX, CLASSES, 10)
    assert [(c.truth, c.predicted, c.pixels) for c in tops] == [
        ("car", "truck", 30), ("truck", "car", 200), ("car", "road", 10), ("road", "car", 50), ("road", "sky", 50),
    ]
    assert [c.fraction for c in tops] == pytest.approx([0.30, 0.20, 0.10, 0.05, 0.05])
    assert tops[0] == Confusion("car", "truck", 1, 2, 30, pytest.approx(0.3))
    assert tops[0].describe() == "car → truck 30.0 %"
    assert top_confusions(MATRIX, CLASSES, 2) == tops[:2]
    assert top_confusions(MATRIX, CLASSES, 0) == []


def test_top_confusions_by_pixels_and_never_the_diagonal():
    tops = top_confusions(MATRIX, CLASSES, 3, by="pixels")
    assert [(c.truth, c.predicted, c.pixels) for c in tops] == [("truck", "car", 200), ("road", "car", 50),
                                                               ("road", "sky", 50)]
    eye = np.diag([5, 6, 7, 8]).astype(np.int64)
    assert top_confusions(eye, CLASSES, 5) == []


def test_row_normalised_leaves_empty_rows_undefined():
    norm = row_normalised(MATRIX)
    assert norm[0].tolist() == pytest.approx([0.9, 0.05, 0.0, 0.05])
    assert np.isnan(norm[3]).all()


@pytest.mark.parametrize("bad, message", [
    (np.zeros((3, 4), np.int64), "square"),
    (np.zeros((3, 3), np.int64), "4 names"),
    (np.zeros((4, 4), np.float32), "integers"),
    (-np.ones((4, 4), np.int64), "negative"),
])
def test_bad_confusion_matrices(bad, message):
    with pytest.raises(ProtosegError, match=message):
        top_confusions(bad, CLASSES, 3)
    with pytest.raises(ProtosegError, match="fraction' or 'pixels"):
        top_confusions(MATRIX, CLASSES, 3, by="area")


@pytest.mark.parametrize("classes", [CITYSCAPES_CLASSES, ADE20K_CLASSES])
def test_per_class_chart_size_grows_with_the_classes(tmp_path, classes):
    rng = np.random.default_rng(0)
    iou = [float(v) for v in rng.uniform(0, 90, len(classes))]
    iou[3] = None  # a class absent from ground truth and prediction
    out = per_class_iou_chart(classes, iou, tmp_path / "iou.png", title="run")
    assert out == tmp_path / "iou.png"
    assert _png(out) == expected_chart_pixels(len(classes))
    w, h = chart_size(len(classes))
    assert expected_chart_pixels(len(classes)) == (round(w * DPI), round(h * DPI))
    if len(classes) == 150:
        assert h >= 0.2 * 150  # ~20 px per bar at 100 dpi: 150 labels stay legible
    assert [p.name for p in tmp_path.iterdir()] == ["iou.png"]  # no temporary file left


def test_per_class_chart_rejects_bad_input(tmp_path):
    with pytest.raises(ProtosegError, match="2 class names but 3"):
        per_class_iou_chart(["a", "b"], [1.0, 2.0, 3.0], tmp_path / "x.png")
    with pytest.raises(ProtosegError, match="percent"):
        per_class_iou_chart(["a", "b"], [0.5, 120.0], tmp_path / "x.png")
    with pytest.raises(ProtosegError, match="no classes"):
        per_class_iou_chart([], [], tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_confusion_heatmap_small_and_many_classes(tmp_path):
    small = confusion_heatmap(MATRIX, CLASSES, tmp_path / "small.png", top=3, title="hand-made")
    w, h = _png(small)
    assert w > h > 400
    rng = np.random.default_rng(1)
    C = len(ADE20K_CLASSES)
    big = rng.poisson(1.0, (C, C)).astype(np.int64) + np.diag(rng.integers(500, 2000, C))
    big[10, 20] += 5000
    path = confusion_heatmap(big, ADE20K_CLASSES, tmp_path / "ade.png", top=10)
    w_big, h_big = _png(path)
    # Only the classes of the top confusions are drawn, so the figure stays far below one row per class.
    assert h_big < 0.2 * C * DPI and w_big > h_big
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ade.png", "small.png"]


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(ProtosegError):
        confusion_heatmap(MATRIX, CLASSES[:3], tmp_path / "bad.png")
    assert list(tmp_path.iterdir()) == []
