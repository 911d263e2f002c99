"""Datasets in MMSeg layout: exact class lists, every label rule, layout errors, COCO-Object conversion."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from protoseg.datasets import dataset_classes, open_dataset
from protoseg.datasets import names as N
from protoseg.datasets.coco_object import convert_coco_object, raw_to_object_lut
from protoseg.datasets.mmseg import MMSEG_DATASETS
from protoseg.errors import ProtosegError
from protoseg.eval.benchmarks import DATASET_PRESETS

# sha256 of json.dumps(list(CLASSES)) for the mmsegmentation 0.27.0 wheel's tuples.
MMSEG_027_SHA = {
    "VOC_CLASSES": "fd55ca4d47c05e3b8bbf653f614a6ab9caebf68ce72108efcc23101926f06e27",
    "CONTEXT60_CLASSES": "788b24f49965d55c1a678f3e5aa1af79dd51fa52392493fb6072fb027f7b9ea1",
    "COCO_STUFF_CLASSES": "0d1caff40f22c2f8de07c9d3016f2521dea096ae8b51889a12d3511bc33a18e7",
    "CITYSCAPES_CLASSES": "43e2f291fae08a61a7a5e279bf9f8b7f3274578f6b6820cf560ac25589dac9eb",
    "ADE20K_CLASSES": "848bc88a8c2227b2c2cb61eb2ed6ca109de31775c80c21697765c020a86fb224",
}


@pytest.mark.parametrize("attr", sorted(MMSEG_027_SHA))
def test_class_lists_are_byte_identical_to_mmseg_027(attr):
    names = list(getattr(N, attr))
    assert hashlib.sha256(json.dumps(names).encode()).hexdigest() == MMSEG_027_SHA[attr]


def test_class_list_details():
    assert len(N.VOC20_CLASSES) == 20 and "background" not in N.VOC20_CLASSES
    assert (
        N.VOC_CLASSES[0] == "background" and "diningtable" in N.VOC_CLASSES and "tvmonitor" in N.VOC_CLASSES
    )
    assert len(N.CONTEXT59_CLASSES) == 59 and N.CONTEXT60_CLASSES[0] == "background"
    assert "bedclothes" in N.CONTEXT59_CLASSES
    assert len(N.COCO_STUFF_CLASSES) == 171 and N.COCO_STUFF_CLASSES[79] == "toothbrush"
    assert {"building-other", "desk-stuff", "sky-other", "playingfield", "waterdrops"} <= set(
        N.COCO_STUFF_CLASSES
    )
    assert len(N.COCO_OBJECT_CLASSES) == 81 and N.COCO_OBJECT_CLASSES[:2] == ("background", "person")
    assert {"tv", "couch", "potted plant", "hair drier"} <= set(N.COCO_OBJECT_CLASSES)
    assert len(N.ADE20K_CLASSES) == 150 and N.ADE20K_CLASSES[7] == "bed "
    assert {"windowpane", "earth", "plaything", "ashcan", "crt screen", "television receiver"} <= set(
        N.ADE20K_CLASSES
    )
    assert len(N.CITYSCAPES_CLASSES) == 19
    for name in MMSEG_DATASETS:
        assert dataset_classes(name) == MMSEG_DATASETS[name].classes
        assert DATASET_PRESETS[name].background == (MMSEG_DATASETS[name].classes[0] == "background")


# ---------------------------------------------------------------------------------------------- fixtures
RAW = np.array([[0, 1, 2, 255], [3, 0, 20, 5]], dtype=np.uint8)  # raw stored label values


def _img(path: Path, h=2, w=4):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(path)


def _label(path: Path, arr=RAW, palette=False):
    """Save ``arr`` as a grayscale PNG, or as a palette PNG (VOC style: indices + a colour table)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr)
    if palette:
        im = Image.new("P", (arr.shape[1], arr.shape[0]))
        im.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
        im.putdata(arr.reshape(-1).tolist())
        assert im.mode == "P"
    im.save(path)


def make_voc(root: Path, context=False):
    base = root / "VOCdevkit" / ("VOC2010" if context else "VOC2012")
    ann = "SegmentationClassContext" if context else "SegmentationClass"
    split = "ImageSets/SegmentationContext/val.txt" if context else "ImageSets/Segmentation/val.txt"
    for stem in ("2007_000033", "2007_000042"):
        _img(base / "JPEGImages" / f"{stem}.jpg")
        _label(base / ann / f"{stem}.png", palette=not context)
    _img(base / "JPEGImages" / "2007_999999.jpg")  # not in the split: must not be listed
    (base / split).parent.mkdir(parents=True, exist_ok=True)
    (base / split).write_text("2007_000033\n2007_000042\n")
    return root


