"""Class lists with synonyms and the background rules of the Segmenter, on stand-in matchers with known scores.

The stand-in scores each name as a fixed mix of the crop's colour channels, so a pure red / green / blue
region scores exactly that name's red / green / blue weight; expected labels and probabilities are computed by
hand (``math.exp``) from those weights.
"""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from protoseg.bank import PrototypeBank
from protoseg.classes import ClassList, normalize_background, normalize_classes
from protoseg.config.matchers import FreedaOptions
from protoseg.config.segment import get_preset
from protoseg.errors import ProtosegError
from protoseg.match import Matcher
from protoseg.match.freeda import FreeDAMatcher
from protoseg.match.prototypes import served_names
from protoseg.models.handcrafted import HANDCRAFTED_ID
from protoseg.segment import Segmenter

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


class LinearMatcher(Matcher):
    """Scores name ``n`` as ``w_n . rgb / 255`` (weights ``name -> (r, g, b)``); ``unserved`` names are
    reported as not servable."""

    def __init__(self, weights, unserved=()):
        self.weights = weights
        self.unserved = set(unserved)
        self.prepared = []

    def serves(self, names):
        return [n not in self.unserved for n in names]

    def prepare(self, classes):
        self.prepared.append(list(classes))
        self.names = list(classes)

    def __call__(self, crop):
        rgb = crop / 255
        return torch.stack([sum(w * rgb[i] for i, w in enumerate(self.weights[n])) for n in self.names])


def segmenter(matcher, **preset):
    bank = PrototypeBank.create(np.eye(2, 22, dtype=np.float32), {"label": ["cat", "dog"]}, method="examples",
                                feature_encoder=HANDCRAFTED_ID)
    seg = Segmenter(get_preset("handcrafted", **preset), bank)
    seg.matcher = matcher
    return seg


def stripes(*spans, height=300):
    """An image of vertical colour stripes: ``(colour, width)`` each."""
    image = np.zeros((height, sum(w for _, w in spans), 3), np.uint8)
    x = 0
    for colour, width in spans:
        image[:, x:x + width] = colour
        x += width
    return image


# ---------------------------------------------------------------------------------------------- class lists
def test_normalize_classes_accepts_names_and_synonym_lists():
    plain = normalize_classes(["road", "car"])
    assert plain == ClassList((("road",), ("car",))) and plain.plain and plain.labels == ["road", "car"]
    mixed = normalize_classes([["person", "man", "woman"], "car", ("tv", "monitor")])
    assert mixed.labels == ["person", "car", "tv"]
    assert mixed.names == ["person", "man", "woman", "car", "tv", "monitor"]
    assert mixed.owners == [0, 0, 0, 1, 2, 2] and not mixed.plain
    assert normalize_classes(mixed) is mixed
    assert normalize_classes(["bed "]).names == ["bed "]  # byte-identical (MMSeg's ADE20K name)


@pytest.mark.parametrize("classes, message", [
    ("road, car", "not one string"),
    ([], "no classes"),
    ([["person", "man"], []], "class 2"),
    ([["person", ""], "car"], "empty class name at position"),
    ([["person", "man"], ["car", "man"]], r"'man' \(class 1 and class 2\)"),
    ([["person", "person"], "car"], r"'person' \(twice in class 1\)"),
    (["car", "car"], "duplicate class name"),
    ([["person", 3], "car"], "must be strings"),
    ([["sky", "background"], "car"], "'background' is not a class"),
])
def test_normalize_classes_rejects_bad_lists(classes, message):
    with pytest.raises(ProtosegError, match=message):
        normalize_classes(classes)


def test_background_names():
    assert normalize_background(["background"]) == ("background",)
    assert normalize_background(("sky", "wall")) == ("sky", "wall")
    for bad, message in [("sky", "not one string"), (["sky", " "], "empty"), (["sky", "sky"], "twice")]:
        with pytest.raises(ProtosegError, match=message):
            normalize_background(bad)


def test_keep_drops_unserved_synonyms_but_never_a_whole_class():
    classes = normalize_classes([["kitty", "cat"], "dog", ["puss", "moggy"]])
    kept = classes.keep([False, True, True, False, False])
    assert kept.synonyms == (("cat",), ("dog",), ("puss", "moggy"))  # none served: passed on whole
    with pytest.raises(ValueError):
        classes.keep([True])


