"""Trust: protoseg never loses a user's file, never reports a stale number, never shows a traceback.

One test per reproduced finding; each fails on the code before the fix.
"""

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from protoseg import cli
from protoseg.atomic import GENERATED_MARKER, atomic_path
from protoseg.bank import PrototypeBank
from protoseg.config.segment import get_preset
from protoseg.errors import ProtosegError
from protoseg.models import load_features
from protoseg.models.hub import from_pretrained
from protoseg.offline.examples import bank_from_examples
from protoseg.partsworld import PARTS_WORLD_CLASSES, write_examples

CLASSES = ", ".join(PARTS_WORLD_CLASSES)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("trust")
    write_examples(root / "train", 4, seed=7, size=128)  # seed 7: every class appears
    write_examples(root / "test", 2, seed=6, size=128)
    bank_from_examples(root / "train", load_features("handcrafted"),
                       params=get_preset("handcrafted").superpixels).save(root / "bank")
    return root


@pytest.fixture
def run(capsys, monkeypatch, tmp_path):
    """The CLI in-process, as the console script runs it: returns (code, stdout, stderr)."""
    monkeypatch.setenv("PROTOSEG_CACHE", str(tmp_path / "cache"))

    def invoke(*args):
        capsys.readouterr()
        code = cli.run([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return invoke


def one_error(result, *patterns):
    code, _, err = result
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0, err
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error:"), err
    for pattern in patterns:
        assert pattern in lines[0], lines[0]
    return lines[0]


def snapshot(*roots):
    """Every file under ``roots`` with its size, mtime and content hash."""
    out = {}
    for root in roots:
        for p in sorted(Path(root).rglob("*")):
            if p.is_file():
                out[str(p)] = (p.stat().st_size, p.stat().st_mtime_ns, hashlib.md5(p.read_bytes()).hexdigest())
    return out


def seg_args(image, out, bank, *extra):
    return ["segment", image, "--classes", CLASSES, "--bank", bank, "--preset", "handcrafted", "--out", out,
            "--device", "cpu", *extra]


def copy_bank(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------ 1. outputs never overwrite inputs
def test_segment_refuses_to_overwrite_its_input(world, tmp_path, run):
    d = tmp_path / "d"
    d.mkdir()
    (d / "x.png").write_bytes((world / "test/images/scene_00000.png").read_bytes())
    before = snapshot(d)
    one_error(run(*seg_args(d / "x.png", d, world / "bank")), "would overwrite the input", "x.png")
    assert snapshot(d) == before


def test_segment_replaces_only_its_own_outputs_and_skips_up_to_date_images(world, tmp_path, run):
    image = world / "test/images/scene_00000.png"
    out = tmp_path / "out"
    out.mkdir()
    (out / "scene_00000_overlay.jpg").write_bytes(b"the user's own file")
    one_error(run(*seg_args(image, out, world / "bank")), "not written by protoseg")
    assert (out / "scene_00000_overlay.jpg").read_bytes() == b"the user's own file"
    (out / "scene_00000_overlay.jpg").unlink()
    code, stdout, err = run(*seg_args(image, out, world / "bank"))
    assert code == 0, err
    first = snapshot(out)
    code, stdout, _ = run(*seg_args(image, out, world / "bank"))  # unchanged request: nothing recomputed
    assert code == 0 and "up to date" in stdout and snapshot(out) == first
    code, _, _ = run(*seg_args(image, out, world / "bank", "--background"))  # another request: rewritten
    assert code == 0 and snapshot(out) != first
    assert json.loads((out / "scene_00000.json").read_text())["background"] == 255


# ------------------------------------------------------------------ 2. generated data only in protoseg's folders
def test_eval_never_regenerates_a_users_parts_world(world, tmp_path, run):
    pw = tmp_path / "pw"
    code, _, err = run("partsworld", pw, "--train", 1, "--test", 2, "--size", 64)
    assert code == 0, err
    (pw / "test/NOTES.txt").write_text("mine")
    before = snapshot(pw)
    code, _, err = run("eval", "--dataset", "parts-world", "--data-root", pw, "--bank", world / "bank",
                       "--preset", "handcrafted", "--limit", 1, "--out", tmp_path / "r.json", "--device", "cpu")
    assert code == 0, err
    assert snapshot(pw) == before  # NOTES.txt kept, still 2 test images, nothing rewritten


def test_partsworld_writes_only_folders_it_made(tmp_path, run):
    user = tmp_path / "user"
    (user / "train").mkdir(parents=True)
    (user / "train/photo.jpg").write_bytes(b"mine")
    one_error(run("partsworld", user, "--train", 1, "--test", 1, "--size", 64), "not generated by protoseg")
    assert sorted(p.name for p in user.rglob("*")) == ["photo.jpg", "train"]

    pw = tmp_path / "pw"
    assert run("partsworld", pw, "--train", 1, "--test", 1, "--size", 64)[0] == 0
    assert (pw / "train" / GENERATED_MARKER).is_file()
    first = snapshot(pw)
    code, stdout, _ = run("partsworld", pw, "--train", 1, "--test", 1, "--size", 64)
    assert code == 0 and "up to date" in stdout and snapshot(pw) == first
    assert run("partsworld", pw, "--train", 2, "--test", 1, "--size", 64)[0] == 0  # its own: regenerated
    assert len(list((pw / "train/images").iterdir())) == 2
    (pw / "train/notes.txt").write_text("mine")
    one_error(run("partsworld", pw, "--train", 3, "--test", 1, "--size", 64), "notes.txt")
    assert (pw / "train/notes.txt").read_text() == "mine" and len(list((pw / "train/images").iterdir())) == 2


def test_builds_never_delete_a_users_folder(world, tmp_path, run):
    caps = tmp_path / "caps.txt"
    caps.write_text("a cat on a sofa\n")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    one_error(run("build-bank", "--preset", "freeda-tiny", "--captions", caps, "--out", tmp_path / "b",
                  "--work-dir", mine), "holds no protoseg build")
    one_error(run("build-bank", "--preset", "freeda-tiny", "--captions", caps, "--out", mine, "--overwrite"),
              "not a prototype bank")
    with pytest.raises(ProtosegError, match="not a prototype bank"):
        PrototypeBank.load(world / "bank").save(mine, overwrite=True)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"] and not (tmp_path / "b").exists()


# ------------------------------------------------------------------ 3. resume only what is provably the same
def _eval_predictions(run, world, pred, out):
    code, stdout, err = run("eval", "--dataset", "examples", "--data-root", world / "test", "--predictions", pred,
                            "--out", out)
    assert code == 0, err
    return json.loads(Path(out).read_text())["mIoU"], err


def test_eval_rescores_predictions_whose_files_changed(world, tmp_path, run):
    pred = tmp_path / "pred"
    pred.mkdir()
    for mask in (world / "test/masks").iterdir():
        (pred / mask.name).write_bytes(mask.read_bytes())
    miou, _ = _eval_predictions(run, world, pred, tmp_path / "r.json")
    assert miou == 100.0
    for p in pred.iterdir():
        Image.fromarray(np.zeros_like(np.asarray(Image.open(p)))).save(p)
    miou, err = _eval_predictions(run, world, pred, tmp_path / "r.json")
    assert miou < 50 and "note:" in err and "inputs.predictions changed" in err and "starting fresh" in err
    assert len(list(tmp_path.glob("r.run-*"))) == 1  # the same run folder, started fresh


def test_eval_reruns_when_the_bank_is_rebuilt_in_place(world, tmp_path, run):
    bank = copy_bank(world / "bank", tmp_path / "bank")
    args = ["eval", "--dataset", "examples", "--data-root", world / "test", "--bank", bank, "--preset",
            "handcrafted", "--out", tmp_path / "r.json", "--device", "cpu"]
    assert run(*args)[0] == 0
    good = json.loads((tmp_path / "r.json").read_text())["mIoU"]
    old = PrototypeBank.load(bank, mmap=False)
    noise = np.random.default_rng(0).normal(size=old.prototypes.shape).astype(np.float32)
    PrototypeBank.create(noise, old.table, method="examples", feature_encoder=old.manifest.feature_encoder
                         ).save(bank, overwrite=True)
    code, _, err = run(*args)
    assert code == 0 and "inputs.bank changed" in err
    assert json.loads((tmp_path / "r.json").read_text())["mIoU"] != good


def test_bank_id_is_a_content_hash(world, tmp_path):
    bank = PrototypeBank.load(world / "bank")
    again = copy_bank(world / "bank", tmp_path / "b")
    assert bank.manifest.bank_id and len(bank.manifest.bank_id) == 64
    PrototypeBank.load(again, mmap=False).save(tmp_path / "resaved")
    assert PrototypeBank.load(tmp_path / "resaved").manifest.bank_id == bank.manifest.bank_id  # same contents
    sub = PrototypeBank.load(again).subset(np.arange(3))
    sub.save(tmp_path / "sub")
    assert PrototypeBank.load(tmp_path / "sub").manifest.bank_id != bank.manifest.bank_id


def test_build_description_stamps_the_captions_file(tmp_path, monkeypatch, caplog):
    import protoseg.offline as offline

    seen = []
    monkeypatch.setattr(offline, "prepare_work_dir", lambda work, description: seen.append(description)
                        or (_ for _ in ()).throw(RuntimeError("stop")))
    captions = tmp_path / "captions.txt"
    captions.write_text("a cat on a sofa\n")
    preset = offline.get_build_preset("freeda-tiny")
    with pytest.raises(RuntimeError, match="stop"):
        offline.build_bank(preset, tmp_path / "b", captions=captions)
    os.utime(captions, ns=(time.time_ns(), time.time_ns() + 10**9))
    with pytest.raises(RuntimeError, match="stop"):
        offline.build_bank(preset, tmp_path / "b", captions=captions)
    assert seen[0]["inputs"]["captions"]["path"] == str(captions.resolve())
    assert seen[0]["inputs"]["captions"] != seen[1]["inputs"]["captions"]  # touched file: another build


# ------------------------------------------------------------------ 4. no tracebacks: validated up front
@pytest.mark.parametrize("device, message", [("cuda", "--device cpu"), ("gpu", "unknown device 'gpu'"),
                                             ("cuda:x", "unknown device")])
def test_bad_devices(world, tmp_path, run, device, message):
    if device == "cuda" and __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "out"
    one_error(run(*seg_args(world / "test/images/scene_00000.png", out, world / "bank")[:-2], "--device", device),
              message)
    assert not out.exists()


def test_bad_output_paths(world, tmp_path, run):
    image = world / "test/images/scene_00000.png"
    (tmp_path / "afile").write_text("x")
    one_error(run(*seg_args(image, tmp_path / "afile", world / "bank")), "is a file, not a folder")
    one_error(run(*seg_args(image, "/proc/protoseg-out", world / "bank")), "cannot write --out")
    assert (tmp_path / "afile").read_text() == "x" and not Path("/proc/protoseg-out").exists()
    one_error(run("eval", "--dataset", "examples", "--data-root", world / "test", "--predictions",
                  world / "test/masks", "--out", tmp_path), "is a folder")


def test_damaged_banks_are_named_before_anything_runs(world, tmp_path, run):
    rng = np.random.default_rng(0)
    keyed = PrototypeBank.create(rng.normal(size=(6, 4)).astype(np.float32), {"label": ["a", "b", "c"] * 2},
                                 method="test", feature_encoder="x", keys=rng.normal(size=(6, 3)),
                                 text_encoder="y")
    keyed.save(tmp_path / "k")
    truncated = copy_bank(tmp_path / "k", tmp_path / "truncated")
    data = (truncated / "keys.faiss").read_bytes()
    (truncated / "keys.faiss").write_bytes(data[: len(data) // 2])
    one_error(run("bank", "info", truncated), "keys.faiss is unreadable", "delete keys.faiss")
    (truncated / "keys.faiss").unlink()  # the fix the message gives works
    assert run("bank", "info", truncated)[0] == 0

    listed = copy_bank(world / "bank", tmp_path / "listed")
    (listed / "manifest.json").write_text("[1, 2]")
    one_error(run("bank", "info", listed), "JSON list, not an object")
    wrong_type = copy_bank(world / "bank", tmp_path / "wrong-type")
    manifest = json.loads((wrong_type / "manifest.json").read_text())
    (wrong_type / "manifest.json").write_text(json.dumps({**manifest, "count": "many"}))
    one_error(run("bank", "info", wrong_type), "'count'", "expected int")

    short = copy_bank(tmp_path / "k", tmp_path / "short")
    np.save(short / "keys.npy", np.load(short / "keys.npy")[:-1])
    (short / "keys.faiss").unlink()
    with pytest.raises(ProtosegError, match="keys.npy has shape"):
        PrototypeBank.load(short)
    rows = copy_bank(tmp_path / "k", tmp_path / "rows")
    np.save(rows / "prototypes.npy", np.load(rows / "prototypes.npy")[:-1])
    with pytest.raises(ProtosegError, match="prototypes.npy has shape"):
        PrototypeBank.load(rows)


def test_a_class_whose_prototypes_are_all_nan_is_named_before_segmenting(world, tmp_path, run):
    bank = copy_bank(world / "bank", tmp_path / "nan")
    loaded = PrototypeBank.load(bank, mmap=False)
    protos = np.asarray(loaded.prototypes).copy()
    protos[loaded.rows_of("car")] = np.nan
    np.save(bank / "prototypes.npy", protos)
    out = tmp_path / "out"
    one_error(run(*seg_args(world / "test/images/scene_00000.png", out, bank)), "'car'", "NaN or infinite")
    assert not out.exists()


def test_more_than_255_classes_give_16_bit_label_maps(world, tmp_path, run):
    names = [f"c{i}" for i in range(300)]
    dim = load_features("handcrafted").dim
    rng = np.random.default_rng(1)
    PrototypeBank.create(rng.normal(size=(300, dim)).astype(np.float32), {"label": names}, method="examples",
                         feature_encoder=load_features("handcrafted").encoder_id).save(tmp_path / "b300")
    out = tmp_path / "out"
    code, _, err = run("segment", world / "test/images/scene_00000.png", "--classes", ", ".join(names), "--bank",
                       tmp_path / "b300", "--preset", "handcrafted", "--out", out, "--device", "cpu", "--background",
                       "--threshold", "0.99")
    assert code == 0, err
    label = Image.open(out / "scene_00000.png")
    values = np.asarray(label)
    assert label.mode == "I;16" and values.dtype == np.uint16
    assert set(np.unique(values)) <= set(range(300)) | {65535}
    assert json.loads(label.text["protoseg"])["classes"] == names
    sidecar = json.loads((out / "scene_00000.json").read_text())
    assert sidecar["background"] == 65535 and sidecar["label_bits"] == 16 and sidecar["classes"] == names


def test_overlay_legend_moves_to_a_side_panel_when_it_does_not_fit():
    from protoseg.viz import overlay, palette

    image = np.full((64, 80, 3), 128, np.uint8)
    few = overlay(image, np.zeros((64, 80), int), ["a", "b"])
    assert few.size == (80, 64)  # a short legend stays inside the image
    labels = np.arange(64 * 80).reshape(64, 80) // 100  # 52 classes present, 14 px a legend row
    many = np.asarray(overlay(image, labels, [f"class {i}" for i in range(52)]))
    assert many.shape[0] == 64 and many.shape[1] > 80 + 3 * 40  # several columns right of the image
    blend = np.clip(0.45 * 128 + 0.55 * palette(52).astype(np.float32)[labels] + 0.5, 0, 255).astype(np.uint8)
    assert np.abs(many[:, :80].astype(int) - blend).max() <= 1  # the image itself is not covered
    assert many[:, 80:].max() > 200  # legend text in the panel


def test_invalid_dtypes_and_a_threshold_without_background(world, tmp_path, run):
    image = world / "test/images/scene_00000.png"
    one_error(run(*seg_args(image, tmp_path / "o", world / "bank", "--dtype", "float64")), "unknown dtype")
    one_error(run("bank", "from-examples", world / "train", "--out", tmp_path / "b", "--preset", "handcrafted",
                  "--device", "cpu", "--dtype", "float64"), "float16 or float32")
    one_error(run("build-bank", "--preset", "freeda-tiny", "--captions", image, "--out", tmp_path / "fb",
                  "--dtype", "float64"), "unknown dtype")
    one_error(run(*seg_args(image, tmp_path / "o", world / "bank", "--threshold", "0.9")), "add --background")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ 5. smaller findings
def test_a_folder_given_as_input_expands_to_its_images(world, tmp_path, run):
    code, stdout, err = run(*seg_args(world / "test/images", tmp_path / "out", world / "bank"))
    assert code == 0 and "2 label map(s)" in stdout, err
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["scene_00000.png", "scene_00001.png"]
    empty = tmp_path / "empty"
    empty.mkdir()
    one_error(run(*seg_args(empty, tmp_path / "out2", world / "bank")), "holds no images")


def test_unknown_manifest_keys_of_a_newer_minor_version_are_tolerated(world, tmp_path):
    bank = copy_bank(world / "bank", tmp_path / "newer")
    manifest = json.loads((bank / "manifest.json").read_text())
    (bank / "manifest.json").write_text(json.dumps({**manifest, "new_field": {"x": 1}}))
    assert PrototypeBank.load(bank).classes == PrototypeBank.load(world / "bank").classes


def test_interrupted_eval_says_a_rerun_resumes_and_then_resumes(world, tmp_path, run, monkeypatch):
    import protoseg.evaluate as ev

    real = ev.intersect_and_union
    calls = []

    def interrupt_on_second(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(ev, "intersect_and_union", interrupt_on_second)
    pred = world / "test/masks"
    args = ["eval", "--dataset", "examples", "--data-root", world / "test", "--predictions", pred, "--out",
            tmp_path / "r.json", "--shard-size", 1, "--workers", 0]
    code, _, err = run(*args)
    lines = [line for line in err.splitlines() if line.strip() and "━" not in line]
    assert code == 130 and lines == [cli.INTERRUPTED] and "rerun" in cli.INTERRUPTED
    (run_dir,) = tmp_path.glob("r.run-*")
    assert sorted(p.name for p in run_dir.iterdir()) == ["run.json", "shard-00000.npz"]  # no partial file
    assert not (tmp_path / "r.json").exists()
    calls.clear()
    code, _, err = run(*args)
    assert code == 0 and len(calls) == 1  # the finished shard was kept
    assert json.loads((tmp_path / "r.json").read_text())["mIoU"] == 100.0


def test_outputs_follow_the_users_umask(world, tmp_path, run):
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("x")
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
        assert run(*seg_args(world / "test/images/scene_00000.png", tmp_path / "out", world / "bank"))[0] == 0
        for p in (tmp_path / "out").iterdir():
            assert p.stat().st_mode & 0o777 == 0o644, p
        PrototypeBank.load(world / "bank").save(tmp_path / "bank")
        assert (tmp_path / "bank").stat().st_mode & 0o777 == 0o755
        assert {p.stat().st_mode & 0o777 for p in (tmp_path / "bank").iterdir()} == {0o644}
        os.umask(0o027)
        with atomic_path(tmp_path / "b.txt") as tmp:
            tmp.write_text("x")
        assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_offline_weights_fail_fast_and_name_hf_download(monkeypatch):
    import protoseg.models.hub as hub

    calls = []

    def loader(name, **kwargs):
        calls.append(kwargs.get("local_files_only", False))
        raise OSError("not cached")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "hub_reachable", lambda: pytest.fail("offline mode must not touch the network"))
    start = time.perf_counter()
    with pytest.raises(ProtosegError, match="HF_HUB_OFFLINE is set.*`hf download facebook/dinov2-base --local-dir"):
        from_pretrained(loader, "facebook/dinov2-base")
    assert calls == [True] and time.perf_counter() - start < 1
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    calls.clear()
    with pytest.raises(ProtosegError, match="cannot be reached") as err:
        from_pretrained(loader, "facebook/dinov2-base")
    assert calls == [True] and "huggingface-cli" not in str(err.value)  # no download attempt, no retries
    cached = from_pretrained(lambda name, **kw: (name, kw), "facebook/dinov2-base", revision="main")
    assert cached == ("facebook/dinov2-base", {"revision": "main", "local_files_only": True})


def test_library_notices_are_silent_without_a_listener(tmp_path, capsys):
    from protoseg.runs import prepare_work_dir

    prepare_work_dir(tmp_path / "w", {"a": 1})
    prepare_work_dir(tmp_path / "w", {"a": 2})
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert logging.getLogger("protoseg").handlers  # a NullHandler keeps Python's last-resort printer away