def make_flat(root: Path, img_dir, ann_dir, img_suffix, seg_suffix, stems, sub=""):
    for stem in stems:
        _img(root / img_dir / sub / f"{stem}{img_suffix}")
        _label(root / ann_dir / sub / f"{stem}{seg_suffix}")
    return root


# ---------------------------------------------------------------------------------------------- label rules
REDUCED = np.array([[255, 0, 1, 255], [2, 255, 19, 4]])  # reduce_zero_label applied to RAW


def test_voc20_reduces_zero_label_and_keeps_ignore(tmp_path):
    ds = open_dataset("voc20", make_voc(tmp_path))  # parent folder of VOCdevkit accepted
    assert ds.stems == ["2007_000033", "2007_000042"] and not ds.has_background
    image, gt = ds.load(0)
    assert image.shape == (2, 4, 3) and image.dtype == np.uint8
    assert np.array_equal(gt, REDUCED)  # palette indices read, 0 -> 255, v -> v-1, 255 stays


def test_voc_with_background_keeps_raw_labels(tmp_path):
    ds = open_dataset("voc", make_voc(tmp_path) / "VOCdevkit" / "VOC2012")
    assert ds.has_background and ds.query_classes == list(N.VOC_CLASSES[1:])
    assert np.array_equal(ds.load_label(1), RAW.astype(np.int64))


def test_context59_and_60(tmp_path):
    root = make_voc(tmp_path, context=True)
    assert np.array_equal(open_dataset("context59", root).load_label(0), REDUCED)
    c60 = open_dataset("context60", root / "VOCdevkit")
    assert np.array_equal(c60.load_label(0), RAW) and c60.num_classes == 60


def test_ade20k_reduce_zero_label(tmp_path):
    make_flat(
        tmp_path / "ADEChallengeData2016",
        "images/validation",
        "annotations/validation",
        ".jpg",
        ".png",
        ["ADE_val_00000002", "ADE_val_00000001"],
    )
    ds = open_dataset("ade20k", tmp_path)
    assert ds.stems == ["ADE_val_00000001", "ADE_val_00000002"]  # sorted as MMSeg scans
    assert np.array_equal(ds.load_label(0), REDUCED)


def test_coco_stuff_and_cityscapes_keep_labels_255_ignored(tmp_path):
    stuff = make_flat(
        tmp_path / "stuff",
        "images/val2017",
        "annotations/val2017",
        ".jpg",
        "_labelTrainIds.png",
        ["000000000139"],
    )
    ds = open_dataset("coco-stuff", stuff)
    assert np.array_equal(ds.load_label(0), RAW) and not ds.has_background
    city = tmp_path / "city"
    make_flat(
        city,
        "leftImg8bit/val",
        "gtFine/val",
        "_leftImg8bit.png",
        "_gtFine_labelTrainIds.png",
        ["frankfurt_000000_000294"],
        sub="frankfurt",
    )
    ds = open_dataset("cityscapes", city)
    assert ds.stems == ["frankfurt_000000_000294_leftImg8bit"]
    assert ds.samples[0].label.name == "frankfurt_000000_000294_gtFine_labelTrainIds.png"
    assert np.array_equal(ds.load_label(0), RAW)


def test_coco_object_conversion_hand_checked(tmp_path):
    # raw COCO-Stuff values: 0 person, 2 car, 12 stop sign (id 11 is unused), 13 parking meter,
    # 89 toothbrush (last thing), 91 banner (first stuff), 181 wood (last stuff), 255 unlabelled
    raw = np.array([[0, 2, 12, 89], [91, 181, 255, 13]], dtype=np.uint8)
    expected = np.array([[1, 3, 12, 80], [0, 0, 0, 13]], dtype=np.uint8)
    lut = raw_to_object_lut()
    assert N.COCO_OBJECT_CLASSES[lut[0]] == "person" and N.COCO_OBJECT_CLASSES[lut[2]] == "car"
    assert N.COCO_OBJECT_CLASSES[lut[12]] == "stop sign" and N.COCO_OBJECT_CLASSES[lut[89]] == "toothbrush"
    assert N.COCO_OBJECT_CLASSES[lut[13]] == "parking meter"
    assert np.array_equal(lut[raw], expected)
    assert lut[11] == 11 and lut[90] == 90  # unused ids are left as they are, like the reference converter

    root = tmp_path / "coco"
    _img(root / "images/val2017/000000000139.jpg")
    _label(root / "annotations/val2017/000000000139.png", raw)
    with pytest.raises(ProtosegError, match="convert-coco-object"):
        open_dataset("coco-object", root)
    assert convert_coco_object(root) == 1
    assert convert_coco_object(root) == 0  # resumable: existing outputs are kept
    ds = open_dataset("coco-object", root)
    assert ds.has_background and np.array_equal(ds.load_label(0), expected)
    assert not (ds.load_label(0) == 255).any()  # nothing is ignored in COCO-Object


