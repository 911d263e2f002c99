"""The evaluation runner: prediction folders, resumable shards, background mapping, reports, CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import confusion_matrix
from typer.testing import CliRunner

from protoseg.bank import PrototypeBank
from protoseg.cli import app
from protoseg.config.segment import get_preset
from protoseg.datasets import open_dataset
from protoseg.errors import ProtosegError
from protoseg.eval.labelmaps import PredictionFolder
from protoseg.eval.result import write_reports
from protoseg.eval.segmenter_predictor import SegmenterPredictor
from protoseg.eval.shards import evaluate
from protoseg.match import Matcher
from protoseg.models.handcrafted import HANDCRAFTED_ID
from protoseg.segment import Segmenter


def make_ade(root: Path, n=7, seed=0, C=150):
    """A tiny ADE20K-layout dataset with random labels (0 = ignored by reduce_zero_label)."""
    rng = np.random.default_rng(seed)
    gts = {}
    for i in range(n):
        h, w = rng.integers(8, 30, size=2)
        stem = f"ADE_val_{i:08d}"
        (root / "images/validation").mkdir(parents=True, exist_ok=True)
        (root / "annotations/validation").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / f"images/validation/{stem}.jpg")
        raw = rng.integers(0, 6, (h, w)).astype(np.uint8)  # classes 0..4 after reduction, 0 -> ignore
        Image.fromarray(raw).save(root / f"annotations/validation/{stem}.png")
        gts[stem] = np.where(raw == 0, 255, raw.astype(int) - 1)
    return gts


def write_predictions(folder: Path, gts: dict, seed=1):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    preds = {}
    for stem, gt in gts.items():
        pred = np.where(rng.random(gt.shape) < 0.5, np.where(gt == 255, 0, gt), rng.integers(0, 6, gt.shape))
        Image.fromarray(pred.astype(np.uint8)).save(folder / f"{stem}.png")
        preds[stem] = pred
    return preds


def sklearn_miou(gts, preds, C):
    cm = np.zeros((C, C), np.int64)
    for stem, gt in gts.items():
        keep = gt != 255
        cm += confusion_matrix(gt[keep], preds[stem][keep], labels=np.arange(C))
    tp = np.diag(cm)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nanmean(tp / (cm.sum(0) + cm.sum(1) - tp))


def test_prediction_folder_scores_match_sklearn(tmp_path):
    gts = make_ade(tmp_path / "ade")
    preds = write_predictions(tmp_path / "pred", gts)
    ds = open_dataset("ade20k", tmp_path / "ade")
    result = evaluate(ds, PredictionFolder(tmp_path / "pred", ds), workers=2)
    assert result.images == 7
    assert abs(result.scores.miou - sklearn_miou(gts, preds, 150)) < 1e-9
    assert np.isnan(result.scores.iou[100])  # absent class skipped


def test_prediction_folder_errors(tmp_path):
    gts = make_ade(tmp_path / "ade", n=3)
    write_predictions(tmp_path / "pred", gts)
    ds = open_dataset("ade20k", tmp_path / "ade")
    (tmp_path / "pred/ADE_val_00000001.png").unlink()
    with pytest.raises(ProtosegError, match="1 of 3 predictions are missing.*ADE_val_00000001.png"):
        PredictionFolder(tmp_path / "pred", ds)
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "pred/ADE_val_00000001.png")
    with pytest.raises(ProtosegError, match="predict at the original size"):
        evaluate(ds, PredictionFolder(tmp_path / "pred", ds), workers=0)


class CountingPredictions(PredictionFolder):
    calls: list

    def __call__(self, index, image):
        self.calls.append(index)
        return super().__call__(index, image)


def test_interrupted_run_resumes_to_identical_numbers(tmp_path, caplog):
    gts = make_ade(tmp_path / "ade", n=9)
    write_predictions(tmp_path / "pred", gts)
    ds = open_dataset("ade20k", tmp_path / "ade")
    full = evaluate(ds, PredictionFolder(tmp_path / "pred", ds), workers=2)

    pred = CountingPredictions(tmp_path / "pred", ds)
    pred.calls = []
    run = tmp_path / "run"

    def stop_after_five(stage, done, total):
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate(ds, pred, run_dir=run, shard_size=2, workers=0, progress=stop_after_five)
    assert sorted(p.name for p in run.glob("shards/*.npz")) == ["00000.npz", "00001.npz"]
    assert not list(run.rglob("*.tmp"))
    pred.calls = []
    resumed = evaluate(ds, pred, run_dir=run, shard_size=2, workers=2)
    assert pred.calls == [4, 5, 6, 7, 8]  # finished shards were not recomputed
    assert np.array_equal(resumed.totals, full.totals) and resumed.scores.miou == full.scores.miou
    pred.calls = []
    again = evaluate(ds, pred, run_dir=run, shard_size=2, workers=2)
    assert pred.calls == [] and np.array_equal(again.totals, full.totals) and not caplog.records
    # another evaluation in the same run folder starts fresh (saying so) instead of reusing its shards
    first4 = evaluate(ds.limit(4), PredictionFolder(tmp_path / "pred", ds.limit(4)), workers=0)
    pred = CountingPredictions(tmp_path / "pred", ds.limit(4))
    pred.calls = []
    other = evaluate(ds.limit(4), pred, run_dir=run, shard_size=2, workers=0)
    assert pred.calls == [0, 1, 2, 3] and np.array_equal(other.totals, first4.totals)
    assert sorted(p.name for p in run.glob("shards/*.npz")) == ["00000.npz", "00001.npz"]
    (notice,) = caplog.records
    assert "starting fresh" in notice.getMessage() and "images" in notice.getMessage()


class FakeSegmenter:
    def __init__(self, labels):
        self.labels, self.queried = labels, None

    def segment(self, image, classes, background=False):
        from protoseg.segment import Segmentation

        self.queried = (list(classes), background)
        return Segmentation(labels=self.labels, classes=list(classes))


def test_segmenter_predictor_maps_background_to_index_zero(tmp_path):
    root = tmp_path / "ex"
    (root / "images").mkdir(parents=True)
    (root / "classes.txt").write_text("background\ncat\ndog\n")
    Image.fromarray(np.zeros((1, 4, 3), np.uint8)).save(root / "images/a.png")
    (root / "masks").mkdir()
    Image.fromarray(np.array([[0, 1, 2, 255]], np.uint8)).save(root / "masks/a.png")
    ds = open_dataset("examples", root)
    fake = FakeSegmenter(np.array([[-1, 0, 0, 1]]))
    result = evaluate(ds, SegmenterPredictor(fake, ds), workers=0)
    assert fake.queried == (["cat", "dog"], True)  # background is never queried
    # pred [0, 1, 1, 2] vs gt [0, 1, 2, ignore]
    assert result.totals[0].tolist() == [1, 1, 0] and result.totals[1].tolist() == [1, 2, 1]

    # saved predictions re-score to the same counts through the prediction-folder path
    fake = FakeSegmenter(np.array([[-1, 0, 0, 1]]))
    evaluate(ds, SegmenterPredictor(fake, ds, save_dir=tmp_path / "saved"), workers=0)
    assert np.asarray(Image.open(tmp_path / "saved/a.png")).tolist() == [[0, 1, 1, 2]]
    rescored = evaluate(ds, PredictionFolder(tmp_path / "saved", ds), workers=0)
    assert np.array_equal(rescored.totals, result.totals)

    (root / "classes.txt").write_text("cat\ndog\nbird\n")
    ds = open_dataset("examples", root)
    fake = FakeSegmenter(np.array([[0, 1, 1, 2]]))
    result = evaluate(ds, SegmenterPredictor(fake, ds), workers=0)
    assert fake.queried == (["cat", "dog", "bird"], False)
    assert result.totals[0].tolist() == [1, 1, 0]


class CountingSegmenter:
    """Labels everything class 0 and reports fixed per-image counts, like a DPSM segmenter."""

    def __init__(self, diagnostics):
        self.diagnostics = diagnostics

    def segment(self, image, classes, background=False):
        from protoseg.segment import Segmentation

        return Segmentation(labels=np.zeros(image.shape[:2], np.int64), classes=list(classes),
                            diagnostics=dict(self.diagnostics))


def test_segmenter_diagnostics_are_summed_into_the_report(tmp_path):
    make_ade(tmp_path / "ade", n=3)
    ds = open_dataset("ade20k", tmp_path / "ade")
    counts = {"transport_problems": 10, "transport_not_converged": 2}
    result = evaluate(ds, SegmenterPredictor(CountingSegmenter(counts), ds), workers=0)
    assert result.to_dict()["config"]["diagnostics"] == {"images": 3, "transport_problems": 30,
                                                         "transport_not_converged": 6}
    assert "diagnostics" not in result.config["predictor"]  # not part of the run's identity
    quiet = evaluate(ds, SegmenterPredictor(CountingSegmenter({}), ds), workers=0)
    assert "diagnostics" not in quiet.config


class ColourMatcher(Matcher):
    """Scores by colour: class a = R/255, class b = G/255 (a stand-in matcher)."""

    def prepare(self, classes):
        self.classes = classes

    def __call__(self, crop):
        return torch.stack([crop[0] / 255, crop[1] / 255])


def test_background_is_a_constant_threshold_channel_in_the_real_segmenter(tmp_path):
    bank = PrototypeBank.create(
        np.eye(2, 22, dtype=np.float32),
        {"label": ["a", "b"]},
        method="examples",
        feature_encoder=HANDCRAFTED_ID,
    )
    seg = Segmenter(get_preset("handcrafted", background_threshold=0.4), bank)
    seg.matcher = ColourMatcher()
    image = np.zeros((300, 700, 3), np.uint8)
    image[:, :200] = (255, 0, 0)  # a
    image[:, 250:450] = (0, 200, 0)  # b (0.78)
    image[:, 500:] = (90, 60, 0)  # both below 0.4 -> background
    labels = seg.segment(image, ["a", "b"], background=True).labels
    assert (labels[:, :190] == 0).all() and (labels[:, 260:440] == 1).all() and (labels[:, 510:] == -1).all()
    # without background the same pixels take the best class
    assert (seg.segment(image, ["a", "b"]).labels[:, 510:] == 0).all()
    # raising the threshold above b's score turns b into background too
    seg.preset = get_preset("handcrafted", background_threshold=0.8)
    assert (seg.segment(image, ["a", "b"], background=True).labels[:, 260:440] == -1).all()


def test_reports_and_cli(tmp_path):
    gts = make_ade(tmp_path / "ade", n=4)
    preds = write_predictions(tmp_path / "pred", gts)
    out = tmp_path / "r" / "report.json"
    runner = CliRunner()
    command = ["eval", "--dataset", "ade20k", "--data-root", str(tmp_path / "ade"), "--predictions",
               str(tmp_path / "pred"), "--out", str(out)]
    res = runner.invoke(app, [*command, "--per-class"])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert abs(report["mIoU"] - 100 * sklearn_miou(gts, preds, 150)) < 1e-3
    assert report["images"] == 4 and len(report["per_class"]) == 150 and report["per_class"][7]["class"] == "bed "
    md = out.with_suffix(".md").read_text()
    assert "| mIoU | mAcc | aAcc |" in md and "`bed `" in md
    (run,) = (tmp_path / "r").glob("report.run-*")
    assert (run / "run.json").is_file() and (run / "shards" / "00000.npz").is_file()
    # the same command again resumes from the same folder (nothing recomputed) and reports the same numbers
    before = out.read_text()
    res = runner.invoke(app, command)
    assert res.exit_code == 0 and out.read_text() == before and len(list((tmp_path / "r").glob("report.run-*"))) == 1
    assert "mIoU" in res.output

    res = runner.invoke(app, ["eval", "--dataset", "voc", "--list-classes"])
    assert res.exit_code == 0 and res.output.splitlines()[0] == "0\tbackground"
    assert res.output.splitlines()[20] == "20\ttvmonitor"
    res = runner.invoke(
        app,
        [
            "eval",
            "--dataset",
            "ade20k",
            "--data-root",
            str(tmp_path / "nothing"),
            "--predictions",
            str(tmp_path / "pred"),
        ],
    )
    assert isinstance(res.exception, ProtosegError) and "expected" in str(res.exception)


def test_write_reports_round_trip(tmp_path):
    gts = make_ade(tmp_path / "ade", n=2)
    write_predictions(tmp_path / "pred", gts)
    ds = open_dataset("ade20k", tmp_path / "ade")
    result = evaluate(ds, PredictionFolder(tmp_path / "pred", ds), workers=0)
    j, m = write_reports(result, tmp_path / "x.json", per_class=False)
    d = json.loads(j.read_text())
    assert d["totals"]["intersect"] == result.totals[0].tolist()
    assert d["mIoU"] == round(result.scores.miou * 100, 4) and "| # | class" not in m.read_text()


def test_cityscapes_predictions_by_file_stem_or_mmseg_name(tmp_path):
    root = tmp_path / "city"
    gt = np.array([[0, 1, 18, 255]], np.uint8)
    for stem in ("aachen_000000_000019", "aachen_000001_000019"):
        (root / "leftImg8bit/val/aachen").mkdir(parents=True, exist_ok=True)
        (root / "gtFine/val/aachen").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((1, 4, 3), np.uint8)).save(root / f"leftImg8bit/val/aachen/{stem}_leftImg8bit.png")
        Image.fromarray(gt).save(root / f"gtFine/val/aachen/{stem}_gtFine_labelTrainIds.png")
    ds = open_dataset("cityscapes", root)
    pred = tmp_path / "pred"
    pred.mkdir()
    # one prediction named by the image file stem (8-bit), one by MMSeg's short name (16-bit PNG)
    Image.fromarray(np.array([[0, 1, 18, 3]], np.uint8)).save(pred / "aachen_000000_000019_leftImg8bit.png")
    Image.fromarray(np.array([[0, 2, 18, 3]], np.uint16)).save(pred / "aachen_000001_000019.png")
    result = evaluate(ds, PredictionFolder(pred, ds), workers=0)
    assert result.totals[0, [0, 1, 18]].tolist() == [2, 1, 2] and result.totals[3, 1] == 2
