"""Property: every CLI command, given bad arguments, exits non-zero with one ``error:`` line, no traceback,
and writes nothing.

A catalogue of bad values (missing paths, files where folders are expected, folders where files are
expected, corrupt files and banks, empty or duplicate classes, bad devices, dtypes and numbers, outputs
that would replace inputs) is drawn from with a seeded generator: each trial takes a valid command line
and spoils one or two of its arguments (or adds a flag that makes it invalid). The valid command lines
themselves are checked to succeed, so a failure is always caused by the spoiled argument.
"""

import json
import random
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
from PIL import Image

from protoseg import cli
from protoseg.bank import KeyIndex, PrototypeBank
from protoseg.models import load_features
from protoseg.worlds import render_scene, scene_info, write_examples

TRIALS_PER_CHUNK = 60
CHUNKS = 4


def make_sandbox(root: Path) -> Path:
    """Valid inputs for every command, plus the bad files of the catalogue."""
    rng = np.random.default_rng(0)
    scene, _ = render_scene(np.random.default_rng(0), 48)  # the handcrafted preset takes parts-world scenes
    Image.fromarray(scene).save(root / "img.png", pnginfo=scene_info(0, 0))
    Image.fromarray((rng.random((48, 64, 3)) * 255).astype(np.uint8)).save(root / "photo.png")  # not a scene
    (root / "imgs").mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(root / "imgs" / name)
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "empty.txt").write_bytes(b"")
    (root / "note.txt").write_text("a user's note\n")
    (root / "emptydir").mkdir()
    (root / "userdir").mkdir()
    (root / "userdir" / "keep.txt").write_text("mine\n")
    (root / "caps.txt").write_text("a cat on a sofa\na dog on the grass\n")

    features = load_features("handcrafted")
    dim = features.dim

    def bank(path, labels, keys=False):
        protos = rng.normal(size=(len(labels), dim)).astype(np.float32)
        key = rng.normal(size=(len(labels), 8)).astype(np.float32) if keys else None
        PrototypeBank.create(protos, {"label": labels}, method="examples", feature_encoder=features.encoder_id,
                             keys=key, text_encoder="tiny-clip" if keys else None).save(path)
        return path

    bank(root / "bank", ["sky", "car"] * 3)
    bank(root / "bank2", ["sky", "car"] * 2)
    bank(root / "bank3", ["tree"] * 2)
    keyed = bank(root / "keybank", ["sky", "car"] * 2, keys=True)
    KeyIndex.build(np.load(keyed / "keys.npy")).write(keyed / "keys.faiss")  # as older banks carry it
    for name in ("listbank", "truncbank", "shortbank", "nanbank"):
        (root / name).mkdir()
        for f in keyed.iterdir():
            (root / name / f.name).write_bytes(f.read_bytes())
    (root / "listbank" / "manifest.json").write_text("[]")
    data = (root / "truncbank" / "keys.faiss").read_bytes()
    (root / "truncbank" / "keys.faiss").write_bytes(data[:40])
    np.save(root / "shortbank" / "keys.npy", np.load(root / "shortbank" / "keys.npy")[:-1])
    (root / "shortbank" / "keys.faiss").unlink()
    protos = np.load(root / "nanbank" / "prototypes.npy")
    protos[1::2] = np.nan  # every "car" prototype
    np.save(root / "nanbank" / "prototypes.npy", protos)

    ex = root / "ex"
    (ex / "images").mkdir(parents=True)
    (ex / "masks").mkdir()
    (ex / "classes.txt").write_text("sky\ncar\n")
    Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(ex / "images" / "a.png")
    Image.fromarray((rng.random((32, 32)) < 0.5).astype(np.uint8)).save(ex / "masks" / "a.png")
    (root / "ex_noimg").mkdir()
    (root / "ex_noimg" / "classes.txt").write_text("sky\n")
    for name, size in (("pred", (32, 32)), ("pred_size", (8, 8))):
        (root / name).mkdir()
        Image.fromarray(np.zeros(size[::-1], np.uint8)).save(root / name / "a.png")
    (root / "pred_corrupt").mkdir()
    (root / "pred_corrupt" / "a.png").write_bytes(b"garbage")

    emb = root / "release" / "emb"
    emb.mkdir(parents=True)
    vectors = rng.normal(size=(3, dim)).astype(np.float32)
    for i, v in enumerate(vectors):
        np.save(emb / f"{i:03d}.npy", v)
    index = faiss.IndexFlatIP(8)
    index.add(rng.normal(size=(3, 8)).astype(np.float32))
    faiss.write_index(index, str(root / "release" / "knn.index"))

    coco = root / "coco" / "annotations" / "val2017"
    coco.mkdir(parents=True)
    Image.fromarray(np.full((8, 8), 3, np.uint8)).save(coco / "000001.png")

    write_examples(root / "pwtiny" / "train", 4, seed=7, size=96)  # seed 7: every class appears
    write_examples(root / "pwtiny" / "test", 1, seed=6, size=64)
    (root / "pwuser" / "train").mkdir(parents=True)
    (root / "pwuser" / "train" / "photo.jpg").write_bytes(b"mine")
    return root


