"""Noun extraction from captions (hand-checked examples) and the extractor registry."""

from __future__ import annotations

import importlib.util

import pytest

from protoseg.errors import ProtosegError
from protoseg.generate.captions import Caption
from protoseg.generate.nouns import (
    LexiconNounExtractor,
    NounExtractor,
    SpacyNounExtractor,
    caption_nouns,
    default_lexicon,
    get_noun_extractor,
    nouns_of,
    singular_candidates,
)

# COCO-style captions with the nouns a careful reader would mark (singular, first mention, in order).
HAND_CHECKED = [
    ("A man riding a wave on top of a surfboard.", ["man", "wave", "surfboard"]),
    ("Two dogs and a cat sitting near traffic lights by a fire hydrant.",
     ["dog", "cat", "traffic light", "fire hydrant"]),
    ("An orange cat on a kitchen table next to glass vases.", ["cat", "table", "vase"]),
    ("People walking down the street with umbrellas in the rain.", ["person", "street", "umbrella"]),
    ("A plate of hot dogs and french fries with a glass of wine.", ["plate", "hot dog", "glass", "wine"]),
    ("a light blue t-shirt hanging on a chair", ["t shirt", "chair"]),
    ("Three women and two children eating pizzas at a dining table.",
     ["woman", "child", "pizza", "dining table"]),
    ("A giraffe standing next to a tree, another giraffe behind it.", ["giraffe", "tree"]),
    ("Buses parked along the sidewalk of a busy city.", ["bus", "sidewalk", "city"]),
    ("A close up photo of a teddy bear on a bed with pillows.", ["teddy bear", "bed", "pillow"]),
    ("Shelves full of books and knives in the kitchen", ["shelf", "book", "knife", "kitchen"]),
    ("A stop sign on a pole with a parking meter behind it.", ["stop sign", "pole", "parking meter"]),
    ("The quick thinking of a bright idea.", []),
]


@pytest.mark.parametrize(("caption", "nouns"), HAND_CHECKED)
def test_lexicon_nouns_hand_checked(caption, nouns):
    assert nouns_of(LexiconNounExtractor(), caption) == nouns


def test_mentions_point_at_the_caption_words():
    caption = "Two Dogs and a cat near Traffic Lights."
    mentions = LexiconNounExtractor().extract(caption)
    assert [(m.noun, m.text) for m in mentions] == [("dog", "Dogs"), ("cat", "cat"),
                                                     ("traffic light", "Traffic Lights")]
    assert all(caption[m.start:m.end] == m.text for m in mentions)


def test_lexicon_contents_and_custom_lexicon():
    lexicon = default_lexicon()
    for noun in ("person", "traffic light", "fire hydrant", "chest of drawers", "potted plant", "sky"):
        assert noun in lexicon
    for word in ("of", "hot", "traffic", "photo", "people"):
        assert word not in lexicon
    custom = LexiconNounExtractor(lexicon={"red panda"}, extra={"bamboo"})
    assert nouns_of(custom, "Two red pandas eating bamboo next to a dog") == ["red panda", "bamboo"]


def test_singular_candidates():
    assert singular_candidates("puppies")[:2] == ["puppies", "puppy"]
    assert "leaf" in singular_candidates("leaves") and "knife" in singular_candidates("knives")
    assert singular_candidates("glass") == ["glass"]  # no "glas"


def test_registry():
    extractor = get_noun_extractor("lexicon")
    assert isinstance(extractor, LexiconNounExtractor) and isinstance(extractor, NounExtractor)
    with pytest.raises(ProtosegError, match="unknown noun extractor"):
        get_noun_extractor("nltk")


@pytest.mark.skipif(importlib.util.find_spec("spacy") is not None, reason="spaCy is installed")
def test_spacy_missing_is_a_clear_error():
    with pytest.raises(ProtosegError, match="pip install spacy"):
        get_noun_extractor("spacy")


def _spacy_model_available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("spacy", "en_core_web_sm"))


@pytest.mark.skipif(not _spacy_model_available(), reason="spaCy and en_core_web_sm are not installed")
def test_spacy_nouns():
    extractor = SpacyNounExtractor("en_core_web_sm")
    assert nouns_of(extractor, "Two dogs and a cat sitting on a sofa.") == ["dog", "cat", "sofa"]
    mentions = extractor.extract("Two dogs sleep.")
    assert mentions[0].text == "dogs" and mentions[0].noun == "dog"


def test_caption_nouns_pairs():
    captions = [Caption(5, 1, "A dog on a sofa."), Caption(6, 1, "Nothing here."), Caption(9, 2, "Two cats.")]
    pairs = caption_nouns(LexiconNounExtractor(), captions)
    assert [(c.caption_id, m.noun, m.text) for c, m in pairs] == [(5, "dog", "dog"), (5, "sofa", "sofa"),
                                                                  (9, "cat", "cats")]
