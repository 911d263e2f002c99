"""`protoseg segment --generate-missing` / `Segmenter.ensure_classes`: prototypes for classes a bank lacks,
made with the bank's recorded build recipe, added atomically, reused afterwards."""

import json
import shutil

import numpy as np
import pytest
from build_fixtures import tiny_cache
from conftest import assert_one_error
from PIL import Image

from protoseg.bank import PrototypeBank
from protoseg.errors import ProtosegError
from protoseg.generate.captions import noun_captions
from protoseg.offline import DpsmSource, FreedaSource, RunOptions, build_bank, get_build_preset
from protoseg.offline.ondemand import bank_recipe, generate_missing, generate_work_dir, missing_classes
from protoseg.segment import Segmenter
from protoseg.viz import read_label_classes
from protoseg.worlds import write_examples


@pytest.fixture(scope="module")
def banks(tmp_path_factory):
    """A tiny DPSM bank of "cat" (2 shards) and a tiny FreeDA bank from two captions, built once."""
    root = tmp_path_factory.mktemp("ondemand")
    with tiny_cache(root / "cache"):
        dpsm = get_build_preset("dpsm-tiny", steps=2)
        build_bank(dpsm, DpsmSource(classes=("cat",)), root / "dpsm", RunOptions(shard_size=4, seed=3))
        (root / "captions.txt").write_text("a cat on a sofa\na dog in a park\n")
        freeda = get_build_preset("freeda-tiny", steps=2)
        build_bank(freeda, FreedaSource(captions=root / "captions.txt"), root / "freeda", RunOptions(seed=5))
    rgb = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(root / "photo.png")
    return root


@pytest.fixture
def work(banks, tmp_path, monkeypatch):
    """A private copy of the banks (tests grow them) with the module's tiny-model cache."""
    monkeypatch.setenv("PROTOSEG_CACHE", str(banks / "cache"))
    for name in ("dpsm", "freeda"):
        shutil.copytree(banks / name, tmp_path / name)
    shutil.copy(banks / "photo.png", tmp_path / "photo.png")
    return tmp_path


@pytest.fixture
def run(cli_process):
    return cli_process


def _stamps(folder):
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_dpsm_generates_the_missing_class_once_with_the_recipe(work, run, banks):
    bank = work / "dpsm"
    before = PrototypeBank.load(bank)
    assert before.classes == ["cat"]
    args = ["segment", work / "photo.png", "--preset", "dpsm-tiny", "--bank", bank, "--classes", "cat, dog",
            "--device", "cpu", "--generate-missing"]
    first = run(*args, "--out", work / "out1")
    assert first.returncode == 0, first.stderr
    assert "generated prototypes of 'dog'" in first.stderr
    grown = PrototypeBank.load(bank)
    assert grown.classes == ["cat", "dog"]
    assert grown.manifest.bank_id != before.manifest.bank_id
    # the old rows are kept as they were; the new class carries one unit of supply like a built class
    np.testing.assert_array_equal(grown.vectors(grown.rows_of("cat")), before.vectors(before.rows_of("cat")))
    assert grown.table["supply"][grown.rows_of("dog", "part")].sum() == pytest.approx(1.0, abs=1e-5)
    # the recipe survives the growth, and the class is what a full build of it with that recipe gives
    assert bank_recipe(grown)[0] == bank_recipe(before)[0] == get_build_preset("dpsm-tiny", steps=2)
    full = build_bank(get_build_preset("dpsm-tiny", steps=2), DpsmSource(classes=("dog",)), work / "dog-only",
                      RunOptions(shard_size=4, seed=3))
    np.testing.assert_allclose(grown.vectors(grown.rows_of("dog")),
                               PrototypeBank.load(full).vectors(PrototypeBank.load(full).rows_of("dog")), atol=1e-5)
    assert not generate_work_dir(bank).exists() and not any(p.name.startswith(".") for p in work.iterdir())
    labels = work / "out1" / "photo.png"
    assert read_label_classes(labels) == ["cat", "dog"]
    assert set(np.unique(np.asarray(Image.open(labels)))) <= {0, 1}
    sidecar = json.loads((work / "out1" / "photo.json").read_text())
    assert sidecar["bank_id"] == grown.manifest.bank_id

    stamps = _stamps(bank)
    second = run(*args, "--out", work / "out2")
    assert second.returncode == 0, second.stderr
    assert "generated" not in second.stderr
    assert _stamps(bank) == stamps and PrototypeBank.load(bank).manifest.bank_id == grown.manifest.bank_id
    np.testing.assert_array_equal(np.asarray(Image.open(work / "out2" / "photo.png")), np.asarray(Image.open(labels)))


def test_freeda_generates_nouns_with_keys_once(work, run):
    bank = work / "freeda"
    before = PrototypeBank.load(bank)
    assert "zebra" not in before.classes and before.keys is not None
    args = ["segment", work / "photo.png", "--preset", "freeda-tiny", "--bank", bank, "--classes", "cat, zebra",
            "--device", "cpu", "--generate-missing"]
    first = run(*args, "--out", work / "out1")
    assert first.returncode == 0, first.stderr
    assert "generated prototypes of 'zebra'" in first.stderr
    grown = PrototypeBank.load(bank)
    assert "zebra" in grown.classes and set(before.classes) < set(grown.classes)
    rows = grown.rows_of("zebra")
    assert len(rows) >= 1 and grown.keys.shape == (len(grown), before.keys.shape[1]) and len(grown.index) == len(grown)
    assert set(grown.table["text"][rows]) <= set(noun_captions("zebra"))
    assert grown.manifest.text_encoder == before.manifest.text_encoder
    assert read_label_classes(work / "out1" / "photo.png") == ["cat", "zebra"]

    stamps = _stamps(bank)
    second = run(*args, "--out", work / "out2")
    assert second.returncode == 0 and "generated" not in second.stderr, second.stderr
    assert _stamps(bank) == stamps