# ---------------------------------------------------------------------------------------- catalogue
NO_CUDA = not torch.cuda.is_available()
BAD = {
    "missing": ["missing.png", "no/such/folder"],
    "file_for_dir": ["note.txt", "img.png"],
    "dir_for_file": ["emptydir", "imgs"],
    "corrupt_file": ["corrupt.png", "empty.txt"],
    "bad_bank": ["listbank", "truncbank", "shortbank", "emptydir", "note.txt", "missing-bank"],
    "classes": ["", " , ", "car, car", "background", "car,,sky"],
    "device": ["gpu", "tpu", "cuda:x", "", *(["cuda", "cuda:3"] if NO_CUDA else []),
               *(["mps"] if not torch.backends.mps.is_available() else [])],
    "dtype": ["float64", "int8", "fp8", ""],
    "bank_dtype": ["float64", "bfloat16", "int8"],
    "nonpositive": ["0", "-1", "-7"],
    "not_int": ["abc", "1.5", ""],
    "out_dir": ["note.txt", "/proc/protoseg-bad-input"],
    "out_file": ["emptydir", "/proc/protoseg-bad-input/r.json"],
    "bank_out": ["userdir", "bank", "note.txt", "/proc/protoseg-bad-input"],
    "work_dir": ["userdir", "note.txt"],
    "preset": ["nope", ""],
}


def slot(option, good, *kinds, extra=()):
    """An argument: ``option`` (``None`` = positional), its valid value, and the kinds of bad values."""
    return {"option": option, "good": good, "bad": [v for k in kinds for v in BAD[k]] + list(extra)}


