"""FreeDA bank builds with the tiny random models: keys, retrieval, resume identity."""

import numpy as np
import pytest
from build_fixtures import assert_banks_identical, tiny_cache

from protoseg.bank import PrototypeBank
from protoseg.errors import ProtosegError
from protoseg.offline import DpsmSource, FreedaSource, RunOptions, build_bank, get_build_preset

CAPTIONS = ["a cat sitting on a sofa next to a lamp", "two dogs running on the grass near a tree",
            "a red car parked on the street", "the sky"]

RUN = RunOptions(shard_size=2, seed=3)


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("freeda")
    (root / "captions.txt").write_text("\n".join(CAPTIONS) + "\n")
    with tiny_cache(root / "cache"):
        preset = get_build_preset("freeda-tiny", steps=2)
        ref = build_bank(preset, FreedaSource(captions=root / "captions.txt"), root / "ref", RUN)
        yield root, preset, ref


def test_bank_has_noun_prototypes_and_keys(built):
    root, preset, ref = built
    bank = PrototypeBank.load(ref)
    assert bank.manifest.method == "freeda" and bank.keys is not None
    assert set(bank.classes) <= {"cat", "sofa", "lamp", "dog", "grass", "tree", "car", "street", "sky"}
    assert len(bank) >= 3
    # each row's image id is its caption's position; its text is that caption; label a noun of it
    table = bank.table
    for label, text, image_id in zip(table["label"], table["text"], table["image_id"], strict=True):
        assert text == CAPTIONS[image_id] and label in text.replace("dogs", "dog")
    np.testing.assert_allclose(np.linalg.norm(bank.keys, axis=1), 1.0, rtol=1e-5)
    assert len(bank.index) == len(bank)
    assert bank.manifest.settings["captions_with_nouns"] == 4


def test_keys_follow_eq3_and_retrieve_their_noun(built):
    root, preset, ref = built
    from protoseg.generate.keys import text_keys
    from protoseg.models.clip import ClipModel

    bank = PrototypeBank.load(ref)
    clip = ClipModel(str(root / "cache" / "tiny" / "tiny-clip"))
    labels, texts = list(bank.table["label"]), list(bank.table["text"])
    expected = text_keys(clip, labels, texts, alpha=0.9)
    expected = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(bank.keys, expected, rtol=1e-4, atol=1e-5)
    # the α = 0.9 noun term dominates: a noun's template embedding retrieves a key of that noun first
    for noun in sorted(set(labels)):
        query = clip.encode_classes([noun]).cpu().numpy()
        top = bank.retrieve(query, 1)[0]
        assert bank.table["label"][top[0]] == noun


def test_kill_and_resume_identical(built):
    root, preset, ref = built

    def kill(index):
        if index == 0:
            raise Killed

    with pytest.raises(Killed):
        build_bank(preset, FreedaSource(captions=root / "captions.txt"), root / "again", RUN,
                   on_shard_written=kill)
    build_bank(preset, FreedaSource(captions=root / "captions.txt"), root / "again", RUN)
    assert_banks_identical(root / "again", ref)


def test_freeda_needs_captions(built):
    _, preset, _ = built
    with pytest.raises(ProtosegError, match="captions"):
        build_bank(preset, DpsmSource(classes=("cat",)), built[0] / "x")