def test_ensure_classes_in_python_and_an_interrupted_generation_resumes(work):
    bank = work / "dpsm"
    stamps = _stamps(bank)

    class Stop(Exception):
        pass

    def stop_after_first_shard(stage, done, total):
        if stage == "shards" and done == 1:
            raise Stop

    with pytest.raises(Stop):
        generate_missing(bank, ["cat", "dog"], device="cpu", progress=stop_after_first_shard)
    assert _stamps(bank) == stamps  # the bank folder is untouched until the grown bank replaces it
    assert len(list((generate_work_dir(bank) / "shards").glob("*.npz"))) == 1

    seg = Segmenter.from_preset("dpsm-tiny", bank=bank, device="cpu")
    seen = []
    made = seg.ensure_classes(["cat", "dog"], progress=lambda stage, done, total: seen.append((stage, done, total)))
    assert made == ["dog"] and seg.bank.classes == ["cat", "dog"]
    assert ("shards", 1, 2) in seen and seen[0] == ("shards", 1, 2)  # resumed after the finished shard
    result = seg.segment(np.asarray(Image.open(work / "photo.png")), ["cat", "dog"])
    assert result.classes == ["cat", "dog"]
    calls = []
    assert seg.ensure_classes(["dog", "cat"], progress=lambda *a: calls.append(a)) == [] and calls == []


def test_without_the_switch_the_unknown_class_error_names_it(work, run):
    result = run("segment", work / "photo.png", "--preset", "dpsm-tiny", "--bank", work / "dpsm", "--classes",
                 "cat, dog", "--device", "cpu", "--out", work / "out")
    assert_one_error(result, "'dog'", "--generate-missing")


def test_recipe_models_that_cannot_load_give_one_line_and_leave_the_bank(work, run, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    stamps = _stamps(work / "dpsm")
    result = run("segment", work / "photo.png", "--preset", "dpsm-tiny", "--bank", work / "dpsm", "--classes",
                 "cat, dog", "--device", "cpu", "--out", work / "out", "--generate-missing",
                 "--diffusion", "someone/not-downloaded-sd")
    assert_one_error(result, "cannot load the models of the bank's build recipe", "'dog'", "someone/not-downloaded-sd",
               "--diffusion FOLDER")
    assert _stamps(work / "dpsm") == stamps and not (work / "out").exists()
    lonely = run("segment", work / "photo.png", "--bank", work / "dpsm", "--classes", "cat", "--diffusion", "x")
    assert_one_error(lonely, "--generate-missing")


def test_a_recipe_llm_that_cannot_load_names_the_llm_option(work, run):
    bank = work / "dpsm"
    manifest = json.loads((bank / "manifest.json").read_text())
    manifest["settings"]["preset"].update(prompts="llm", llm="gguf:/nowhere/model.gguf")  # a recipe with an LLM
    (bank / "manifest.json").write_text(json.dumps(manifest))
    stamps = _stamps(bank)
    result = run("segment", work / "photo.png", "--preset", "dpsm-tiny", "--bank", bank, "--classes", "cat, dog",
                 "--device", "cpu", "--out", work / "out", "--generate-missing")
    assert_one_error(result, "DPSM descriptions of 'dog'", "/nowhere/model.gguf", "--llm SPEC")
    assert _stamps(bank) == stamps and not (work / "dpsm.descriptions.json").exists()


def test_banks_from_examples_cannot_generate(tmp_path, run):
    write_examples(tmp_path / "ex", 1, seed=7, size=96)
    made = run("bank", "from-examples", tmp_path / "ex", "--preset", "handcrafted", "--out", tmp_path / "bank")
    assert made.returncode == 0, made.stderr
    image = sorted((tmp_path / "ex" / "images").iterdir())[0]
    result = run("segment", image, "--preset", "handcrafted", "--bank", tmp_path / "bank", "--classes",
                 "sky, unicorn", "--out", tmp_path / "out", "--generate-missing")
    assert_one_error(result, "built from labelled examples", "cannot generate")
    with pytest.raises(ProtosegError, match="labelled examples"):
        generate_missing(tmp_path / "bank", ["unicorn"])


def test_missing_classes_reads_synonyms(work):
    bank = PrototypeBank.load(work / "dpsm")
    assert missing_classes(bank, [["kitty", "cat"], "dog", ["puppy", "hound"]]) == ["dog", "puppy"]
    assert missing_classes(bank, ["cat"]) == []


def test_the_demo_generates_missing_classes_when_asked(work):
    """The demo's switch grows the bank like `segment --generate-missing`; without it the page shows the
    one-line error naming the switch, and the grown bank is what the next request loads."""
    from protoseg.demo import SegmenterCache, run_demo_request

    bank, cache = work / "dpsm", SegmenterCache()
    ask = dict(images=[work / "photo.png"], classes_text="cat, dog", preset="dpsm-tiny", bank=bank,
               out_dir=work / "demo", cache=cache, device="cpu")
    with pytest.raises(ProtosegError, match="--generate-missing"):
        run_demo_request(**ask)
    stages = []
    result = run_demo_request(**ask, generate_missing=True, progress=lambda f, d: stages.append(d))
    assert PrototypeBank.load(bank).classes == ["cat", "dog"]
    assert any(d.startswith("generating prototypes") for d in stages)
    assert {e.name for e in result.images[0].legend} == {"cat", "dog"}
    stamps = _stamps(bank)
    run_demo_request(**ask, generate_missing=True)  # nothing missing now: nothing regenerated
    assert _stamps(bank) == stamps
