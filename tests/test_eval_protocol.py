"""``protoseg eval --protocol/--names``: the benchmark query drives the segmenter, the report records the
protocol, names, preset and bank, the Markdown lists the published numbers, and the plots are written."""

import json
import pickle

import numpy as np
import pytest
from PIL import Image
from test_evaluate import make_ade, write_predictions
from typer.testing import CliRunner

from protoseg import __version__
from protoseg.bank import PrototypeBank
from protoseg.cli import app, run
from protoseg.datasets import open_dataset
from protoseg.eval.benchmarks import dataset_preset
from protoseg.eval.plots import confusion_heatmap, expected_chart_pixels, figure_pixels
from protoseg.eval.query import benchmark_query
from protoseg.eval.segmenter_predictor import SegmenterPredictor
from protoseg.eval.shards import evaluate
from protoseg.offline.examples import bank_from_examples
from protoseg.segment import Segmenter
from protoseg.worlds import PARTS_WORLD_CLASSES, write_examples


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("pw")
    write_examples(root / "train", count=6, seed=0, size=224)
    write_examples(root / "test", count=2, seed=1, size=224)
    bank_from_examples(root / "train", dataset_preset("parts-world").apply("handcrafted")).save(root / "bank")
    return root


def eval_parts_world(root, out, *extra):
    args = ["eval", "--dataset", "parts-world", "--data-root", str(root), "--bank", str(root / "bank"),
            "--out", str(out), "--workers", "0", *extra]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return json.loads(out.read_text())


def test_parts_world_under_tcl_and_sclip(world, tmp_path):
    reports = {p: eval_parts_world(world, tmp_path / f"pw-{p}.json", "--protocol", p) for p in ("tcl", "sclip")}
    tcl, sclip = reports["tcl"], reports["sclip"]
    manifest_id = PrototypeBank.load(world / "bank").manifest.bank_id
    for name, report in reports.items():
        config = report["config"]
        assert config["protocol"]["name"] == name and config["protocol"]["dataset"] == "parts-world"
        assert (config["names"], config["preset"], config["protoseg"]) == ("mmseg", "handcrafted", __version__)
        assert config["bank_id"] == manifest_id and manifest_id
        assert config["predictor"]["query"]["protocol"] == name  # in the run fingerprint
        # the plots, beside the report, open at the size the chart promises
        iou_png, confusion_png = tmp_path / f"pw-{name}_iou.png", tmp_path / f"pw-{name}_confusion.png"
        assert figure_pixels(iou_png) == expected_chart_pixels(len(PARTS_WORLD_CLASSES))
        with Image.open(confusion_png) as im:
            im.load()
            assert im.format == "PNG"
        # the heat map is the report's confusion: drawing it again gives a figure of the same size
        same = confusion_heatmap(np.eye(8, dtype=np.int64), PARTS_WORLD_CLASSES, tmp_path / "eye.png")
        assert figure_pixels(confusion_png) == figure_pixels(same)
        md = (tmp_path / f"pw-{name}.md").read_text()
        assert "No published numbers for `parts-world`" in md and f'"name": "{name}"' in md
    assert tcl["config"]["protocol"]["crop"] == 448 and sclip["config"]["protocol"]["crop"] == 224
    assert tcl["totals"] != sclip["totals"]  # the protocol changes what the segmenter is asked
    assert len(list(tmp_path.glob("pw-*.run-*"))) == 2  # separate run folders
    # tcl with its own names is today's default evaluation, pixel for pixel
    data = open_dataset("parts-world", world)
    preset = dataset_preset("parts-world").apply("handcrafted")
    direct = evaluate(data, SegmenterPredictor(Segmenter(preset, PrototypeBank.load(world / "bank")), data),
                      workers=0)
    assert tcl["totals"]["intersect"] == direct.totals[0].tolist()


def test_plots_folder_and_no_plots(world, tmp_path):
    eval_parts_world(world, tmp_path / "a.json", "--plots", str(tmp_path / "figs"), "--limit", "1")
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["a_confusion.png", "a_iou.png"]
    eval_parts_world(world, tmp_path / "b.json", "--no-plots", "--limit", "1")
    assert not list(tmp_path.glob("b_*.png"))


def test_query_predictor_rebuilds_the_same_query_from_its_recipe(world):
    """What a Ray worker receives: the predictor pickled without its models; it rebuilds the segmenter from
    the recipe and asks the same (SCLIP-protocol) query."""
    data = open_dataset("parts-world", world)
    q = benchmark_query("parts-world", "sclip", preset="handcrafted")
    recipe = {"preset": q.preset.to_dict(), "bank": str(world / "bank"), "device": "cpu"}
    local = SegmenterPredictor(Segmenter(q.preset, PrototypeBank.load(world / "bank")), data, recipe=recipe,
                               query=q)
    remote = pickle.loads(pickle.dumps(local))
    assert remote.segmenter is None and remote.query == q
    image = data.load_image(0)
    assert np.array_equal(remote(0, image), local(0, image))
    assert np.array_equal(local(0, image), q.predict(local.segmenter, image))


def test_predictions_report_lists_the_published_rows(tmp_path):
    gts = make_ade(tmp_path / "ade", n=3)
    write_predictions(tmp_path / "pred", gts)
    base = ["eval", "--dataset", "ade20k", "--data-root", str(tmp_path / "ade"), "--predictions",
            str(tmp_path / "pred"), "--workers", "0"]
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "tcl.json")])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "tcl.md").read_text()
    assert "| FreeDA (ViT-B) | 22.4 |" in md and "tcl protocol" in md and "SCLIP" not in md
    assert "FreeDA (ViT-B)" in res.output  # the CLI prints the same rows
    tcl = json.loads((tmp_path / "tcl.json").read_text())
    assert (tcl["config"]["protocol"]["name"], tcl["config"]["names"], tcl["config"]["bank_id"]) == (
        "tcl", "mmseg", None)
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "sclip.json"), "--protocol", "sclip"])
    assert res.exit_code == 0, res.output
    sclip = json.loads((tmp_path / "sclip.json").read_text())
    assert sclip["config"]["protocol"]["name"] == "sclip" and sclip["config"]["names"] == "sclip"
    assert sclip["totals"] == tcl["totals"]  # with --predictions the protocol is only recorded
    md = (tmp_path / "sclip.md").read_text()
    assert "| SCLIP (ViT-B/16) | 16.45 |" in md and "FreeDA" not in md


@pytest.mark.parametrize("option, value, message", [
    ("--protocol", "groupvit", "unknown --protocol 'groupvit'; choose one of: tcl, sclip"),
    ("--names", "clip", "unknown --names 'clip'; choose one of: mmseg, sclip, proxyclip, corrclip"),
])
def test_bad_protocol_or_names_is_one_error_line(tmp_path, capsys, option, value, message):
    gts = make_ade(tmp_path / "ade", n=1)
    write_predictions(tmp_path / "pred", gts)
    before = sorted(tmp_path.rglob("*"))
    code = run(["eval", "--dataset", "ade20k", "--data-root", str(tmp_path / "ade"), "--predictions",
                str(tmp_path / "pred"), "--out", str(tmp_path / "out" / "r.json"), option, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert sorted(tmp_path.rglob("*")) == before  # nothing written