COMMANDS = {
    "segment": (["segment"], {
        "image": slot(None, "img.png", "missing", "corrupt_file", extra=["emptydir", "photo.png"]),
        "classes": slot("--classes", "sky, car", "classes", extra=["car, zebra"]),  # zebra: not in the bank
        "bank": slot("--bank", "bank", "bad_bank", extra=["nanbank"]),
        "preset": slot("--preset", "handcrafted", "preset"),
        "out": slot("--out", "out-seg", "out_dir", extra=["."]),  # "." holds img.png: would replace the input
        "device": slot("--device", "cpu", "device"),
        "dtype": slot("--dtype", "float32", "dtype"),
    }, [["--threshold", "0.5"], ["--no-such-flag"], ["-q", "-v"]]),
    "bank info": (["bank", "info"], {"bank": slot(None, "bank", "bad_bank")},
                  [["--classes", "x"], ["--json", "--quiet", "--verbose"]]),
    "bank from-examples": (["bank", "from-examples"], {
        "examples": slot(None, "ex", "missing", "file_for_dir", extra=["emptydir", "ex_noimg"]),
        "out": slot("--out", "new-bank", "bank_out"),
        "preset": slot("--preset", "handcrafted", "preset"),
        "device": slot("--device", "cpu", "device"),
        "storage_dtype": slot("--storage-dtype", "float16", "bank_dtype"),
    }, []),
    "bank merge": (["bank", "merge"], {
        "a": slot(None, "bank", "bad_bank"),
        "b": slot(None, "bank2", "bad_bank", extra=["keybank"]),  # keys in one bank only
        "out": slot("--out", "merged", "bank_out"),
    }, []),
    "bank extend": (["bank", "extend"], {
        "bank": slot(None, "bank", "bad_bank"),
        "new": slot(None, "bank3", "bad_bank", extra=["bank2"]),  # classes already in the bank
        "out": slot("--out", "extended", extra=["userdir", "bank2", "note.txt", "/proc/protoseg-bad-input"]),
    }, []),
    "bank import-freeda": (["bank", "import-freeda"], {
        "embeddings": slot(None, "release/emb", "missing", "file_for_dir", extra=["emptydir"]),
        "index": slot(None, "release/knn.index", "missing", "dir_for_file", "corrupt_file"),
        "out": slot("--out", "imported", "bank_out"),
    }, []),
    "eval bank": (["eval"], {
        "dataset": slot("--dataset", "examples", extra=["nope", "voc21", "ade20k"]),
        "data": slot("--data-root", "ex", "missing", "file_for_dir", extra=["emptydir"]),
        "bank": slot("--bank", "bank", "bad_bank", extra=["nanbank"]),
        "preset": slot("--preset", "handcrafted", "preset"),
        "limit": slot("--limit", "1", "nonpositive", "not_int"),
        "shard": slot("--shard-size", "2", "nonpositive", "not_int"),
        "out": slot("--out", "r.json", "out_file", extra=["ex/masks/a.png"]),
        "device": slot("--device", "cpu", "device"),
        "beta": slot("--beta-source", "paper", extra=["x", "papers"]),
        "save": slot("--save-predictions", "saved", extra=["note.txt", "ex/masks"]),  # would replace the truth
    }, [["--run-dir", "userdir"], ["--run-dir", "note.txt"], ["--predictions", "pred"], ["--workers", "-1"]]),
    "eval predictions": (["eval"], {
        "dataset": slot("--dataset", "examples", extra=["nope", "cityscapes"]),
        "data": slot("--data-root", "ex", "missing", "file_for_dir"),
        "pred": slot("--predictions", "pred", "missing", "file_for_dir",
                     extra=["emptydir", "pred_size", "pred_corrupt"]),
        "out": slot("--out", "r2.json", "out_file", extra=["pred/a.png", "r2.md"]),
    }, [["--device", "cpu"], ["--save-predictions", "saved2"]]),
    "ablate": (["ablate"], {
        "data": slot("--data-root", "pwtiny", "file_for_dir"),
        "limit": slot("--limit", "1", "nonpositive", "not_int"),
        "out": slot("--out", "ablate.md", "out_file"),
    }, [["--workers", "-1"]]),
    "convert-coco-object": (["convert-coco-object"], {
        "data": slot("--data-root", "coco", "missing", "file_for_dir", extra=["emptydir"]),
        "split": slot("--split", "val2017", extra=["../x", "nope", ""]),
        "workers": slot("--workers", "2", "nonpositive", "not_int"),
    }, []),
    "build-bank": (["build-bank"], {
        "preset": slot("--preset", "dpsm-tiny", "preset"),
        "classes": slot("--classes", "cat, dog", "classes"),
        "prompts": slot("--prompts", "naive", extra=["nope"]),
        "out": slot("--out", "built", "bank_out"),
        "shard": slot("--shard-size", "4", "nonpositive", "not_int"),
        "device": slot("--device", "cpu", "device"),
        "diffusion_dtype": slot("--diffusion-dtype", "float32", "dtype"),
        "k": slot("--k", "1", "nonpositive", "not_int"),
        "kappa": slot("--kappa", "1", "nonpositive"),
        "work": slot("--work-dir", "work", "work_dir"),
    }, [["--method", "freeda"], ["--method", "nope"], ["--captions", "caps.txt"], ["--clustering", "nope"],
        ["--classes-file", "note.txt"]]),
    "partsworld": (["partsworld"], {
        "out": slot(None, "pw-new", "out_dir", extra=["pwuser"]),
        "train": slot("--train", "1", "nonpositive", "not_int"),
        "test": slot("--test", "1", "nonpositive"),
        "size": slot("--size", "64", "nonpositive", extra=["5", "abc"]),
    }, []),
}


