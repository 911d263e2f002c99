"""DPSM's switches beyond the paper: capacity, supply units, per-proposal epsilon, exact transport, the
nearest-part reference, caller-given proposals and SAM-order composition — against POT and hand-solved cases."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import ot
import pytest
import torch
import torch.nn.functional as F

from protoseg.bank import PrototypeBank
from protoseg.config.matchers import DpsmOptions
from protoseg.config.segment import get_preset
from protoseg.config.superpixels import SuperpixelParams
from protoseg.errors import ProtosegError
from protoseg.match.dpsm import DPSMMatcher, SubRegions
from protoseg.match.dpsm.exact import capacity_candidates
from protoseg.match.dpsm.modes import proposal_epsilon
from protoseg.models.handcrafted import HANDCRAFTED_ID
from protoseg.segment import Segmenter


class _Models:
    device = torch.device("cpu")
    sam = None


def _unit(*v: float) -> np.ndarray:
    x = np.asarray(v, np.float32)
    return x / np.linalg.norm(x)


def _looks_bank() -> PrototypeBank:
    """A car in two looks (a red view, a blue view) and a brick wall whose part is 0.1 away from red paint."""
    red, blue, brick = _unit(1, 0, 0), _unit(0, 1, 0), _unit(0.9, 0, np.sqrt(1 - 0.81))
    table = {"label": ["car", "car", "brick"], "level": ["part"] * 3, "image_id": [0, 1, 2],
             "part_id": [0, 0, 0], "supply": [0.5, 0.5, 1.0]}
    return PrototypeBank.create(np.stack([red, blue, brick]), table, method="test", feature_encoder="test",
                                dtype="float32")


def _red_proposal() -> SubRegions:
    return SubRegions(torch.tensor([[[1.0, 0.0, 0.0]]]), torch.ones(1, 1), torch.ones(1, 1, dtype=torch.bool),
                      torch.tensor([[1.0, 0.0, 0.0]]), torch.ones(1, 2, 2, dtype=torch.bool))


def _matcher(bank: PrototypeBank, classes: list[str], **options) -> DPSMMatcher:
    m = DPSMMatcher(bank, _Models(), DpsmOptions(proposals="superpixels", **options))
    m.prepare(classes)
    return m


@pytest.mark.parametrize("solver", ["exact", "sinkhorn"])
def test_capacity_lets_the_matching_look_serve_the_whole_proposal(solver):
    kw = {"emd_solver": solver, "epsilon": 0.002, "iterations": 20000, "stop_thr": 1e-7}
    # tau = 1 (the paper): the red view owns half of the car's unit, the brick (cost 0.1) takes the rest
    paper = _matcher(_looks_bank(), ["car", "brick"], **kw).proposal_scores(_red_proposal())[0]
    torch.testing.assert_close(paper, torch.tensor([0.5, 0.5]), atol=2e-3, rtol=0)
    # tau = 2: the red view alone holds the whole demand
    doubled = _matcher(_looks_bank(), ["car", "brick"], capacity=2.0, **kw).proposal_scores(_red_proposal())[0]
    torch.testing.assert_close(doubled, torch.tensor([1.0, 0.0]), atol=2e-3, rtol=0)
    # one unit per support view does the same at tau = 1
    per_view = _matcher(_looks_bank(), ["car", "brick"], supply="view", **kw).proposal_scores(_red_proposal())[0]
    torch.testing.assert_close(per_view, torch.tensor([1.0, 0.0]), atol=2e-3, rtol=0)


def _random_bank(seed: int, classes: int = 3, views: int = 4, parts: int = 5, dim: int = 6) -> PrototypeBank:
    rng = np.random.default_rng(seed)
    table = {"label": [], "level": [], "image_id": [], "part_id": [], "supply": []}
    vectors = []
    for c in range(classes):
        for v in range(views):
            area = rng.random(parts) + 0.2
            for f in range(parts):
                vectors.append(rng.standard_normal(dim))
                table["label"].append(f"c{c}"), table["level"].append("part")
                table["image_id"].append(c * views + v), table["part_id"].append(f)
                table["supply"].append(float(area[f] / area.sum() / views))  # eq. 7
            vectors.append(rng.standard_normal(dim))  # the view's whole-level row
            table["label"].append(f"c{c}"), table["level"].append("whole")
            table["image_id"].append(c * views + v), table["part_id"].append(-1), table["supply"].append(0.0)
    return PrototypeBank.create(np.asarray(vectors, np.float32), table, method="test", feature_encoder="test",
                                dtype="float32")


def _random_proposals(seed: int, N: int = 3, n: int = 4, dim: int = 6) -> SubRegions:
    g = torch.Generator().manual_seed(seed)
    feats = F.normalize(torch.randn(N, n, dim, generator=g), dim=-1)
    valid = torch.ones(N, n, dtype=torch.bool)
    if n > 1:
        valid[1, -1] = False  # one padded sub-region
    demand = torch.rand(N, n, generator=g) + 0.1
    demand = torch.where(valid, demand, torch.zeros_like(demand))
    feats = torch.where(valid[..., None], feats, torch.zeros_like(feats))
    return SubRegions(feats, demand / demand.sum(1, keepdim=True), valid, feats.mean(1), torch.ones(N, 2, 2).bool())


def _pot_class_mass(m: DPSMMatcher, sub: SubRegions, p: int, eps: float | None) -> np.ndarray:
    """Eq. 10-11 for proposal ``p`` with POT on the full, unpruned problem."""
    live = sub.valid[p].numpy()
    a = m.suppliers.supply.double().numpy()
    d = sub.demand[p].double().numpy()[live]
    M = 1 - m.suppliers.prototypes.double().numpy() @ sub.features[p].double().numpy()[live].T  # [m, n]
    b = np.concatenate([d, [a.sum() - d.sum()]])
    M = np.concatenate([M, np.zeros((len(a), 1))], 1)
    plan = ot.emd(a, b, M, numItermax=10**7) if eps is None else ot.sinkhorn(a, b, M, eps, numItermax=20000,
                                                                               stopThr=1e-10, method="sinkhorn_log")
    return np.bincount(m.suppliers.prototype_class.numpy(), weights=plan[:, :-1].sum(1), minlength=len(m.classes))


@pytest.mark.parametrize("capacity,supply", [(1.0, "class"), (3.0, "class"), (1.0, "view"), (2.0, "cluster")])
def test_sinkhorn_with_switches_equals_pot(capacity, supply):
    bank = _random_bank(1)
    m = _matcher(bank, ["c0", "c1", "c2"], capacity=capacity, supply=supply, supply_clusters=2, epsilon=0.05,
                 iterations=5000, stop_thr=1e-7)
    sub = _random_proposals(2)
    probs = m.proposal_scores(sub)
    for p in range(3):
        np.testing.assert_allclose(probs[p].numpy(), _pot_class_mass(m, sub, p, 0.05), atol=2e-4)
    torch.testing.assert_close(probs.sum(1), torch.ones(3), atol=1e-4, rtol=0)


@pytest.mark.parametrize("capacity,supply", [(1.0, "class"), (4.0, "class"), (1.0, "view")])
def test_exact_transport_on_capacity_candidates_equals_pot_on_the_full_problem(capacity, supply):
    bank = _random_bank(3, views=6, parts=8)
    m = _matcher(bank, ["c0", "c1", "c2"], capacity=capacity, supply=supply, emd_solver="exact")
    for sub in (_random_proposals(4), _random_proposals(5, N=4, n=1)):  # many / single sub-regions
        probs = m.proposal_scores(sub)
        for p in range(len(probs)):
            np.testing.assert_allclose(probs[p].numpy(), _pot_class_mass(m, sub, p, None), atol=1e-5)
    sub = _random_proposals(4)
    # the candidates really prune (so the equality above exercises the pruning)
    live = sub.valid[0]
    cost = (1 - sub.features[0][live] @ m.suppliers.prototypes.T).double()
    keep = capacity_candidates(cost, m.suppliers.supply.double(), 1.0)
    assert 0 < int(keep.sum()) < len(keep)


def test_capacity_candidates_hold_each_sub_regions_cheapest_prefix():
    cost = torch.tensor([[0.3, 0.1, 0.2, 0.9, 0.5], [0.8, 0.7, 0.6, 0.0, 0.95]], dtype=torch.float64)
    supply = torch.tensor([0.4, 0.3, 0.2, 0.5, 0.6], dtype=torch.float64)
    # column 0 by cost: 1 (0.3), 2 (0.5), 0 (0.9 >= 0.8 -> cut-off at 0.3); column 1: 3 (0.5), 2 (0.7 -> 0.6)
    keep = capacity_candidates(cost, supply, 0.8)
    assert keep.tolist() == [True, True, True, True, False]


def test_supply_units_per_view_and_per_cluster():
    bank = _random_bank(5, classes=2, views=4, parts=3)
    for supply, capacity in (("class", 2.0), ("view", 1.5), ("cluster", 3.0)):
        m = _matcher(bank, ["c0", "c1"], supply=supply, capacity=capacity, supply_clusters=2)
        s = m.suppliers
        totals = torch.zeros(int(s.supply_unit.max()) + 1).index_add_(0, s.supply_unit, s.supply)
        torch.testing.assert_close(totals, torch.full_like(totals, capacity))
        units_per_class = [len(torch.unique(s.supply_unit[s.prototype_class == c])) for c in range(2)]
        assert units_per_class == {"class": [1, 1], "view": [4, 4], "cluster": [2, 2]}[supply]
        if supply == "view":  # a unit is exactly one support view
            assert torch.equal(m.suppliers.supply_unit, m.suppliers.support_group)
        # within a unit, parts keep their eq. 7 area shares
        raw = torch.from_numpy(np.asarray(bank.table["supply"])[bank.table["level"] == "part"]).float()
        for u in torch.unique(m.suppliers.supply_unit):
            sel = m.suppliers.supply_unit == u
            torch.testing.assert_close(m.suppliers.supply[sel], capacity * raw[sel] / raw[sel].sum())


def test_cluster_supply_groups_views_by_their_whole_prototypes():
    e = np.eye(4, dtype=np.float32)
    # views 0 and 1 are one look (whole e0), views 2 and 3 another (whole e1)
    wholes, parts = [e[0], e[0] + 0.05 * e[2], e[1], e[1] + 0.05 * e[3]], [e[2], e[3], e[2], e[3]]
    vectors = np.stack(wholes + parts)
    table = {"label": ["a"] * 8, "level": ["whole"] * 4 + ["part"] * 4, "image_id": [0, 1, 2, 3] * 2,
             "part_id": [-1] * 4 + [0] * 4, "supply": [0.0] * 4 + [0.25] * 4}
    bank = PrototypeBank.create(vectors, table, method="test", feature_encoder="test", dtype="float32")
    m = _matcher(bank, ["a"], supply="cluster", supply_clusters=2)
    units = m.suppliers.supply_unit.tolist()
    assert units[0] == units[1] != units[2]
    assert units[2] == units[3]
    torch.testing.assert_close(m.suppliers.supply, torch.full((4,), 0.5))
    # a bank with its own coarse clusters keeps them
    clustered = dict(table, coarse_cluster=[0, 0, 0, 1, 0, 0, 0, 1])
    bank = PrototypeBank.create(vectors, clustered, method="test", feature_encoder="test", dtype="float32")
    m = _matcher(bank, ["a"], supply="cluster", supply_clusters=2)
    assert m.suppliers.supply_unit.tolist() == [0, 0, 0, 1]


def test_auto_epsilon_is_the_scaled_deciding_spread_and_solves_at_that_epsilon():
    bank = _random_bank(7)
    m = _matcher(bank, ["c0", "c1", "c2"], epsilon="auto", epsilon_ratio=0.7, epsilon_floor=1e-3,
                 iterations=20000, stop_thr=1e-7)
    sub = _random_proposals(8)
    cost = 1 - sub.features @ m.suppliers.prototypes.T
    eps = proposal_epsilon(cost, sub.demand, m.prepared())
    classes = m.suppliers.prototype_class.numpy()
    for p in range(3):
        spread = 0.0
        for j in np.flatnonzero(sub.valid[p].numpy()):
            best = sorted(cost[p, j].numpy()[classes == c].min() for c in range(3))
            spread += float(sub.demand[p, j]) * (best[1] - best[0])
        assert float(eps[p]) == pytest.approx(max(0.7 * spread, 1e-3), rel=1e-5)
    probs = m.proposal_scores(sub)
    for p in range(3):
        np.testing.assert_allclose(probs[p].numpy(), _pot_class_mass(m, sub, p, float(eps[p])), atol=2e-4)
    assert len(set(np.round(eps.numpy(), 6))) == 3  # one epsilon per proposal
    floor = _matcher(bank, ["c0", "c1", "c2"], epsilon="auto", epsilon_ratio=1e-9, epsilon_floor=0.02)
    torch.testing.assert_close(proposal_epsilon(cost, sub.demand, floor.prepared()), torch.full((3,), 0.02))


def test_nearest_part_votes_each_sub_regions_demand_and_is_the_large_capacity_limit():
    bank = _random_bank(9)
    sub = _random_proposals(10)
    m = _matcher(bank, ["c0", "c1", "c2"], mode="nearest-part")
    votes = m.proposal_scores(sub)
    cos = sub.features @ m.suppliers.prototypes.T
    expected = torch.zeros(3, 3)
    for p in range(3):
        for j in np.flatnonzero(sub.valid[p].numpy()):
            expected[p, m.suppliers.prototype_class[cos[p, j].argmax()]] += sub.demand[p, j]
    torch.testing.assert_close(votes, expected)
    huge = _matcher(bank, ["c0", "c1", "c2"], emd_solver="exact", capacity=1e4).proposal_scores(sub)
    torch.testing.assert_close(huge, votes, atol=1e-5, rtol=0)


def test_confident_then_smaller_composition():
    m = _matcher(_looks_bank(), ["car", "brick"])
    m.options = replace(m.options, composition="confident-smallest")
    masks = torch.zeros(3, 1, 4, dtype=torch.bool)
    masks[0, 0, :] = True  # whole row, confident 0.9
    masks[1, 0, :2] = True  # nested, equally confident (0.9), smaller: wins pixels 0-1
    masks[2, 0, 3] = True  # tiny but less confident (0.6): loses pixel 3 to proposal 0
    scores = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4]])
    out = m.compose(scores, masks)[:, 0]
    torch.testing.assert_close(out, torch.tensor([[0.1, 0.1, 0.9, 0.9], [0.9, 0.9, 0.1, 0.1]]))
    m.options = replace(m.options, composition="confident")  # ties resolved by order, not by size
    assert not torch.equal(m.compose(scores, masks)[:, 0], out)


def _handcrafted_bank() -> PrototypeBank:
    from protoseg.models.handcrafted import HandcraftedFeatures

    feats = HandcraftedFeatures()
    rows, table = [], {"label": [], "level": [], "image_id": [], "part_id": [], "supply": []}
    for i, colour in enumerate([(220, 30, 30), (30, 30, 220)]):
        image = torch.zeros(1, 3, 64, 64)
        image[0] = torch.tensor(colour, dtype=torch.float32)[:, None, None]
        f = feats(image)[0].flatten(1).T
        for level in ("part", "whole"):
            rows.append(f.mean(0))
            table["label"].append(["red", "blue"][i]), table["level"].append(level)
            table["image_id"].append(i), table["part_id"].append(0 if level == "part" else -1)
            table["supply"].append(1.0 if level == "part" else 0.0)
    return PrototypeBank.create(torch.stack(rows).numpy(), table, method="test", feature_encoder=HANDCRAFTED_ID,
                                dtype="float32")


def _given_segmenter(**options) -> Segmenter:
    preset = get_preset("handcrafted-dpsm", scale=(96, 64), crop=64, stride=48,
                        superpixels=SuperpixelParams(scale=50, sigma=0.5, min_size=20),
                        matcher_options={"proposals": "given", **options})
    return Segmenter(preset, _handcrafted_bank())


def test_given_proposals_are_resized_and_cropped_per_window(monkeypatch):
    image = np.zeros((32, 48, 3), np.uint8)
    image[:, :24] = (220, 30, 30)
    image[:, 24:] = (30, 30, 220)
    # deliberately wrong proposals: one straddles both colours, so the label follows the proposals
    masks = np.zeros((2, 32, 48), bool)
    masks[0, :, :30] = True
    masks[1, :, 30:] = True
    seg = _given_segmenter()
    seen = []
    real = seg.matcher.propose
    monkeypatch.setattr(seg.matcher, "propose", lambda crop, img, given=None: seen.append(given) or
                        real(crop, img, given))
    result = seg.segment(image, ["red", "blue"], proposals=masks)
    # the image is resized to 64 x 96 (two windows of 64 at x = 0 and 32): masks follow, nearest
    assert [tuple(g.shape) for g in seen] == [(2, 64, 64), (2, 64, 64)]
    big = F.interpolate(torch.from_numpy(masks)[None].float(), size=(64, 96), mode="nearest")[0] > 0.5
    assert torch.equal(seen[0], big[:, :, :64]) and torch.equal(seen[1], big[:, :, 32:])
    assert (result.labels[:, :24] == 0).all() and (result.labels[:, 32:] == 1).all()
    assert (result.labels[:, 24:30] == 0).all()  # blue pixels inside the first proposal follow its majority


def test_given_proposals_errors():
    image = np.zeros((32, 48, 3), np.uint8)
    seg = _given_segmenter()
    with pytest.raises(ProtosegError, match="proposals=masks"):
        seg.segment(image, ["red", "blue"])
    with pytest.raises(ProtosegError, match="bool \\[N, H, W\\]"):
        seg.segment(image, ["red", "blue"], proposals=np.ones((2, 10, 10), bool))
    own = Segmenter(get_preset("handcrafted-dpsm", scale=(96, 64), crop=64, stride=48), _handcrafted_bank())
    with pytest.raises(ProtosegError, match="proposals='given'"):
        own.segment(image, ["red", "blue"], proposals=np.ones((1, 32, 48), bool))


def test_switch_options_are_validated():
    for bad, match in (({"capacity": 0.5}, "capacity"), ({"supply": "image"}, "supply"),
                       ({"epsilon": "fast"}, "epsilon"), ({"epsilon": 0.0}, "epsilon"),
                       ({"epsilon_ratio": 0.0}, "epsilon_ratio"), ({"mode": "voting"}, "mode"),
                       ({"composition": "largest"}, "composition"), ({"supply_clusters": 0}, "supply_clusters")):
        with pytest.raises(ProtosegError, match=match):
            DpsmOptions(**bad)
    with pytest.raises(ProtosegError, match="auto"):
        DPSMMatcher(_looks_bank(), _Models(), DpsmOptions(mode="single", proposals="superpixels", epsilon="auto"))
    o = DpsmOptions()  # the paper's setting by default
    assert (o.capacity, o.supply, o.epsilon, o.emd_solver, o.mode, o.composition) == (
        1.0, "class", 0.05, "sinkhorn", "subregion-ot", "mean")
    assert DpsmOptions(epsilon="auto").epsilon == "auto" and DpsmOptions(epsilon=1).epsilon == 1.0


def test_handcrafted_dpsm_preset_is_sam_free_subregion_transport():
    p = get_preset("handcrafted-dpsm")
    assert (p.features, p.sam, p.text, p.matcher) == ("handcrafted", None, None, "dpsm")
    o = p.matcher_options
    assert o.mode == "subregion-ot" and o.proposals == "superpixels"
    assert p.superpixels == get_preset("handcrafted").superpixels  # sub-regions = the bank's parts
