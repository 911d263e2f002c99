"""DPSM matcher: sub-regions, the four matching modes on a hand-solved case, composition, the full window."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import ot
import pytest
import torch
import torch.nn.functional as F
from tiny_models import tiny_sam

from protoseg.bank import PrototypeBank
from protoseg.config.matchers import DpsmOptions
from protoseg.config.segment import get_preset
from protoseg.config.superpixels import SuperpixelParams
from protoseg.errors import ProtosegError
from protoseg.match import build_matcher
from protoseg.match.dpsm import DPSMMatcher, SubRegions
from protoseg.match.dpsm.subregions import subregion_weights
from protoseg.models import ModelSet
from protoseg.models.handcrafted import HANDCRAFTED_ID
from protoseg.proposals import generate_masks
from protoseg.regions import region_weights
from protoseg.segment import Segmenter


class _Models:
    device = torch.device("cpu")
    sam = None


def _car_tomato_bank() -> PrototypeBank:
    """A car made of parts e1 + e2; a tomato whose single prototype is close to e1."""
    e = np.eye(3, dtype=np.float32)
    tomato = e[0] + 0.5 * e[2]
    vectors = np.stack([e[0] + e[1], e[0], e[1], tomato, tomato])
    table = {"label": ["car", "car", "car", "tomato", "tomato"],
             "level": ["whole", "part", "part", "whole", "part"],
             "image_id": [0, 0, 0, 1, 1], "part_id": [-1, 0, 1, -1, 0],
             "supply": [0.0, 0.5, 0.5, 0.0, 1.0]}
    return PrototypeBank.create(vectors, table, method="test", feature_encoder="test", dtype="float32")


def _car_proposal() -> SubRegions:
    """One proposal: 80 % looks like part e1, 20 % like part e2."""
    feats = torch.eye(3)[:2][None]  # [1, 2, 3]
    whole = F.normalize(torch.tensor([[0.8, 0.2, 0.0]]), dim=-1)
    return SubRegions(feats, torch.tensor([[0.8, 0.2]]), torch.ones(1, 2, dtype=torch.bool), whole,
                      torch.ones(1, 4, 4, dtype=torch.bool))


def _matcher(mode: str, **kw) -> DPSMMatcher:
    m = DPSMMatcher(_car_tomato_bank(), _Models(), DpsmOptions(mode=mode, proposals="superpixels", **kw))
    m.prepare(["car", "tomato"])
    return m


def test_subregion_ot_beats_whole_cosine_on_a_class_made_of_parts():
    sub = _car_proposal()
    cosine = _matcher("image-to-image").proposal_scores(sub)[0]
    # whole-prototype cosine: car 1/sqrt(2) / |(.8,.2)| = 0.8575 < tomato .8 / (|(.8,.2)| * |(1,.5)|) = 0.8677
    torch.testing.assert_close(cosine, torch.tensor([0.8575, 0.8677]), atol=1e-4, rtol=0)
    probs = _matcher("subregion-ot", epsilon=0.01, iterations=5000, stop_thr=1e-7).proposal_scores(sub)[0]
    # hand-solved eq. 10: car's e1 part fills 0.5 of sub-region A, its e2 part all of B (0.2); the tomato
    # covers A's remaining 0.3 at cost 0.106; everything else goes to the dustbin -> P = (0.7, 0.3)
    torch.testing.assert_close(probs, torch.tensor([0.7, 0.3]), atol=2e-3, rtol=0)
    assert abs(float(probs.sum()) - 1) < 1e-5


@pytest.mark.parametrize("mode", ["image-to-class", "single"])
def test_emd_modes_equal_exact_emd(mode):
    sub = _car_proposal()
    tomato_cost = 1 - 1 / np.sqrt(1.25)
    # car: e1 -> A 0.5 (0), e2 -> A 0.3 (1), e2 -> B 0.2 (0); tomato: -> A 0.8 (0.106), -> B 0.2 (1)
    expected = torch.tensor([1 - 0.3, 1 - (0.8 * tomato_cost + 0.2)], dtype=torch.float32)
    exact = _matcher(mode, emd_solver="exact").proposal_scores(sub)[0]
    torch.testing.assert_close(exact.float(), expected, atol=1e-6, rtol=0)
    entropic = _matcher(mode, epsilon=0.005, iterations=5000, stop_thr=1e-7).proposal_scores(sub)[0]
    torch.testing.assert_close(entropic, expected, atol=5e-3, rtol=0)


def test_single_mode_takes_the_best_support_image():
    e = np.eye(4, dtype=np.float32)
    # class "a" has two support images: one made of e0 only, one of e1 + e2; class "b" one of e3
    vectors = np.stack([e[0], e[1], e[2], e[3]])
    table = {"label": ["a", "a", "a", "b"], "level": ["part"] * 4, "image_id": [0, 1, 1, 2],
             "coarse_cluster": [-1, -1, -1, -1], "supply": [0.5, 0.25, 0.25, 1.0]}
    bank = PrototypeBank.create(vectors, table, method="test", feature_encoder="test", dtype="float32")
    m = DPSMMatcher(bank, _Models(), DpsmOptions(mode="single", proposals="superpixels", emd_solver="exact"))
    m.prepare(["a", "b"])
    torch.testing.assert_close(m.suppliers.supply, torch.tensor([0.5, 0.25, 0.25, 1.0]))  # per class sums to 1
    sub = SubRegions(torch.eye(4)[1:3][None], torch.tensor([[0.5, 0.5]]), torch.ones(1, 2, dtype=torch.bool),
                     torch.zeros(1, 4), torch.ones(1, 2, 2, dtype=torch.bool))
    scores = m.proposal_scores(sub)[0]
    # image 1 of "a" matches both sub-regions exactly (EMD 0); "b" is orthogonal (EMD 1)
    torch.testing.assert_close(scores.float(), torch.tensor([1.0, 0.0]), atol=1e-6, rtol=0)
    c = DPSMMatcher(bank, _Models(), DpsmOptions(mode="image-to-class", proposals="superpixels",
                                                emd_solver="exact"))
    c.prepare(["a", "b"])
    # all parts of "a" at once: half of the supply sits on e0, which costs 1 to ship anywhere
    a_cost = ot.emd2(np.array([0.5, 0.25, 0.25]), np.array([0.5, 0.5]),
                     1 - np.eye(4)[:3] @ np.eye(4)[1:3].T)
    assert float(c.proposal_scores(sub)[0, 0]) == pytest.approx(1 - a_cost)


def test_supply_groups_follow_coarse_clusters():
    vectors = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    table = {"label": ["a"] * 4, "level": ["part"] * 4, "image_id": [0, 1, 2, 3],
             "coarse_cluster": [0, 0, 1, 1], "supply": [1.0, 1.0, 1.0, 1.0]}
    bank = PrototypeBank.create(vectors, table, method="test", feature_encoder="test", dtype="float32")
    m = DPSMMatcher(bank, _Models(), DpsmOptions(mode="single", proposals="superpixels"))
    m.prepare(["a"])
    assert m.suppliers.support_group.tolist() == [0, 0, 1, 1]
    torch.testing.assert_close(m.suppliers.supply, torch.full((4,), 0.25))


def test_missing_class_is_a_user_error():
    m = DPSMMatcher(_car_tomato_bank(), _Models(), DpsmOptions(proposals="superpixels"))
    with pytest.raises(ProtosegError, match="zebra"):
        m.prepare(["car", "zebra"])
    with pytest.raises(ProtosegError, match="mode"):
        DPSMMatcher(_car_tomato_bank(), _Models(), DpsmOptions(mode="nearest", proposals="superpixels"))
    with pytest.raises(ProtosegError, match="SAM"):
        DPSMMatcher(_car_tomato_bank(), _Models(), DpsmOptions(proposals="sam"))


@pytest.mark.parametrize("mode", ["area", "point"])
def test_subregion_weights_equal_per_mask_region_weights(mode):
    rng = np.random.default_rng(3)
    fine = torch.from_numpy(rng.integers(0, 5, (23, 31)))
    masks = torch.from_numpy(rng.random((3, 23, 31)) < 0.5)
    masks[2] = False
    masks[2, :4, :4] = True
    weights, area, proposal = subregion_weights(masks, fine, (5, 7), mode)
    rows = []
    for p in range(3):
        labels = torch.where(masks[p], fine, -1)
        w = region_weights(labels, (5, 7), mode, num_regions=5)
        present = torch.bincount(labels[masks[p]], minlength=5)
        for r in range(5):
            if present[r] > 0:
                rows.append((p, w[r], present[r]))
    assert proposal.tolist() == [p for p, _, _ in rows]
    torch.testing.assert_close(weights, torch.stack([w for _, w, _ in rows]))
    assert area.tolist() == [float(a) for _, _, a in rows]
    chunked = subregion_weights(masks, fine, (5, 7), mode, chunk=2)
    for got, want in zip(chunked, (weights, area, proposal), strict=True):
        assert torch.equal(got, want)


def test_composition_rules():
    m = _matcher("subregion-ot")
    masks = torch.zeros(2, 1, 3, dtype=torch.bool)
    masks[0, 0, :2] = True  # big proposal covers pixels 0, 1
    masks[1, 0, 1] = True  # small proposal covers pixel 1
    scores = torch.tensor([[0.9, 0.1], [0.4, 0.6]])
    m.options = replace(m.options, composition="mean")
    torch.testing.assert_close(m.compose(scores, masks)[:, 0], torch.tensor([[0.9, 0.65, 0.0], [0.1, 0.35, 0.0]]))
    m.options = replace(m.options, composition="smallest")
    torch.testing.assert_close(m.compose(scores, masks)[:, 0], torch.tensor([[0.9, 0.4, 0.0], [0.1, 0.6, 0.0]]))
    m.options = replace(m.options, composition="confident")
    torch.testing.assert_close(m.compose(scores, masks)[:, 0], torch.tensor([[0.9, 0.9, 0.0], [0.1, 0.1, 0.0]]))


def _handcrafted_bank(classes=("red", "blue")) -> PrototypeBank:
    from protoseg.models.handcrafted import HandcraftedFeatures

    feats = HandcraftedFeatures()
    rows, table = [], {"label": [], "level": [], "image_id": [], "part_id": [], "supply": []}
    for i, colour in enumerate([(220, 30, 30), (30, 30, 220)]):
        image = torch.zeros(1, 3, 64, 64)
        image[0] = torch.tensor(colour, dtype=torch.float32)[:, None, None]
        image[0, :, ::4] *= 0.6  # stripes: a second part
        f = feats(image)[0].flatten(1).T  # [hw, D]
        for part, sel in enumerate([slice(0, None, 2), slice(1, None, 2)]):
            rows.append(f[sel].mean(0))
            table["label"].append(classes[i]), table["level"].append("part"), table["image_id"].append(i)
            table["part_id"].append(part), table["supply"].append(0.5)
        rows.append(f.mean(0))
        table["label"].append(classes[i]), table["level"].append("whole"), table["image_id"].append(i)
        table["part_id"].append(-1), table["supply"].append(0.0)
    return PrototypeBank.create(torch.stack(rows).numpy(), table, method="test", feature_encoder=HANDCRAFTED_ID,
                                dtype="float32")


def _two_colour_image() -> np.ndarray:
    image = np.zeros((64, 96, 3), np.uint8)
    image[:, :48] = (220, 30, 30)
    image[:, 48:] = (30, 30, 220)
    return image


@pytest.mark.parametrize("mode", ["subregion-ot", "image-to-image", "image-to-class", "single"])
def test_window_with_superpixel_proposals(mode):
    models = ModelSet("handcrafted")
    options = {"mode": mode, "proposals": "superpixels",
               "proposal_superpixels": SuperpixelParams(scale=300, sigma=0.5, min_size=200)}
    m = build_matcher("dpsm", _handcrafted_bank(), models, options,
                      superpixels=SuperpixelParams(scale=50, sigma=0.5, min_size=20))
    m.prepare(["red", "blue"])
    crop = torch.from_numpy(_two_colour_image()).permute(2, 0, 1).float()
    scores = m(crop)
    assert scores.shape == (2, 64, 96)
    labels = scores.argmax(0)
    assert (labels[:, :40] == 0).float().mean() > 0.95 and (labels[:, 56:] == 1).float().mean() > 0.95
    if mode == "subregion-ot":  # every pixel covered (fallback) and a probability vector
        torch.testing.assert_close(scores.sum(0), torch.ones(64, 96), atol=1e-4, rtol=0)


def test_segmenter_with_dpsm_preset_and_tiny_sam(tmp_path):
    sam = tiny_sam(tmp_path / "sam")
    preset = get_preset("dpsm", features="handcrafted", sam=str(sam), scale=(96, 64), crop=64, stride=48,
                        superpixels=SuperpixelParams(scale=50, sigma=0.5, min_size=20),
                        matcher_options={"sam_options": {"points_per_side": 3, "pred_iou_thresh": 0.0,
                                                         "stability_score_thresh": 0.0}})
    seg = Segmenter(preset, _handcrafted_bank())
    assert seg.matcher.sam_settings.points_per_side == 3
    result = seg.segment(_two_colour_image(), ["red", "blue"], return_scores=True)
    assert result.labels.shape == (64, 96) and set(np.unique(result.labels)) <= {0, 1}
    # a random SAM's masks are meaningless (they straddle both colours), so only the mechanics are checked:
    # SAM proposals were used and every pixel carries a class probability vector
    crop = torch.from_numpy(_two_colour_image()).permute(2, 0, 1)[:, :, :64].float()
    assert len(generate_masks(seg.matcher.models.sam, crop, seg.matcher.sam_settings)[0])
    torch.testing.assert_close(result.scores.sum(0), torch.ones(64, 96), atol=1e-3, rtol=0)


def test_dpsm_preset_models():
    p = get_preset("dpsm")
    assert (p.features, p.sam, p.text, p.matcher) == ("facebook/dinov2-base", "facebook/sam-vit-base", None, "dpsm")


def test_matchers_sharing_a_modelset_keep_their_own_sam_settings(tmp_path):
    """Two matchers with different SAM thresholds on one ModelSet propose exactly what each does alone."""
    sam = str(tiny_sam(tmp_path / "sam"))
    bank = _handcrafted_bank()
    loose = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}
    strict = {"points_per_side": 3, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 0.3}
    crop = torch.from_numpy(_two_colour_image()).permute(2, 0, 1)[:, :, :64].float()
    image = crop.permute(1, 2, 0).byte().numpy()

    def alone(options):
        return build_matcher("dpsm", bank, ModelSet("handcrafted", sam=sam),
                             {"sam_options": options}).propose(crop, image)

    shared = ModelSet("handcrafted", sam=sam)
    first = build_matcher("dpsm", bank, shared, {"sam_options": loose})
    second = build_matcher("dpsm", bank, shared, {"sam_options": strict})
    assert len(alone(loose)) != len(alone(strict))  # the settings matter for this image
    assert torch.equal(first.propose(crop, image), alone(loose))
    assert torch.equal(second.propose(crop, image), alone(strict))
    assert torch.equal(first.propose(crop, image), alone(loose))


def _superpixel_matcher(**options):
    options = {"proposals": "superpixels",
               "proposal_superpixels": SuperpixelParams(scale=300, sigma=0.5, min_size=200), **options}
    m = build_matcher("dpsm", _handcrafted_bank(), ModelSet("handcrafted"), options,
                      superpixels=SuperpixelParams(scale=50, sigma=0.5, min_size=20))
    m.prepare(["red", "blue"])
    return m


@pytest.mark.parametrize("mode", ["subregion-ot", "image-to-class"])
def test_matcher_counts_transport_problems_that_did_not_converge(mode):
    crop = torch.from_numpy(_two_colour_image()).permute(2, 0, 1).float()
    normal = _superpixel_matcher(mode=mode)
    normal(crop)
    problems = normal.stats["transport_problems"]
    assert problems > 0 and normal.stats["transport_not_converged"] == 0
    capped = _superpixel_matcher(mode=mode, iterations=1, stop_thr=1e-9)
    capped(crop)
    assert capped.stats == {"transport_problems": problems, "transport_not_converged": problems}
    capped(crop)  # counts accumulate over windows until the next prepare / reset_stats
    assert capped.stats["transport_problems"] == 2 * problems
    capped.prepare(["red", "blue"])
    assert capped.stats == {"transport_problems": 0, "transport_not_converged": 0}


def test_segmenter_reports_transport_counts_per_image():
    preset = get_preset("dpsm", features="handcrafted", sam=None, scale=(96, 64), crop=64, stride=48,
                        superpixels=SuperpixelParams(scale=50, sigma=0.5, min_size=20),
                        matcher_options={"proposals": "superpixels", "iterations": 1, "stop_thr": 1e-9})
    seg = Segmenter(preset, _handcrafted_bank())
    first = seg.segment(_two_colour_image(), ["red", "blue"])
    second = seg.segment(_two_colour_image(), ["red", "blue"])
    assert first.diagnostics["transport_problems"] > 0
    assert first.diagnostics == second.diagnostics  # per image, not accumulated
    assert first.diagnostics["transport_not_converged"] == first.diagnostics["transport_problems"]