def test_reduce_is_the_max_over_each_class_names():
    classes = normalize_classes([["a", "b"], "c"])
    scores = torch.tensor([[1.0, 5.0], [3.0, 2.0], [7.0, 0.0]])
    assert torch.equal(classes.reduce(scores), torch.tensor([[3.0, 5.0], [7.0, 0.0]]))
    plain = normalize_classes(["a", "c"])
    two = scores[:2]
    assert plain.reduce(two) is two


# ---------------------------------------------------------------------------------------------- synonym max
WEIGHTS = {
    "sky": (0.0, 0.0, 0.8), "wall": (0.1, 0.3, 0.5),
    "cat": (0.2, 0.2, 0.1), "kitty": (0.8, 0.1, 0.2), "dog": (0.5, 0.45, 0.1),
}


def test_a_class_scores_the_max_over_its_synonyms():
    m = LinearMatcher(WEIGHTS)
    seg = segmenter(m)
    image = stripes((RED, 300), (GREEN, 300), (BLUE, 300))
    result = seg.segment(image, [["cat", "kitty"], "dog"], return_scores=True)
    assert m.prepared[-1] == ["cat", "kitty", "dog"] and result.classes == ["cat", "dog"]
    row = result.labels[150]
    # red: max(cat .2, kitty .8) > dog .5; green: dog .45 > max(.2, .1); blue: max(.1, .2) > dog .1
    assert (row[:280] == 0).all() and (row[320:580] == 1).all() and (row[620:] == 0).all()
    torch.testing.assert_close(result.scores[:, 150, 150], torch.tensor([0.8, 0.5]))
    torch.testing.assert_close(result.scores[:, 150, 750], torch.tensor([0.2, 0.1]))
    # without the synonym "kitty" the red stripe goes to dog (.5 > cat's .2)
    alone = seg.segment(image, ["cat", "dog"], return_scores=True)
    assert (alone.labels[150, :280] == 1).all()
    torch.testing.assert_close(alone.scores[0, 150, 150], torch.tensor(0.2))


def test_synonyms_are_reduced_after_window_averaging():
    """SCLIP's order: per-name scores are averaged over windows first, then the max is taken. In the overlap of
    two windows, "cat" scores 1 in one window and 0 in the other, "kitty" the reverse: max(average) = 0.5 loses
    to dog's 0.6, while a per-window max would give the class 1."""

    class AlternatingMatcher(Matcher):
        def prepare(self, classes):
            self.names, self.calls = list(classes), 0

        def __call__(self, crop):
            first = self.calls % 2 == 0
            self.calls += 1
            value = {"cat": float(first), "kitty": float(not first), "dog": 0.6}
            return torch.stack([torch.full(crop.shape[-2:], value[n]) for n in self.names])

    seg = segmenter(AlternatingMatcher())
    image = np.zeros((448, 672, 3), np.uint8)  # no resize; two windows: x 0-448 and 224-672
    labels = seg.segment(image, [["cat", "kitty"], "dog"]).labels
    assert (labels[:, 240:430] == 1).all()  # overlap: max(0.5, 0.5) < 0.6
    assert (labels[:, :200] == 0).all() and (labels[:, 460:] == 0).all()  # one window each: max is 1


def test_constant_background_competes_with_the_synonym_max():
    seg = segmenter(LinearMatcher(WEIGHTS), background_threshold=0.4)
    image = stripes((RED, 300), (GREEN, 300), (BLUE, 300))
    row = seg.segment(image, [["cat", "kitty"], "dog"], background=True).labels[150]
    # red .8 > .4 -> cat; green dog .45 > .4 -> dog; blue best .2 < .4 -> background
    assert (row[:280] == 0).all() and (row[320:580] == 1).all() and (row[620:] == -1).all()
    assert (seg.segment(image, [["cat", "kitty"], "dog"], background="constant").labels[150] == row).all()


def test_label_lookup_serves_a_class_through_any_synonym():
    m = LinearMatcher(WEIGHTS, unserved={"kitty"})
    seg = segmenter(m)
    image = stripes((RED, 300), (GREEN, 300))
    result = seg.segment(image, [["kitty", "cat"], "dog"], return_scores=True)
    assert m.prepared[-1] == ["cat", "dog"] and result.classes == ["kitty", "dog"]
    torch.testing.assert_close(result.scores[0, 150, 150], torch.tensor(0.2))  # cat's, not kitty's .8


