"""FreeDA ablations on the parts world (small: 6 support images, 3 test images at 224 px)."""

import numpy as np
import pytest

from protoseg.bank import PrototypeBank
from protoseg.datasets import open_examples
from protoseg.errors import ProtosegError
from protoseg.eval.ablations import ABLATIONS, Ablation, ablation_markdown, run_ablations
from protoseg.eval.benchmarks import dataset_preset
from protoseg.eval.segmenter_predictor import SegmenterPredictor
from protoseg.eval.shards import evaluate
from protoseg.offline.examples import bank_from_examples
from protoseg.segment import Segmenter
from protoseg.worlds import PARTS_WORLD_CLASSES, write_examples
from protoseg.worlds.cache import ensure_parts_world_split


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
    import protoseg.worlds.cache as pw

    original = pw.write_examples

    def counting(root, count, seed, size=448, **world):
        calls.append((count, seed))
        return original(root, count, seed, size=64, **world)

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


def test_dpsm_rows_cover_table_3_and_every_switch():
    from protoseg.config.matchers import DpsmOptions
    from protoseg.config.segment import get_preset
    from protoseg.eval.ablations import DPSM_ABLATIONS, DPSM_PAPER, SUITES

    assert SUITES["dpsm"] is DPSM_ABLATIONS and SUITES["freeda"] is ABLATIONS
    options = [get_preset(r.preset).with_options(**r.options).matcher_options for r in DPSM_ABLATIONS
               if get_preset(r.preset).matcher == "dpsm"]
    assert {o.mode for o in options} == {"image-to-image", "single", "image-to-class", "subregion-ot", "nearest-part"}
    ot_rows = [o for o in options if o.mode == "subregion-ot"]
    assert {o.capacity for o in ot_rows} >= {1.0, 2.0, 4.0, 8.0, 16.0}
    assert {o.supply for o in ot_rows} == {"class", "view", "cluster"}
    assert {o.emd_solver for o in ot_rows} == {"sinkhorn", "exact"}
    assert {o.epsilon for o in ot_rows if o.emd_solver == "sinkhorn"} >= {0.05, 0.01, "auto"}
    # the paper's row is exactly DPSM's default matcher setting
    default = DpsmOptions()
    assert all(getattr(default, k) == v for k, v in DPSM_PAPER.items() if k != "prune_keep")
    assert DPSM_PAPER["prune_keep"] == 0  # the paper's transport, unpruned
    assert any(r.preset == "handcrafted" for r in DPSM_ABLATIONS)  # FreeDA-local reference
    assert any(r.preset == "handcrafted-dpsm" and not r.options for r in DPSM_ABLATIONS)  # the chosen preset


@pytest.fixture(scope="module")
def recombined_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("rc")
    write_examples(root / "train", count=4, seed=19, world="recombined", combos="support")  # every class
    write_examples(root / "test", count=1, seed=11, world="recombined", combos="novel")
    preset = dataset_preset("recombined-world").apply("handcrafted-dpsm")
    return bank_from_examples(root / "train", preset), open_examples(root / "test", name="recombined-world")


def test_dpsm_ablation_table_with_superpixel_and_oracle_proposals(recombined_world):
    from protoseg.eval.ablations import DPSM_PAPER, dpsm_ablation_markdown

    bank, test = recombined_world
    rows = (Ablation("FreeDA local", {}, preset="handcrafted"),
            Ablation("img-to-img", {**DPSM_PAPER, "mode": "image-to-image"}, preset="handcrafted-dpsm"),
            Ablation("OT exact τ 4", {**DPSM_PAPER, "emd_solver": "exact", "capacity": 4.0}, preset="handcrafted-dpsm"))
    own = run_ablations(ablations=rows, bank=bank, dataset=test, workers=0, world="recombined")
    oracle = run_ablations(ablations=rows, bank=bank, dataset=test, workers=0, world="recombined",
                           proposals="oracle")
    assert [r.name for r, _ in own] == [r.name for r in rows]
    assert np.array_equal(own[0][1].totals, oracle[0][1].totals)  # FreeDA takes no proposals
    for k in (1, 2):  # DPSM rows really use the object masks
        assert not np.array_equal(own[k][1].totals, oracle[k][1].totals)
        assert oracle[k][1].config["proposals"] == "oracle"
    # an oracle row is the segmenter fed the object masks of each image
    from protoseg.worlds import read_objects

    preset = dataset_preset("recombined-world").apply("handcrafted-dpsm", matcher_options={
        **rows[2].options, "proposals": "given"})
    sample = test.samples[0]
    labels = Segmenter(preset, bank).segment(test.load_image(0), test.query_classes, proposals=read_objects(
        sample.label.parent.parent / "objects" / sample.label.name)).labels
    gt = test.load_label(0)
    inter = [int(((labels == c) & (gt == c)).sum()) for c in range(len(PARTS_WORLD_CLASSES))]
    assert inter == oracle[2][1].totals[0].tolist()
    table = dpsm_ablation_markdown(oracle, "recombined, oracle")
    header = next(line for line in table.splitlines() if line.startswith("| row"))
    assert header.split(" | ")[3:11] == PARTS_WORLD_CLASSES  # per-class IoU columns
    assert "| OT exact τ 4 | exact · τ 4 · per class |" in table and table.count("\n") == 2 + 2 + 3
    assert all(res.config["seconds_per_image"] > 0 for _, res in own)


def test_oracle_rows_need_object_masks(recombined_world, tmp_path):
    import shutil

    bank, test = recombined_world
    root = tmp_path / "copy"
    shutil.copytree(test.samples[0].image.parent.parent, root)
    shutil.rmtree(root / "objects")
    rows = (Ablation("img-to-img", {"mode": "image-to-image"}, preset="handcrafted-dpsm"),)
    with pytest.raises(ProtosegError, match="objects"):
        run_ablations(ablations=rows, bank=bank, dataset=open_examples(root), workers=0, proposals="oracle")
    with pytest.raises(ProtosegError, match="proposals must be one of"):
        run_ablations(ablations=rows, bank=bank, dataset=test, workers=0, proposals="sam")


def test_cli_ablate_passes_suite_world_split_and_proposals(monkeypatch, small_world, tmp_path):
    from typer.testing import CliRunner

    import protoseg.eval.ablations as ablations
    from protoseg.cli import app

    bank, test = small_world
    calls = []
    real = ablations.run_ablations

    def spy(data_root, rows, **kw):
        calls.append((data_root, rows, kw))
        return real(ablations=rows[:1], bank=bank, dataset=test, workers=0, limit=kw["limit"])

    monkeypatch.setattr(ablations, "run_ablations", spy)
    out = tmp_path / "t.md"
    res = CliRunner().invoke(app, ["ablate", "--suite", "dpsm", "--world", "recombined", "--split", "dev",
                                   "--proposals", "oracle", "--rows", "2,16", "--limit", "1", "--out", str(out),
                                   "--data-root", str(tmp_path)])
    assert res.exit_code == 0, res.output
    (root, rows, kw), = calls
    assert root == tmp_path and [r.name for r in rows] == [ablations.DPSM_ABLATIONS[i].name for i in (1, 15)]
    assert (kw["world"], kw["split"], kw["proposals"], kw["limit"]) == ("recombined", "dev", "oracle", 1)
    assert out.read_text().startswith("**dpsm ablations on the recombined world (dev, 1 images, proposals: oracle)")
    bad = CliRunner().invoke(app, ["ablate", "--suite", "dpsm", "--rows", "0"])
    assert isinstance(bad.exception, ProtosegError) and "--rows takes numbers 1..18" in str(bad.exception)



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
