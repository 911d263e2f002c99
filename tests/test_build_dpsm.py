"""DPSM bank builds with the tiny random models: kill-and-resume identity, determinism, supplies."""

import numpy as np
import pytest
from build_fixtures import assert_banks_identical, tiny_cache

from protoseg.bank import PrototypeBank
from protoseg.offline import DpsmSource, RunOptions, build_bank, get_build_preset

PRESET = dict(steps=2, k=1, kappa=2)  # N = 4 images per class, κN = 8

CAT = DpsmSource(classes=("cat",))
RUN = RunOptions(shard_size=3, seed=7)


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("dpsm")
    with tiny_cache(root / "cache"):
        preset = get_build_preset("dpsm-tiny", **PRESET)
        ref = build_bank(preset, CAT, root / "ref", RUN)
        yield root, preset, ref


def test_bank_content_and_supplies(built):
    _, preset, ref = built
    bank = PrototypeBank.load(ref)
    assert bank.manifest.method == "dpsm" and bank.classes == ["cat"]
    parts, wholes = bank.rows_of("cat", "part"), bank.rows_of("cat", "whole")
    assert len(wholes) <= preset.images_per_class and len(parts) > len(wholes)
    # eq. 7 + eq. 12: every image carries 1/N, κN images, fused supplies divided by κ -> one unit per class
    assert bank.table["supply"][parts].sum() == pytest.approx(1.0, abs=1e-5)
    assert bank.table["supply"][wholes].sum() == pytest.approx(1.0, abs=1e-5)
    assert (bank.table["coarse_cluster"][parts] >= 0).all() and (bank.table["fine_cluster"][parts] >= 0).all()
    assert bank.manifest.settings["preset"]["clustering"] == "coarse-fine"
    assert np.isfinite(bank.vectors(np.arange(len(bank)))).all()
    assert not ref.with_name(ref.name + ".partial").exists()  # shards removed after success


def test_kill_and_resume_gives_identical_bank(built):
    root, preset, ref = built
    out = root / "resumed"
    written = []

    def kill_after_shard_1(index):
        written.append(index)
        if index == 1:
            raise Killed

    with pytest.raises(Killed):
        build_bank(preset, CAT, out, RUN, on_shard_written=kill_after_shard_1)
    assert not out.exists()
    shards = sorted(p.name for p in (root / "resumed.partial" / "shards").glob("*.npz"))
    assert shards == ["00000.npz", "00001.npz"]
    written.clear()
    build_bank(preset, CAT, out, RUN, on_shard_written=written.append)
    assert written == [2]  # only the missing shard was computed
    assert_banks_identical(out, ref)


def test_other_seed_differs_and_clustering_switches(built):
    root, preset, ref = built
    other = build_bank(preset, CAT, root / "seed8", RunOptions(shard_size=3, seed=8))
    a, b = PrototypeBank.load(ref), PrototypeBank.load(other)
    assert a.prototypes.shape != b.prototypes.shape or not np.array_equal(a.prototypes, b.prototypes)
    none = get_build_preset("dpsm-tiny", **PRESET, clustering="none")
    raw = PrototypeBank.load(build_bank(none, CAT, root / "none", RUN))
    parts = raw.rows_of("cat", "part")
    assert len(raw.rows_of("cat", "whole")) == len(np.unique(raw.table["image_id"][parts]))
    assert raw.table["supply"][parts].sum() == pytest.approx(1.0, abs=1e-5)
    assert len(parts) > len(a.rows_of("cat", "part"))  # clustering fuses κN images back to N


def test_llm_mode_reads_the_editable_description_cache(built, tmp_path):
    import json

    from protoseg.errors import ProtosegError

    root, _, _ = built
    preset = get_build_preset("dpsm-tiny", steps=2, k=1, kappa=1, prompts="llm", clustering="none")
    with tiny_cache(root / "cache"), pytest.raises(ProtosegError, match="LLM"):
        # no cache and no LLM: a clear error (there is no stand-in LLM)
        build_bank(preset, DpsmSource(classes=("cat",), descriptions=tmp_path / "none.json"), tmp_path / "nollm")
    cache = tmp_path / "descriptions.json"
    texts = {"state": ["A photo of cat sleeping"], "feature": ["A photo of cat with stripes"],
             "object": ["A photo of cat next to a ball"], "location": ["A photo of cat on a roof"]}
    cache.write_text(json.dumps({"cat": texts}))
    with tiny_cache(root / "cache"):
        source = DpsmSource(classes=("cat",), descriptions=cache)
        bank = PrototypeBank.load(build_bank(preset, source, tmp_path / "llm"))
    wholes = bank.rows_of("cat", "whole")
    assert set(bank.table["text"][wholes]) <= {t[0] for t in texts.values()}
    assert bank.manifest.settings["prompts"] == "llm"
    assert json.loads(cache.read_text()) == {"cat": texts}  # used verbatim, not regenerated