def test_real_freeda_matcher_with_a_label_bank():
    """The FreeDA matcher looks prototypes up by label here: an unknown synonym is dropped (same labels as
    without it), a class with no known name is an error naming its names."""
    rng = np.random.default_rng(0)
    bank = PrototypeBank.create(rng.normal(size=(4, 22)).astype(np.float32),
                                {"label": ["cat", "cat", "dog", "dog"]}, method="examples",
                                feature_encoder=HANDCRAFTED_ID, dtype="float32")
    seg = Segmenter(get_preset("handcrafted"), bank)
    image = (rng.random((120, 160, 3)) * 255).astype(np.uint8)
    plain = seg.segment(image, ["cat", "dog"])
    synonyms = seg.segment(image, [["kitty", "cat"], "dog"])
    assert synonyms.classes == ["kitty", "dog"]
    assert np.array_equal(plain.labels, synonyms.labels) and synonyms.labels.dtype == np.int64
    with pytest.raises(ProtosegError, match="'kitty', 'puss'"):
        seg.segment(image, [["kitty", "puss"], "dog"])


def test_freeda_serves_by_label_or_by_retrieval():
    table = {"label": ["A", "B", "C", "D"], "level": ["whole", "whole", "part", "whole"]}
    protos = np.array([[1, 0], [0, 1], [1, 1], [1, -1]], np.float32)
    label_bank = PrototypeBank.create(protos, table, method="t", feature_encoder="fixed", dtype="float32")
    label_bank.prototypes[3] = np.nan  # a damaged row: D has no finite prototype
    no_clip = SimpleNamespace(clip=None, device=torch.device("cpu"))
    m = FreeDAMatcher(label_bank, no_clip, FreedaOptions(use_global=False))
    assert m.serves(["A", "Z", "C", "D"]) == [True, False, False, False]  # C: a part row only
    assert served_names(label_bank, ["A", "C"], retrieval=False, level="part") == [False, True]
    keyed = PrototypeBank.create(protos[:2], {"label": ["A", "B"]}, method="t", feature_encoder="fixed",
                                 keys=np.eye(2, 3, dtype=np.float32), text_encoder="clip", dtype="float32")
    with_clip = SimpleNamespace(clip=object(), device=torch.device("cpu"))
    retrieval = FreeDAMatcher(keyed, with_clip, FreedaOptions())
    assert retrieval.serves(["A", "zebra"]) == [True, True]  # retrieval serves any name


# ------------------------------------------------------------------------------------ probability background
def probabilities(colour, background, classes, scale):
    """Hand-computed SCLIP rule at a pure-colour pixel: softmax over every queried name (background's first,
    repeated names counted twice), then the max over each class's names. -> [background, class 0, ...]"""
    channel = {RED: 0, GREEN: 1, BLUE: 2}[colour]
    entries = [*background, *(n for names in classes for n in names)]
    z = [scale * WEIGHTS[n][channel] for n in entries]
    total = sum(math.exp(v) for v in z)
    p = dict(zip(entries, (math.exp(v) / total for v in z), strict=False))  # a repeated name: same value
    return [max((p[n] for n in background), default=0.0), *(max(p[n] for n in names) for names in classes)]


def test_probability_background_matches_a_hand_computed_softmax():
    classes, background = [["cat", "kitty"], ["dog"]], ["sky", "wall"]
    seg = segmenter(LinearMatcher(WEIGHTS), background_rule="probability", logit_scale=10.0,
                    background_threshold=0.5)
    image = stripes((RED, 300), (GREEN, 300), (BLUE, 300))
    result = seg.segment(image, classes, background=True, background_names=background, return_scores=True)
    for x, colour in [(150, RED), (450, GREEN), (750, BLUE)]:
        expected = probabilities(colour, background, classes, 10.0)
        torch.testing.assert_close(result.scores[:, 150, x], torch.tensor(expected[1:]))
    # red: kitty's 0.949 wins; green: dog's 0.743 > 0.5; blue: sky's 0.949 wins -> background
    assert probabilities(RED, background, classes, 10.0)[1] == pytest.approx(0.9492, abs=1e-4)
    assert probabilities(GREEN, background, classes, 10.0)[2] == pytest.approx(0.7427, abs=1e-4)
    assert probabilities(BLUE, background, classes, 10.0)[0] == pytest.approx(0.9487, abs=1e-4)
    row = result.labels[150]
    assert (row[:280] == 0).all() and (row[320:580] == 1).all() and (row[620:] == -1).all()
    # a threshold above dog's probability (0.743) turns green into background; red (0.949) stays
    seg.preset = get_preset("handcrafted", background_rule="probability", logit_scale=10.0, background_threshold=0.8)
    row = seg.segment(image, classes, background=True, background_names=background).labels[150]
    assert (row[:280] == 0).all() and (row[320:580] == -1).all() and (row[620:] == -1).all()
    # the rule can be asked for by name whatever the preset's default
    seg.preset = get_preset("handcrafted", logit_scale=10.0, background_threshold=0.5)
    named = seg.segment(image, classes, background="probability", background_names=background).labels[150]
    assert (named[320:580] == 1).all()


