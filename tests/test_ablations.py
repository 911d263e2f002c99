"""FreeDA ablations on the parts world (small: 6 support images, 3 test images at 224 px)."""

import numpy as np
import pytest

from protoseg.ablations import ABLATIONS, Ablation, ablation_markdown, run_ablations
from protoseg.bank import PrototypeBank
from protoseg.datasets import dataset_preset, open_examples
from protoseg.datasets.examples import ensure_parts_world_split
from protoseg.errors import ProtosegError
from protoseg.evaluate import SegmenterPredictor, evaluate
from protoseg.offline.examples import bank_from_examples
from protoseg.partsworld import PARTS_WORLD_CLASSES, write_examples
from protoseg.segment import Segmenter


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("pw")
    write_examples(root / "train", count=6, seed=0, size=224)
    write_examples(root / "test", count=3, seed=1, size=224)
    preset = dataset_preset("parts-world").apply("handcrafted")
    bank = bank_from_examples(root / "train", preset)
    return bank, open_examples(root / "test", name="parts-world")


def test_ablation_rows_cover_the_three_factors():
    opts = [a.options for a in ABLATIONS]
    assert {o["aggregation"] for o in opts} == {"mean", "kmeans"}
    assert {o["use_superpixels"] for o in opts} == {True, False}
    assert {o["pooling"] for o in opts if o["use_superpixels"]} == {"area", "point"}


def test_ablation_table_on_parts_world(small_world):
    bank, test = small_world
    rows = (ABLATIONS[0], ABLATIONS[2])  # mean with / without superpixels
    results = run_ablations(ablations=rows, bank=bank, dataset=test, workers=0)
    assert [r.name for r, _ in results] == [r.name for r in rows]
    for _, res in results:
        assert res.images == 3 and res.classes == tuple(PARTS_WORLD_CLASSES)
        assert 1 / len(PARTS_WORLD_CLASSES) < res.scores.miou <= 1  # far above chance on the parts world
    # the superpixel switch really changes the predictions
    assert not np.array_equal(results[0][1].totals, results[1][1].totals)
    # a row is exactly the protocol run with that row's options
    preset = dataset_preset("parts-world").apply("handcrafted", matcher_options=rows[0].options)
    direct = evaluate(test, SegmenterPredictor(Segmenter(preset, bank), test), workers=0)
    assert np.array_equal(direct.totals, results[0][1].totals)
    table = ablation_markdown(results)
    assert table.count("\n") == 4 and "| mean · no superpixels | mean | no | – |" in table


def test_parts_world_split_is_generated_once_and_deterministically(tmp_path, monkeypatch):
    calls = []
    import protoseg.partsworld as pw

    original = pw.write_examples

    def counting(root, count, seed, size=448):
        calls.append((count, seed))
        return original(root, count, seed, size=64)

    monkeypatch.setattr(pw, "write_examples", counting)
    a = ensure_parts_world_split(tmp_path / "a", "test", 2, 1)
    ensure_parts_world_split(tmp_path / "a", "test", 2, 1)
    b = ensure_parts_world_split(tmp_path / "b", "test", 2, 1)
    assert calls == [(2, 1), (2, 1)]  # the second call on "a" reused the finished split
    for stem in ("scene_00000", "scene_00001"):
        assert (a / "images" / f"{stem}.png").read_bytes() == (b / "images" / f"{stem}.png").read_bytes()
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]


def test_unknown_ablation_option_is_rejected(small_world):
    bank, test = small_world
    with pytest.raises(ProtosegError, match="unknown freeda option 'no_such_option'"):
        run_ablations(ablations=(Ablation("bad", {"no_such_option": 1}),), bank=bank, dataset=test, workers=0)


def test_cli_eval_with_a_bank(small_world, tmp_path):
    import json

    from typer.testing import CliRunner

    from protoseg.cli import app

    bank, test = small_world
    bank.save(tmp_path / "bank")
    out = tmp_path / "r.json"
    args = [
        "eval",
        "--dataset",
        "examples",
        "--data-root",
        str(test.samples[0].image.parent.parent),
        "--bank",
        str(tmp_path / "bank"),
        "--preset",
        "handcrafted",
        "--limit",
        "1",
        "--out",
        str(out),
        "--workers",
        "0",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    preset = dataset_preset("examples").apply("handcrafted")
    one = test.limit(1)
    direct = evaluate(one, SegmenterPredictor(Segmenter(preset, bank), one), workers=0)
    assert report["totals"]["intersect"] == direct.totals[0].tolist()
    assert report["config"]["predictor"]["preset"] == "handcrafted"
    assert report["config"]["predictor"]["settings"]["superpixels"]["sigma"] == 1.0  # the dataset preset's setting


def test_ray_eval_gives_the_totals_of_a_local_run(small_world, tmp_path):
    """Evaluation shards as tasks of a local Ray cluster (CPU), on the build's run machinery: the segmenter
    is rebuilt in each worker from its recipe, and the totals and confusion match a local run exactly."""
    pytest.importorskip("ray")
    _, test = small_world
    bank_dir = tmp_path / "bank"
    small_world[0].save(bank_dir)
    preset = dataset_preset("parts-world").apply("handcrafted")
    recipe = {"preset": preset.to_dict(), "bank": str(bank_dir), "device": "cpu"}

    def predictor():
        return SegmenterPredictor(Segmenter(preset, PrototypeBank.load(bank_dir)), test, {"preset": "handcrafted"},
                                  recipe=recipe)

    local = evaluate(test, predictor(), run_dir=tmp_path / "local", shard_size=1, workers=0)
    remote = evaluate(test, predictor(), run_dir=tmp_path / "ray", shard_size=1, workers=0, ray=True,
                      ray_init={"num_cpus": 2})
    assert np.array_equal(local.totals, remote.totals) and local.scores.miou == remote.scores.miou
    assert np.array_equal(local.confusion, remote.confusion)
    assert local.confusion[:-1, :-1].trace() == local.totals[0].sum()  # the diagonal is the intersections
