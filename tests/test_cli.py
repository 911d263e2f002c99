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


# ------------------------------------------------------------------ options every command shares
def _commands(group=None, path=()):
    """Every command of the CLI: ``(path, click command)``."""
    import typer

    group = group or typer.main.get_command(cli.app)
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


def test_every_command_takes_quiet_and_verbose_and_one_device_option():
    device_helps = set()
    for path, command in _commands():
        options = {opt for param in command.params for opt in param.opts}
        assert {"-q", "--quiet", "-v", "--verbose"} <= options, path
        device_helps |= {param.help for param in command.params if param.name == "device"}
    assert len(device_helps) == 1 and all(word in next(iter(device_helps)) for word in ("cuda:N", "mps", "auto"))


def test_the_three_precisions_have_distinct_names():
    options = {" ".join(path): {opt for param in command.params for opt in param.opts} for path, command in _commands()}
    assert "--dtype" in options["segment"] and "--storage-dtype" not in options["segment"]
    assert "--storage-dtype" in options["bank from-examples"] and "--dtype" not in options["bank from-examples"]
    assert "--diffusion-dtype" in options["build-bank"] and "--dtype" not in options["build-bank"]


def test_version(tmp_path):
    from protoseg.version import __version__

    r = run_process("--version", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == f"protoseg {__version__}\n" and r.stderr == ""


def test_presets_hide_the_test_presets_unless_all(tmp_path, run):
    import json

    from protoseg.config.segment import PRESETS

    shown = run("presets", cwd=tmp_path)
    assert shown.returncode == 0 and "freeda-b" in shown.stdout and "--all" in shown.stdout
    for test_preset in ("handcrafted", "handcrafted-dpsm", "freeda-tiny", "dpsm-tiny"):
        assert f"\n{test_preset} " not in shown.stdout and not shown.stdout.startswith(f"{test_preset} ")
    everything = run("presets", "--all", cwd=tmp_path)
    assert all(f"{name} " in everything.stdout for name in PRESETS)
    listed = json.loads(run("presets", "--json", cwd=tmp_path).stdout)
    assert {p["name"] for p in listed} == {"freeda-b", "freeda-l", "dpsm"} and not any(p["test"] for p in listed)
    listed = json.loads(run("presets", "--all", "--json", cwd=tmp_path).stdout)
    assert {p["name"] for p in listed} == set(PRESETS)
    assert {p["name"] for p in listed if p["test"]} == {"handcrafted", "handcrafted-dpsm", "freeda-tiny", "dpsm-tiny"}


def test_json_of_bank_info_and_segment(world, tmp_path, run):
    import json

    info = run("bank", "info", str(world / "bank"), "--json", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout) == json.loads(json.dumps(PrototypeBank.load(world / "bank").summary(),
                                                            default=lambda x: x.item()))
    images = sorted(str(p) for p in (world / "test" / "images").glob("*.png"))
    args = ("segment", *images, "--classes", CLASSES, "--bank", str(world / "bank"), "--preset", "handcrafted",
            "--out", str(tmp_path / "out"), "--device", "cpu", "--json")
    first = run(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {"out": str(tmp_path / "out"), "written": images, "skipped": [],
                                        "generated": [], "diagnostics": {}}
    again = run_process(*args, cwd=tmp_path)  # a real process: nothing but the document on stdout
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["skipped"] == images


def test_quiet_and_verbose_before_or_after_the_command(world, tmp_path, run):
    import logging

    image = str(next((world / "test" / "images").glob("*.png")))
    base = ("--classes", CLASSES, "--bank", str(world / "bank"), "--preset", "handcrafted", "--device", "cpu")
    for n, flags in enumerate((("-q", "segment"), ("segment", "--quiet"), ("-v", "segment"), ("segment", "-vv"))):
        r = run(flags[0], *flags[1:], image, *base, "--out", str(tmp_path / f"out{n}"), cwd=tmp_path)
        assert r.returncode == 0 and r.stdout.startswith("wrote 1 label map"), r.stderr
    for flags in (("-q", "segment", "-v"), ("segment", "-q", "--verbose")):
        r = run(flags[0], flags[1], image, *base, flags[2], "--out", str(tmp_path / "no"), cwd=tmp_path)
        one_line_error(r, "not both")
    assert not (tmp_path / "no").exists()

    def notice():  # a notice of the library, as a resumed run that starts fresh prints it
        logging.getLogger("protoseg.runs").warning("a notice")
        logging.getLogger("protoseg.runs").info("some detail")

    from protoseg.worlds import cache

    for flags, expected in ((("-q",), []), ((), ["note: a notice"]),
                            (("-v",), ["note: a notice", "info: protoseg.runs: some detail"])):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(cache, "write_world", lambda *a: (notice(), [])[1])
            r = run("partsworld", str(tmp_path / "pw"), *flags, cwd=tmp_path)
        assert r.returncode == 0 and r.stderr.splitlines() == expected, r.stderr
    assert logging.getLogger("protoseg").level == logging.NOTSET  # back to the default after each command


def test_model_loading_keeps_the_hub_download_bars(monkeypatch):
    import huggingface_hub
    import transformers

    from protoseg.commands import verbosity

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_PROGRESS_BARS", None)
    monkeypatch.setattr(sys.modules["huggingface_hub.utils.tqdm"], "HF_HUB_DISABLE_PROGRESS_BARS", None)
    with verbosity.command_output():
        verbosity.model_library_output()
        assert not huggingface_hub.utils.are_progress_bars_disabled()  # downloads show their progress
        assert not transformers.utils.logging.is_progress_bar_enabled()  # weight loading does not
        assert transformers.utils.logging.get_verbosity() == 40  # nor its load warnings
    with verbosity.command_output():
        verbosity.set_verbosity(True, 0)
        verbosity.model_library_output()
        assert huggingface_hub.utils.are_progress_bars_disabled()
    with verbosity.command_output():
        verbosity.set_verbosity(False, 1)
        verbosity.model_library_output()
        assert transformers.utils.logging.get_verbosity() == 20
    assert not huggingface_hub.utils.are_progress_bars_disabled()
