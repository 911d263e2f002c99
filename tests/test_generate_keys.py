"""FreeDA textual keys k = α·t̂(noun) + (1−α)·ĉ(caption), checked against a hand computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from protoseg.errors import ProtosegError
from protoseg.generate.keys import mean_template_embeddings, text_keys


class FakeClip:
    """encode_text: a fixed table of raw (un-normalised) embeddings; counts encoded texts."""

    def __init__(self, table: dict[str, list[float]], as_torch: bool = False):
        self.table = table
        self.as_torch = as_torch
        self.encoded: list[str] = []

    def encode_text(self, texts):
        self.encoded.extend(texts)
        out = np.array([self.table[t] for t in texts], dtype=np.float32)
        return torch.from_numpy(out) if self.as_torch else out


TEMPLATES = ("a photo of a {}.", "art of the {}.")
TABLE = {
    "a photo of a dog.": [3.0, 0.0, 4.0],   # norm 5
    "art of the dog.": [1.0, 2.0, 0.0],
    "a photo of a cat.": [0.0, 2.0, 0.0],
    "art of the cat.": [0.0, 0.0, 2.0],
    "a dog and a cat.": [0.0, 0.0, 10.0],
    "a dog.": [6.0, 8.0, 0.0],
}


def unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def test_keys_match_hand_computation():
    clip = FakeClip(TABLE)
    keys = text_keys(clip, ["dog", "cat", "dog"], ["a dog and a cat.", "a dog and a cat.", "a dog."],
                     alpha=0.9, templates=TEMPLATES)
    # t̂(dog) = normalise(mean([3,0,4], [1,2,0])) = normalise([2,1,2]) = [2,1,2]/3
    t_dog = np.array([2.0, 1.0, 2.0]) / 3.0
    t_cat = unit([0.0, 1.0, 1.0])
    c_both = np.array([0.0, 0.0, 1.0])
    c_dog = np.array([0.6, 0.8, 0.0])
    expected = np.stack([0.9 * t_dog + 0.1 * c_both, 0.9 * t_cat + 0.1 * c_both, 0.9 * t_dog + 0.1 * c_dog])
    assert keys.dtype == np.float32 and keys.shape == (3, 3)
    np.testing.assert_allclose(keys, expected, atol=1e-6)
    # each distinct noun/template prompt and each distinct caption is encoded once
    assert sorted(clip.encoded) == sorted(TABLE)


def test_alpha_extremes_normalised_keys_and_torch_input():
    clip = FakeClip(TABLE, as_torch=True)
    nouns, captions = ["dog", "cat"], ["a dog.", "a dog and a cat."]
    only_nouns = text_keys(clip, nouns, captions, alpha=1.0, templates=TEMPLATES)
    np.testing.assert_allclose(only_nouns, mean_template_embeddings(clip, nouns, TEMPLATES), atol=1e-6)
    only_captions = text_keys(clip, nouns, captions, alpha=0.0, templates=TEMPLATES)
    np.testing.assert_allclose(only_captions, [[0.6, 0.8, 0.0], [0.0, 0.0, 1.0]], atol=1e-6)
    unit_keys = text_keys(clip, nouns, captions, alpha=0.5, templates=TEMPLATES, normalize_keys=True)
    np.testing.assert_allclose(np.linalg.norm(unit_keys, axis=1), 1.0, atol=1e-6)
    raw = text_keys(clip, nouns, captions, alpha=0.5, templates=TEMPLATES)
    np.testing.assert_allclose(unit_keys, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)


def test_normalize_each_averages_unit_template_embeddings():
    keys = text_keys(FakeClip(TABLE), ["dog"], ["a dog."], alpha=1.0, templates=TEMPLATES,
                     normalize_each=True)
    # mean of [0.6, 0, 0.8] and [1, 2, 0]/sqrt(5), normalised
    np.testing.assert_allclose(keys[0], unit(np.array([0.6, 0.0, 0.8]) + np.array([1.0, 2.0, 0.0]) / 5**0.5),
                               atol=1e-6)


def test_batching_does_not_change_keys():
    clip = FakeClip(TABLE)
    args = (["dog", "cat", "dog"], ["a dog and a cat.", "a dog and a cat.", "a dog."])
    np.testing.assert_allclose(text_keys(clip, *args, templates=TEMPLATES, batch_size=1),
                               text_keys(clip, *args, templates=TEMPLATES), atol=1e-7)


def test_key_errors():
    clip = FakeClip(TABLE)
    with pytest.raises(ProtosegError, match="one caption per noun"):
        text_keys(clip, ["dog"], [], templates=TEMPLATES)
    with pytest.raises(ProtosegError, match="alpha"):
        text_keys(clip, ["dog"], ["a dog."], alpha=1.5, templates=TEMPLATES)
    with pytest.raises(ProtosegError, match="templates"):
        text_keys(clip, ["dog"], ["a dog."], templates=("no slot",))
    with pytest.raises(ProtosegError, match="no nouns"):
        text_keys(clip, [], [], templates=TEMPLATES)


def test_default_templates_are_freedas():
    from protoseg.models.clip import FREEDA_TEMPLATES

    templates = tuple(FREEDA_TEMPLATES)
    table = {t.format("dog"): [float(i + 1), 1.0] for i, t in enumerate(templates)} | {"a dog.": [1.0, 0.0]}
    keys = text_keys(FakeClip(table), ["dog"], ["a dog."], alpha=1.0)
    np.testing.assert_allclose(keys[0], unit([np.mean(np.arange(1, len(templates) + 1)), 1.0]), atol=1e-6)