def argv(command: str, values: dict[str, str], extras: list[str]) -> list[str]:
    head, slots, _ = COMMANDS[command]
    args = list(head)
    for name, spec in slots.items():
        args += [values[name]] if spec["option"] is None else [spec["option"], values[name]]
    return args + extras


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def invoke(capsys, args):
    capsys.readouterr()
    code = cli.run(args)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    monkeypatch.setenv("PROTOSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.chdir(tmp_path)
    return make_sandbox(tmp_path)


def trials(seed: int, n: int):
    """``n`` spoiled command lines: ``(command, argv, what was spoiled)``, reproducible from ``seed``."""
    rng = random.Random(seed)
    names = sorted(COMMANDS)
    for i in range(n):
        command = names[(seed * n + i) % len(names)]  # every command in every chunk
        _, slots, bad_extras = COMMANDS[command]
        values = {name: spec["good"] for name, spec in slots.items()}
        spoiled, extras = [], []
        if bad_extras and rng.random() < 0.2:
            extras = list(rng.choice(bad_extras))
            spoiled.append(" ".join(extras))
        candidates = [name for name, spec in slots.items() if spec["bad"]]
        for name in rng.sample(candidates, k=min(len(candidates), rng.choice((1, 1, 2)))) if not extras else []:
            values[name] = rng.choice(slots[name]["bad"])
            spoiled.append(f"{name}={values[name]!r}")
        yield command, argv(command, values, extras), spoiled


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_bad_arguments_fail_in_one_line_and_write_nothing(sandbox, capsys, chunk):
    before = snapshot(sandbox)
    seen = set()
    for command, args, spoiled in trials(chunk, TRIALS_PER_CHUNK):
        code, _, err = invoke(capsys, args)
        lines = [line for line in err.splitlines() if line.strip()]
        context = f"{command} with {spoiled}: {args}\n{err}"
        assert code != 0, context
        assert "Traceback" not in err, context
        assert len(lines) == 1 and lines[0].startswith("error: "), context
        if "--no-such-flag" not in args and "--classes x" not in spoiled:  # the spoiled value, not a typo
            assert "No such option" not in lines[0] and "unexpected extra argument" not in lines[0], context
        assert snapshot(sandbox) == before, f"{context}\nwrote: {set(snapshot(sandbox)) ^ set(before)}"
        seen.add(command)
    assert seen == set(COMMANDS)
    assert not Path("/proc/protoseg-bad-input").exists()


def test_the_valid_command_lines_succeed(sandbox, capsys, monkeypatch):
    """The baselines the trials spoil are valid: each runs (build-bank up to the build itself)."""
    import protoseg.offline

    built = []
    real_build = protoseg.offline.build_bank

    def fake_build(preset, source, out, *args, **kwargs):  # the synthesis itself is covered by test_build_cli
        if preset.method not in ("freeda", "dpsm"):  # examples and imports run for real
            return real_build(preset, source, out, *args, **kwargs)
        built.append(out)
        PrototypeBank.load("bank").save(out)
        return out

    monkeypatch.setattr(protoseg.offline, "build_bank", fake_build)
    for command, (_, slots, _) in COMMANDS.items():
        args = argv(command, {name: spec["good"] for name, spec in slots.items()}, [])
        code, _, err = invoke(capsys, args)
        assert code == 0, f"{args}\n{err}"
    assert built == [Path("built")]
    assert json.loads(Path("r.json").read_text())["images"] == 1
    assert (Path("coco/annotations/val2017/000001_instanceTrainIds.png")).is_file()
