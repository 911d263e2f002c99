"""The builder registry: every way of making a bank runs through plan -> shard -> reduce with resume."""

import numpy as np
import pytest
from build_fixtures import assert_banks_identical

from protoseg.bank import PrototypeBank
from protoseg.config.segment import get_preset
from protoseg.errors import ProtosegError
from protoseg.offline import (
    BUILDERS,
    DpsmSource,
    ExamplesSource,
    FreedaSource,
    RunOptions,
    build_bank,
    examples_preset,
    get_build_preset,
)
from protoseg.offline.examples import bank_from_examples
from protoseg.worlds import write_examples


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    root = tmp_path_factory.mktemp("examples")
    write_examples(root / "train", 5, seed=7, size=160)
    return root / "train"


def test_registry_names_every_way_to_make_a_bank():
    assert set(BUILDERS) == {"freeda", "dpsm", "examples", "freeda-import"}


def test_examples_build_resumes_and_equals_the_in_memory_build(examples, tmp_path):
    recipe = examples_preset(get_preset("handcrafted"), bank_dtype="float32")
    source = ExamplesSource(examples)
    written = []

    def kill_after_two(index):
        written.append(index)
        if len(written) == 2:
            raise Killed

    with pytest.raises(Killed):
        build_bank(recipe, source, tmp_path / "b", RunOptions(shard_size=2), on_shard_written=kill_after_two)
    assert not (tmp_path / "b").exists()
    written.clear()
    build_bank(recipe, source, tmp_path / "b", RunOptions(shard_size=2), on_shard_written=written.append)
    assert written == [2]  # 5 examples in shards of 2: only the last shard was left
    build_bank(recipe, source, tmp_path / "ref", RunOptions(shard_size=2))
    assert_banks_identical(tmp_path / "b", tmp_path / "ref")
    built = PrototypeBank.load(tmp_path / "b")
    for other in (PrototypeBank.load(build_bank(recipe, source, tmp_path / "one", RunOptions(shard_size=5))),
                  bank_from_examples(examples, "handcrafted", dtype="float32")):  # sharding changes nothing
        np.testing.assert_array_equal(built.prototypes, other.prototypes)
        for column in ("label", "text", "image_id", "part_id", "level", "area", "supply"):
            assert built.table[column].tolist() == other.table[column].tolist()
    # eq. 7 supplies: every class delivers one unit over all its views
    parts = built.table["level"] == "part"
    for name in set(built.table["label"][parts]):
        assert built.table["supply"][parts & (built.table["label"] == name)].sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("preset, source, message", [
    ("freeda-tiny", lambda: DpsmSource(classes=("cat",)), "built from captions"),
    ("dpsm-tiny", lambda: FreedaSource(captions="c.txt"), "built from class names"),
    ("dpsm-tiny", lambda: DpsmSource(), "built from class names"),
])
def test_a_builder_rejects_a_source_it_does_not_read(preset, source, message, tmp_path):
    with pytest.raises(ProtosegError, match=message):
        build_bank(get_build_preset(preset), source(), tmp_path / "bank")
    assert list(tmp_path.iterdir()) == []