def test_probability_without_background_names_uses_the_threshold_only():
    classes = [["cat", "kitty"], ["dog"]]
    seg = segmenter(LinearMatcher(WEIGHTS), background_rule="probability", logit_scale=10.0,
                    background_threshold=0.7)
    image = stripes((RED, 300), (GREEN, 300), (BLUE, 300))
    result = seg.segment(image, classes, background=True, return_scores=True)
    expected = probabilities(GREEN, [], classes, 10.0)
    torch.testing.assert_close(result.scores[:, 150, 450], torch.tensor(expected[1:]))
    assert expected[2] == pytest.approx(0.8991, abs=1e-4)  # e^4.5 / (e^2 + e^1 + e^4.5)
    blue = probabilities(BLUE, [], classes, 10.0)
    assert blue[1] == pytest.approx(0.5761, abs=1e-4)  # kitty's e^2 / (e^1 + e^2 + e^1) < 0.7
    row = result.labels[150]
    assert (row[:280] == 0).all() and (row[320:580] == 1).all() and (row[620:] == -1).all()


def test_a_name_in_background_and_in_a_class_is_queried_twice_and_ties_go_to_background():
    """SCLIP's COCO-Object lists: 'bed' is a background synonym and a class."""
    m = LinearMatcher({**WEIGHTS, "bed": (0.9, 0.0, 0.0)})
    seg = segmenter(m, background_rule="probability", logit_scale=10.0, background_threshold=0.0)
    image = stripes((RED, 300), (GREEN, 300))
    result = seg.segment(image, ["bed", "dog"], background=True, background_names=["sky", "bed"],
                         return_scores=True)
    assert m.prepared[-1] == ["sky", "bed", "dog"]  # scored once
    # red: z = sky 0, bed 9, dog 5; the softmax counts bed twice
    bed = math.exp(9.0) / (math.exp(0.0) + 2 * math.exp(9.0) + math.exp(5.0))
    torch.testing.assert_close(result.scores[0, 150, 150], torch.tensor(bed))
    assert (result.labels[150, :280] == -1).all()  # bed's tie goes to background (class 0 first)
    assert (result.labels[150, 320:] == 1).all()


@pytest.mark.parametrize("green, kept", [(80, True), (30, False)])
def test_area_rule_counts_against_the_non_background_area(green, kept):
    """SCLIP's area_thd: a class whose argmax area is not above area_thd x the non-background area loses its
    probabilities. 80 px of 1000 is 8% of the image but 16% of the non-background half: kept (a whole-image
    denominator would remove it); 30 px is 6% of the non-background area: removed."""
    classes, background = [["cat", "kitty"], ["dog"]], ["sky", "wall"]
    seg = segmenter(LinearMatcher(WEIGHTS), background_rule="probability", logit_scale=10.0,
                    background_threshold=0.0, area_threshold=0.1)
    image = stripes((RED, 500 - green), (GREEN, green), (BLUE, 500))
    labels = seg.segment(image, classes, background=True, background_names=background).labels[150]
    middle = labels[500 - green + 8:500 - 8]
    if kept:
        assert (middle == 1).all()
    else:
        # dog's probabilities zeroed: the best of the rest at green is wall (background) — by hand:
        p = probabilities(GREEN, background, classes, 10.0)
        assert p[0] > p[1]
        assert (middle == -1).all()
    assert (labels[:400] == 0).all() and (labels[520:] == -1).all()


def test_background_rule_arguments_are_checked():
    seg = segmenter(LinearMatcher(WEIGHTS))
    image = stripes((RED, 50))
    with pytest.raises(ProtosegError, match="background must be"):
        seg.segment(image, ["cat"], background="softmax")
    with pytest.raises(ProtosegError, match="only by the probability"):
        seg.segment(image, ["cat"], background=True, background_names=["sky"])
    for bad, message in [({"background_rule": "probability", "background_threshold": 1.5}, "background_threshold"),
                         ({"area_threshold": 0.1}, "area_threshold"),
                         ({"logit_scale": 0.0}, "logit_scale")]:
        with pytest.raises(ProtosegError, match=message):
            get_preset("handcrafted", **bad)
