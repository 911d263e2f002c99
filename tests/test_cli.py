"""The command line: outputs, one-line errors without tracebacks, nothing half-written."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from protoseg import cli
from protoseg.bank import PrototypeBank
from protoseg.config.segment import get_preset
from protoseg.offline.examples import bank_from_examples
from protoseg.worlds import PARTS_WORLD_CLASSES, write_examples

CLASSES = ", ".join(PARTS_WORLD_CLASSES)
SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    write_examples(root / "train", 4, seed=7, size=224)  # seed 7: every class appears
    write_examples(root / "test", 2, seed=6, size=224)
    bank = bank_from_examples(root / "train", "handcrafted")
    bank.save(root / "bank")
    return root


def run_process(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "protoseg", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


@pytest.fixture
def run(capsys):
    """The CLI in-process (as the console script runs it): returns (code, stdout, stderr)."""

    def invoke(*args: str, cwd: Path) -> subprocess.CompletedProcess:
        capsys.readouterr()
        code = cli.run(list(args))
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out.out, out.err)

    return invoke


def test_segment_writes_label_maps_and_overlays(world, tmp_path):
    images = sorted(str(p) for p in (world / "test" / "images").glob("*.png"))
    r = run_process("segment", *images, "--classes", CLASSES, "--bank", str(world / "bank"), "--preset", "handcrafted",
            "--out", str(tmp_path / "out"), "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for img in images:
        stem = Path(img).stem
        label = Image.open(tmp_path / "out" / f"{stem}.png")
        assert label.mode == "P" and label.size == (224, 224)
        assert np.asarray(label).max() < len(PARTS_WORLD_CLASSES)
        assert Image.open(tmp_path / "out" / f"{stem}_overlay.jpg").size == (224, 224)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [f"{Path(i).stem}.png" for i in images] + [f"{Path(i).stem}_overlay.jpg" for i in images]
        + [f"{Path(i).stem}.json" for i in images])


def test_segment_warns_once_when_transport_did_not_converge(world, tmp_path, run, monkeypatch):
    from dataclasses import replace

    from protoseg.config import segment as presets

    handcrafted = get_preset("handcrafted")
    capped = replace(get_preset("dpsm", features="handcrafted", superpixels=handcrafted.superpixels,
                                matcher_options={"proposals": "superpixels", "iterations": 1, "stop_thr": 1e-9}),
                     name="dpsm-capped")
    monkeypatch.setitem(presets.PRESETS, "dpsm-capped", capped)
    images = sorted(str(p) for p in (world / "test" / "images").glob("*.png"))
    r = run("segment", *images, "--classes", CLASSES, "--bank", str(world / "bank"), "--preset", "dpsm-capped",
            "--out", str(tmp_path / "out"), "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if "transport" in line]
    assert len(warnings) == 1, r.stderr
    n, _, m = warnings[0].removeprefix("warning: ").split(" ")[:3]
    assert int(n) == int(m) > 0
    assert warnings[0] == f"warning: {n} of {m} transport problems did not converge (raise iterations or epsilon)"
    converged = run("segment", images[0], "--classes", CLASSES, "--bank", str(world / "bank"), "--preset",
                    "handcrafted", "--out", str(tmp_path / "out2"), "--device", "cpu", cwd=tmp_path)
    assert converged.returncode == 0 and "transport" not in converged.stderr


def one_line_error(r: subprocess.CompletedProcess, pattern: str) -> None:
    assert r.returncode != 0
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "Traceback" not in r.stderr
    assert pattern in lines[0], lines[0]


def test_a_real_process_prints_no_traceback(world, tmp_path):
    one_line_error(run_process("segment", str(tmp_path / "missing.png"), "--classes", "car", "--bank",
                               str(world / "bank"), cwd=tmp_path), "not found")


def test_bad_inputs_give_one_line_and_write_nothing(world, tmp_path, run):
    good = str(next((world / "test" / "images").glob("*.png")))
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    bank, out = str(world / "bank"), str(tmp_path / "out")
    common = ["--bank", bank, "--preset", "handcrafted", "--out", out, "--device", "cpu"]
    cases = [
        (["segment", str(tmp_path / "missing.png"), "--classes", CLASSES, *common], "not found"),
        (["segment", good, str(tmp_path / "corrupt.jpg"), "--classes", CLASSES, *common], "cannot read image"),
        (["segment", good, "--classes", " , ", *common], "empty class name"),
        (["segment", good, "--classes", "car, car", *common], "duplicate"),
        (["segment", good, "--classes", "car, zebra", *common], "'zebra'"),
        (["segment", good, "--classes", "car", "--bank", str(tmp_path), "--preset", "handcrafted", "--out", out],
         "not a prototype bank"),
        (["segment", good, "--classes", "car", "--bank", bank, "--preset", "nope", "--out", out], "unknown preset"),
    ]
    for args, pattern in cases:
        one_line_error(run(*args, cwd=tmp_path), pattern)
    assert not Path(out).exists()


def test_bank_made_with_other_encoders_is_refused(world, tmp_path, run):
    bank = PrototypeBank.load(world / "bank")
    bank.manifest.feature_encoder = "facebook/dinov2-base"
    bank.save(tmp_path / "other")
    good = str(next((world / "test" / "images").glob("*.png")))
    r = run("segment", good, "--classes", "car", "--bank", str(tmp_path / "other"), "--preset", "handcrafted",
            "--out", str(tmp_path / "out"), cwd=tmp_path)
    one_line_error(r, "dinov2-base")


def test_bank_info_and_from_examples(world, tmp_path, run):
    r = run("bank", "from-examples", str(world / "train"), "--out", str(tmp_path / "b"), "--preset", "handcrafted",
            "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    info = run("bank", "info", str(tmp_path / "b"), "--classes", cwd=tmp_path)
    assert info.returncode == 0 and "protoseg/handcrafted-v1" in info.stdout and "sky" in info.stdout
    again = run("bank", "from-examples", str(world / "train"), "--out", str(tmp_path / "b"), "--preset",
                "handcrafted", cwd=tmp_path)
    one_line_error(again, "already exists")
    (tmp_path / "ex" / "images").mkdir(parents=True)
    (tmp_path / "ex" / "classes.txt").write_text("cat\n")
    one_line_error(run("bank", "from-examples", str(tmp_path / "ex"), "--out", str(tmp_path / "c"), "--preset",
                       "handcrafted", cwd=tmp_path), "no .jpg/.png images")


def test_usage_errors_are_reported_without_traceback(tmp_path, run):
    r = run("segment", "x.png", "--classes", "car", "--bank", "B", "--no-such-option", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "No such option" in r.stderr
    assert run("--help", cwd=tmp_path).returncode == 0


def test_model_weights_can_be_given_on_the_command_line(world, tmp_path, run):
    good = str(next((world / "test" / "images").glob("*.png")))
    r = run("segment", good, "--classes", "car", "--bank", str(world / "bank"), "--preset", "handcrafted",
            "--features", str(tmp_path / "missing-dinov2"), "--out", str(tmp_path / "out"), cwd=tmp_path)
    one_line_error(r, "missing-dinov2")