def test_coco_object_from_train_ids_matches_raw_route(tmp_path):
    rng = np.random.default_rng(0)
    used = np.array([i for i in range(182) if i not in (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)] + [255])
    raw = rng.choice(used, size=(16, 16)).astype(np.uint8)
    train = np.where(raw == 255, 255, np.searchsorted(used[:-1], raw)).astype(np.uint8)
    a, b = tmp_path / "a", tmp_path / "b"
    _label(a / "annotations/val2017/x.png", raw)
    _label(b / "annotations/val2017/x_labelTrainIds.png", train)
    convert_coco_object(a)
    convert_coco_object(b)
    out_a = np.asarray(Image.open(a / "annotations/val2017/x_instanceTrainIds.png"))
    out_b = np.asarray(Image.open(b / "annotations/val2017/x_instanceTrainIds.png"))
    assert np.array_equal(out_a, out_b) and out_a.max() <= 80


# ---------------------------------------------------------------------------------------------- layout errors
def test_missing_and_malformed_layouts_say_what_is_expected(tmp_path):
    with pytest.raises(ProtosegError, match="images/validation/<stem>.jpg"):
        open_dataset("ade20k", tmp_path)
    with pytest.raises(ProtosegError, match="not a folder"):
        open_dataset("ade20k", tmp_path / "nope")
    root = make_voc(tmp_path / "v")
    (root / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").unlink()
    with pytest.raises(ProtosegError, match="split file .*ImageSets/Segmentation/val.txt"):
        open_dataset("voc20", root)
    root = make_voc(tmp_path / "w")
    (root / "VOCdevkit/VOC2012/SegmentationClass/2007_000042.png").unlink()
    with pytest.raises(ProtosegError, match="1 of 2 label maps are missing"):
        open_dataset("voc20", root)
    with pytest.raises(ProtosegError, match="unknown dataset"):
        open_dataset("pascal", tmp_path)
    ade = make_flat(tmp_path / "ade", "images/validation", "annotations/validation", ".jpg", ".png", ["a"])
    Image.fromarray(np.zeros((2, 4, 3), np.uint8)).save(ade / "annotations/validation/a.png")  # RGB label
    with pytest.raises(ProtosegError, match="single-channel"):
        open_dataset("ade20k", ade).load_label(0)
    _img(ade / "images/validation/a.jpg", h=3, w=4)  # size mismatch
    _label(ade / "annotations/validation/a.png")
    with pytest.raises(ProtosegError, match="is 4x3 but its label map"):
        open_dataset("ade20k", ade).load(0)


def test_examples_layout(tmp_path):
    root = tmp_path / "ex"
    (root / "images").mkdir(parents=True)
    (root / "classes.txt").write_text("background\ncat\ndog\n")
    _img(root / "images/b.png")
    _img(root / "images/a.jpg")
    _label(root / "masks/a.png", np.array([[0, 1, 2, 255], [1, 1, 1, 1]], np.uint8))
    with pytest.raises(ProtosegError, match="masks are missing"):
        open_dataset("examples", root)
    _label(root / "masks/b.png")
    ds = open_dataset("examples", root)
    assert ds.stems == ["a", "b"] and ds.has_background and ds.query_classes == ["cat", "dog"]
    assert ds.load_label(0).tolist() == [[0, 1, 2, 255], [1, 1, 1, 1]]


def test_dataset_presets_carry_the_fact_sheet_settings():
    P = DATASET_PRESETS
    assert (P["voc20"].superpixels.scale, P["voc20"].superpixels.sigma, P["voc20"].superpixels.min_size) == (
        100,
        0.7,
        20,
    )
    assert (
        P["cityscapes"].superpixels.scale,
        P["cityscapes"].superpixels.sigma,
        P["cityscapes"].superpixels.min_size,
    ) == (20, 0.5, 50)
    assert P["coco-stuff"].superpixels.min_size == 100 and P["ade20k"].superpixels.sigma == 1.0
    assert P["voc20"].beta == 0.7 and P["voc"].beta == 0.7 and P["ade20k"].beta == 0.8
    assert all(p.beta_code == 0.8 for n, p in P.items() if n != "parts-world")
    assert all(p.k == 350 and p.background_threshold == 0.4 for p in P.values())
    preset = P["voc20"].apply("freeda-b")
    assert preset.matcher_options.beta == 0.7 and preset.matcher_options.k == 350
    assert preset.superpixels == P["voc20"].superpixels and preset.background_threshold == 0.4
    assert P["voc20"].apply("freeda-b", beta_source="code").matcher_options.beta == 0.8
    assert P["cityscapes"].apply("freeda-l", matcher_options={"beta": 0.5}).matcher_options.beta == 0.5
