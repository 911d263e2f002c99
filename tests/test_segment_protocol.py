"""benchmark_query: a dataset under a protocol and a class-name variant -> the preset and the query; the parts
world under the tcl protocol (byte-identical to the default path) and under the SCLIP protocol, end to end."""

import json
import shutil

import numpy as np
import pytest

from protoseg.bank import PrototypeBank
from protoseg.datasets import open_dataset, open_examples
from protoseg.datasets.mmseg import MMSEG_DATASETS
from protoseg.datasets.variants import class_names
from protoseg.errors import ProtosegError
from protoseg.eval.benchmarks import dataset_preset
from protoseg.eval.protocols import protocol_settings
from protoseg.eval.query import benchmark_query
from protoseg.eval.segmenter_predictor import SegmenterPredictor
from protoseg.eval.shards import evaluate
from protoseg.offline.examples import bank_from_examples
from protoseg.segment import Segmenter
from protoseg.worlds import PARTS_WORLD_CLASSES, write_examples


# ------------------------------------------------------------------------------------------- configuration
def test_tcl_with_default_names_is_todays_default_evaluation():
    for dataset in MMSEG_DATASETS:
        q = benchmark_query(dataset)
        assert q.preset == dataset_preset(dataset).apply("freeda-l"), dataset
        query = list(MMSEG_DATASETS[dataset].classes)
        has_bg = query[0] == "background"
        assert q.classes.labels == (query[1:] if has_bg else query) and q.classes.plain
        assert q.background == ("constant" if has_bg else "none") and q.background_names == ()
        assert (q.names, q.settings.name, q.has_background) == ("mmseg", "tcl", has_bg)
    assert benchmark_query("voc", preset="freeda-b", beta_source="code").preset == dataset_preset("voc").apply(
        "freeda-b", beta_source="code")


def test_sclip_protocol_on_voc():
    q = benchmark_query("voc", "sclip")
    p = q.preset
    assert (p.scale, p.crop, p.stride) == ((2048, 336), 224, 112)
    assert (p.background_rule, p.background_threshold, p.logit_scale, p.area_threshold) == (
        "probability", 0.1, 65.0, 0.1)
    assert p.superpixels == dataset_preset("voc").superpixels  # the benchmark's method settings stay
    lists = class_names("voc", "sclip")
    assert q.background == "probability" and q.background_names == tuple(lists[0])
    assert q.background_names[:3] == ("sky", "wall", "tree")
    assert [list(s) for s in q.classes.synonyms] == lists[1:] and len(q.classes) == 20
    assert q.classes.synonyms[14][:2] == ("person", "person in shirt")
    json.dumps(q.describe())
    assert q.describe()["protocol_source"] == protocol_settings("sclip", "voc").source


def test_variants_and_protocols_combine():
    no_bg = benchmark_query("ade20k", "sclip")
    assert no_bg.background == "none" and no_bg.background_names == () and len(no_bg.classes) == 150
    coco = benchmark_query("coco-object", "sclip")
    assert "bed" in coco.background_names and "bed" in coco.classes.labels  # SCLIP's list, kept as it is
    renamed = benchmark_query("voc", "tcl", names="sclip")
    assert renamed.background == "constant" and renamed.background_names == () and not renamed.classes.plain
    assert renamed.preset == benchmark_query("voc").preset
    literal = benchmark_query("voc", "sclip", names="mmseg")
    assert literal.background_names == ("background",) and literal.classes.plain
    proxy = benchmark_query("context60", "proxyclip")
    assert (proxy.names, proxy.preset.crop, proxy.preset.background_threshold) == ("proxyclip", 336, 0.15)
    assert benchmark_query("voc", "sclip", background_threshold=0.3).preset.background_threshold == 0.3
    constant = benchmark_query("voc", "sclip", background_rule="constant", area_threshold=None)
    assert constant.background == "constant" and constant.background_names == ()


def test_query_errors():
    for kwargs, message in [
        ({"dataset": "pascal"}, "unknown dataset"),
        ({"dataset": "voc", "protocol": "groupvit"}, "unknown protocol"),
        ({"dataset": "voc", "names": "clip"}, "unknown class-name variant"),
        ({"dataset": "parts-world", "names": "sclip"}, "own class names"),
        ({"dataset": "voc", "preset": "nope"}, "unknown preset"),
        ({"dataset": "examples"}, "data-root"),
    ]:
        with pytest.raises(ProtosegError, match=message):
            benchmark_query(**kwargs)


def test_labels_map_to_dataset_indices():
    voc = benchmark_query("voc", "sclip")
    labels = np.array([[-1, 0], [19, 3]])
    assert voc.to_dataset(labels).tolist() == [[0, 1], [20, 4]]
    ade = benchmark_query("ade20k", "sclip")
    assert ade.to_dataset(labels[1:]).tolist() == [[19, 3]]
    with pytest.raises(ProtosegError, match="no background class"):
        ade.to_dataset(labels)


