"""Banks as Hub datasets: `protoseg bank push` and `--bank hf://owner/name[@revision]`, against an in-memory
Hub served on localhost (tests/hub_server.py) and the real huggingface_hub client."""

import json

import numpy as np
import pytest
from conftest import assert_one_error
from hub_server import FakeHub
from PIL import Image

from protoseg import cli
from protoseg.bank import PrototypeBank
from protoseg.bank.hub import hub_spec
from protoseg.bank.storage import file_problem, verify_files
from protoseg.errors import ProtosegError
from protoseg.worlds import write_examples


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Labelled examples and a local bank made from them (handcrafted features: no weights)."""
    root = tmp_path_factory.mktemp("hubworld")
    write_examples(root / "ex", 2, seed=7, size=128)
    assert cli.run(["bank", "from-examples", str(root / "ex"), "--preset", "handcrafted",
                    "--out", str(root / "bank")]) == 0
    return root


@pytest.fixture
def hub(tmp_path, monkeypatch):
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.setenv("HF_TOKEN", "hf_test_token")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        yield server


@pytest.fixture
def run(cli_process):
    return cli_process


def _classes(world):
    return ", ".join(PrototypeBank.load(world / "bank").classes)


def _image(world):
    return sorted((world / "ex" / "images").iterdir())[0]


def test_push_then_segment_from_the_hub_equals_the_local_bank(world, hub, run, tmp_path):
    pushed = run("bank", "push", world / "bank", "me/parts", "--licence", "cc-by-4.0")
    assert pushed.returncode == 0, pushed.stderr
    assert "hf://me/parts" in pushed.stdout
    files = hub.files("me/parts")
    local = {p.name: p.read_bytes() for p in (world / "bank").iterdir() if p.is_file()}
    assert {name: files[name] for name in local} == local  # every bank file, byte for byte
    card = files["README.md"].decode()
    front = card.split("---")[1]
    assert "license: cc-by-4.0" in front and "- protoseg" in front and "- image-segmentation" in front
    manifest = json.loads(local["manifest.json"])
    assert manifest["bank_id"] in card and "--bank hf://me/parts --preset handcrafted" in card
    assert f"| classes | {len(manifest['classes'])} |" in card and manifest["feature_encoder"] in card

    image = _image(world)
    base = ["segment", image, "--classes", _classes(world), "--preset", "handcrafted"]
    assert run(*base, "--bank", world / "bank", "--out", tmp_path / "local").returncode == 0
    remote = run(*base, "--bank", "hf://me/parts", "--out", tmp_path / "remote")
    assert remote.returncode == 0, remote.stderr
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "remote" / f"{image.stem}.png")),
                                  np.asarray(Image.open(tmp_path / "local" / f"{image.stem}.png")))
    sidecar = json.loads((tmp_path / "remote" / f"{image.stem}.json").read_text())
    assert sidecar["bank"] == "hf://me/parts" and sidecar["bank_id"] == manifest["bank_id"]
    # the download lives in the Hugging Face cache; a second use reads it there
    assert list((tmp_path / "hf-cache").glob("datasets--me--parts/snapshots/*/manifest.json"))
    info = run("bank", "info", "hf://me/parts")
    assert info.returncode == 0 and "handcrafted" in info.stdout
    # offline (the Hub stops answering), the cached revision is used; an uncached one is one clear error
    hub.stop()
    assert PrototypeBank.load("hf://me/parts").manifest.bank_id == manifest["bank_id"]
    assert_one_error(run("bank", "info", "hf://me/elsewhere"), "hf://me/elsewhere", "cannot be reached")


def test_branches_revisions_and_unknown_repos(world, hub, run):
    assert run("bank", "push", world / "bank", "me/parts", "--branch", "v2", "--private").returncode == 0
    assert hub.repos[("dataset", "me/parts")].private and "v2" in hub.repos[("dataset", "me/parts")].refs
    bank = PrototypeBank.load("hf://me/parts@v2")
    assert bank.source == "hf://me/parts@v2"
    assert bank.manifest.bank_id == PrototypeBank.load(world / "bank").manifest.bank_id
    assert_one_error(run("bank", "info", "hf://me/parts@v9"), "hf://me/parts@v9", "no revision 'v9'")
    assert_one_error(run("bank", "info", "hf://me/nothing"), "no dataset repository me/nothing")
    assert_one_error(run("bank", "info", "hf://not a repo"), "hf://owner/name")
    assert_one_error(run("bank", "push", world / "bank", "me"), "hf://owner/name")


def test_a_corrupt_download_is_refused(world, hub, run, tmp_path):
    assert run("bank", "push", world / "bank", "me/parts").returncode == 0
    data = bytearray(hub.files("me/parts")["prototypes.npy"])
    data[-3] ^= 0x5A  # same size, other bytes: only the manifest's SHA-256 can tell
    hub.tamper("me/parts", "prototypes.npy", bytes(data))
    result = run("segment", _image(world), "--classes", _classes(world), "--preset", "handcrafted", "--bank",
                 "hf://me/parts", "--out", tmp_path / "out")
    assert_one_error(result, "hf://me/parts", "failed verification", "prototypes.npy does not match its SHA-256")
    assert not (tmp_path / "out").exists()


def test_generate_missing_never_modifies_the_download_cache(world, hub, run, tmp_path):
    assert run("bank", "push", world / "bank", "me/parts").returncode == 0
    result = run("segment", _image(world), "--classes", _classes(world) + ", unicorn", "--preset", "handcrafted",
                 "--bank", "hf://me/parts", "--out", tmp_path / "out", "--generate-missing")
    assert_one_error(result, "'unicorn'", "never modifies", "cp -rL")


def test_stale_files_of_an_earlier_push_are_removed(hub, tmp_path, rng):
    keyed = PrototypeBank.create(rng.normal(size=(4, 8)), {"label": ["a", "a", "b", "b"]}, method="freeda",
                                 feature_encoder="enc", keys=rng.normal(size=(4, 3)), text_encoder="clip")
    keyed.save(tmp_path / "keyed")
    plain = PrototypeBank.create(rng.normal(size=(2, 8)), {"label": ["a", "b"]}, method="dpsm", feature_encoder="enc")
    plain.save(tmp_path / "plain")
    from protoseg.bank.hub import push_bank

    push_bank(tmp_path / "keyed", "me/b")
    assert "keys.npy" in hub.files("me/b")
    push_bank(tmp_path / "plain", "me/b")
    assert "keys.npy" not in hub.files("me/b") and "keys.faiss" not in hub.files("me/b")
    assert PrototypeBank.load("hf://me/b").keys is None


def test_manifest_checksums_and_banks_without_them(tmp_path, rng):
    bank = PrototypeBank.create(rng.normal(size=(3, 4)), {"label": ["a", "b", "b"]}, method="dpsm",
                                feature_encoder="enc")
    bank.save(tmp_path / "b")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert set(manifest["files"]) == {"prototypes.npy", "table.parquet"}
    assert file_problem(tmp_path / "b") is None
    # a bank written before the manifest listed its files still loads and is checked against its bank_id
    del manifest["files"]
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(manifest))
    assert PrototypeBank.load(tmp_path / "b").classes == ["a", "b"] and file_problem(tmp_path / "b") is None
    data = bytearray((tmp_path / "b" / "prototypes.npy").read_bytes())
    data[-1] ^= 1
    (tmp_path / "b" / "prototypes.npy").write_bytes(bytes(data))
    with pytest.raises(ProtosegError, match="bank_id"):
        verify_files(tmp_path / "b")


def test_the_card_of_a_grown_bank_names_its_recipe(rng):
    from protoseg.bank.hub import dataset_card

    recipe = {"preset": {"method": "dpsm", "segment_preset": "dpsm-tiny", "diffusion": "stabilityai/sd-2-base"},
              "llm": "smollm2", "seed": 0}
    parts = [PrototypeBank.create(rng.normal(size=(2, 4)), {"label": [name] * 2}, method="dpsm", feature_encoder="enc",
                                  settings=recipe) for name in ("a", "b")]
    card = dataset_card(PrototypeBank.merge(parts), "me/grown", "openrail++")
    assert "license: openrail++" in card and "`stabilityai/sd-2-base`" in card and "`smollm2`" in card
    assert "--bank hf://me/grown --preset dpsm-tiny" in card and "| classes | 2 |" in card


def test_hub_addresses():
    assert hub_spec("hf://me/parts").repo_id == "me/parts" and hub_spec("hf://me/parts").revision is None
    assert hub_spec("hf:/me/parts@v1.0").uri == "hf://me/parts@v1.0"  # as a Path collapses it
    assert hub_spec("banks/parts") is None
    for bad in ("hf://me", "hf://me/parts@", "hf://a/b/c", "hf://me/pa--rts"):
        with pytest.raises(ProtosegError, match="hf://owner/name"):
            hub_spec(bad)