# ------------------------------------------------------------------------------------------- the parts world
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("pw")
    write_examples(root / "train", count=6, seed=0, size=224)
    write_examples(root / "test", count=3, seed=1, size=224)
    bank = bank_from_examples(root / "train", dataset_preset("parts-world").apply("handcrafted"))
    return root, bank


class QueryPredictor:
    """What ``protoseg eval`` will run: a segmenter asked through a BenchmarkQuery."""

    needs_image, in_loader = True, False

    def __init__(self, query, segmenter):
        self.query, self.segmenter = query, segmenter

    def describe(self):
        return {"kind": "query", **self.query.describe()}

    def inputs(self):
        return {}

    def __call__(self, index, image):
        return self.query.predict(self.segmenter, image)


def count_windows(segmenter):
    real = segmenter.matcher
    calls = []

    class Counting:
        def __getattr__(self, name):
            return getattr(real, name)

        def __call__(self, crop):
            calls.append(tuple(crop.shape[-2:]))
            return real(crop)

        def score_windows(self, crops):  # windows in batches (FreeDA): one entry per window
            calls.extend([tuple(crops.shape[-2:])] * len(crops))
            return real.score_windows(crops)

    segmenter.matcher = Counting()
    return calls


def test_tcl_protocol_gives_todays_labels_on_the_parts_world(world):
    root, bank = world
    data = open_dataset("parts-world", root)
    q = benchmark_query("parts-world", "tcl")
    today = dataset_preset("parts-world").apply("handcrafted")
    assert q.preset == today and q.background == "none" and q.classes.labels == list(PARTS_WORLD_CLASSES)
    for i in range(len(data)):
        image = data.load_image(i)
        expected = SegmenterPredictor(Segmenter(today, bank), data)(i, image)
        got = q.predict(Segmenter(q.preset, bank), image)
        assert got.dtype == expected.dtype and np.array_equal(got, expected)


def test_sclip_protocol_runs_on_the_parts_world(world):
    root, bank = world
    data = open_dataset("parts-world", root)
    q = benchmark_query("parts-world", "sclip")
    assert (q.preset.scale, q.preset.crop, q.preset.stride) == ((2048, 336), 224, 112)
    assert q.background == "none" and q.names == "mmseg" and q.settings.family == "sclip"
    segmenter = Segmenter(q.preset, bank)
    windows = count_windows(segmenter)
    result = evaluate(data, QueryPredictor(q, segmenter), workers=0)
    assert result.images == 3 and result.classes == tuple(PARTS_WORLD_CLASSES)
    assert windows == [(224, 224)] * 4 * 3  # 224 px scenes resized to 336: 2 x 2 windows of 224, stride 112
    assert 1 / len(PARTS_WORLD_CLASSES) < result.scores.miou <= 1, result.scores.miou
    tcl = benchmark_query("parts-world", "tcl")
    image = data.load_image(0)
    assert not np.array_equal(q.predict(segmenter, image), tcl.predict(Segmenter(tcl.preset, bank), image))


def test_probability_background_runs_end_to_end(world, tmp_path):
    """An examples folder whose class 0 is background: under the SCLIP family the bank's background prototypes
    (the parts world's sky, relabelled) are queried as background, and background pixels score as index 0."""
    root, bank = world
    folder = tmp_path / "with-background"
    shutil.copytree(root / "test", folder)
    (folder / "classes.txt").write_text("\n".join(["background", *PARTS_WORLD_CLASSES[1:]]) + "\n")
    labels = np.where(bank.table["label"] == "sky", "background", bank.table["label"])
    relabelled = PrototypeBank.create(bank.vectors(np.arange(len(bank))), {**bank.table, "label": labels},
                                      method=bank.manifest.method, feature_encoder=bank.manifest.feature_encoder,
                                      dtype="float32")
    q = benchmark_query("examples", "sclip", preset="handcrafted", data_root=folder)
    assert q.has_background and q.background == "probability" and q.background_names == ("background",)
    assert (q.preset.background_threshold, q.preset.logit_scale) == (0.0, 40.0)
    data = open_examples(folder)
    result = evaluate(data, QueryPredictor(q, Segmenter(q.preset, relabelled)), workers=0)
    assert result.scores.iou[0] > 0.5, result.scores.iou  # the sky, found as background
    assert 1 / len(PARTS_WORLD_CLASSES) < result.scores.miou <= 1
    # a bank that cannot serve the background's names says so
    with pytest.raises(ProtosegError, match="'background'"):
        q.predict(Segmenter(q.preset, bank), data.load_image(0))
