"""DPSM at scale: pruned transport with class aggregates, size buckets, SAM once per image, low-res filtering."""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch
import torch.nn.functional as F
from test_dpsm import _handcrafted_bank
from tiny_models import tiny_sam

from protoseg.bank import PrototypeBank
from protoseg.config.matchers import DpsmOptions
from protoseg.config.segment import get_preset
from protoseg.config.superpixels import SuperpixelParams
from protoseg.errors import ProtosegError
from protoseg.eval.ablations import SUITES
from protoseg.match.dpsm import DPSMMatcher, SubRegions, modes
from protoseg.match.dpsm.modes import buckets, costs, pruned_count, subregion_ot
from protoseg.match.transport import aggregate_suppliers, sinkhorn_grouped_mass
from protoseg.models.sam import SamPredictor
from protoseg.proposals import MaskGenerationSettings, generate_masks
from protoseg.segment import Segmenter


class _Models:
    device = torch.device("cpu")
    sam = None


def _bank(seed: int, classes: int = 6, per: int = 300, dim: int = 64, spread: float = 0.5):
    """Classes of ``per`` part prototypes around a class centre (high-dimensional, as DINOv2 parts)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g)
    vectors = F.normalize(centres.repeat_interleave(per, 0) + spread * torch.randn(classes * per, dim, generator=g),
                          dim=-1)
    supply = (torch.rand(classes * per, generator=g) + 0.1).tolist()
    table = {"label": [f"c{c}" for c in range(classes) for _ in range(per)], "level": ["part"] * (classes * per),
             "image_id": list(range(classes * per)), "part_id": [0] * (classes * per), "supply": supply}
    bank = PrototypeBank.create(vectors.numpy(), table, method="test", feature_encoder="test", dtype="float32")
    return bank, centres


def _proposals(centres: torch.Tensor, counts: list[int], seed: int, spread: float = 0.5) -> SubRegions:
    g = torch.Generator().manual_seed(seed)
    N, n, D = len(counts), max(counts), centres.shape[1]
    valid = torch.arange(n)[None] < torch.tensor(counts)[:, None]
    cls = torch.randint(len(centres), (N,), generator=g)
    feats = F.normalize(centres[cls][:, None] + spread * torch.randn(N, n, D, generator=g), dim=-1)
    feats = torch.where(valid[..., None], feats, torch.zeros_like(feats))
    demand = torch.where(valid, torch.rand(N, n, generator=g) + 0.05, torch.zeros(N, n))
    return SubRegions(feats, demand / demand.sum(1, keepdim=True), valid, feats.mean(1), torch.ones(N, 1, 1).bool())


def _matcher(bank, classes, cost_chunk_bytes=modes.COST_CHUNK_BYTES, prune_min=modes.PRUNE_MIN,
             **options) -> DPSMMatcher:
    m = DPSMMatcher(bank, _Models(), DpsmOptions(proposals="superpixels", **options),
                    cost_chunk_bytes=cost_chunk_bytes, prune_min=prune_min)
    m.prepare(classes)
    return m


def _reference(bank, classes, sub, **options):
    """Unpruned, float64, converged far below the default stop threshold."""
    m = _matcher(bank, classes, prune_keep=0.0, transport_dtype="float64", stop_thr=1e-8, iterations=20000,
                 **options)
    return subregion_ot(sub, m.prepared()).double()


# ---------------------------------------------------------------- aggregate suppliers
def test_aggregates_preserve_each_groups_supply_and_a_zero_cost_column():
    g = torch.Generator().manual_seed(0)
    cost = torch.rand(3, 5, 40, generator=g, dtype=torch.float64)
    cost[:, -1] = 0  # a dustbin-like column
    supply = torch.rand(40, generator=g, dtype=torch.float64)
    groups = torch.arange(4).repeat_interleave(10)
    columns = torch.arange(5)[None].expand(3, 5) < 4  # rank by the real columns only
    a, M, grp = aggregate_suppliers(cost, supply, groups, 4, keep=6, eps=0.05, columns=columns)
    assert a.shape == (3, 10) and M.shape == (3, 5, 10) and grp.shape == (3, 10)
    for b in range(3):
        per_group = torch.zeros(4, dtype=torch.float64).index_add_(0, grp[b], a[b])
        torch.testing.assert_close(per_group, torch.zeros(4, dtype=torch.float64).index_add_(0, groups, supply))
    torch.testing.assert_close(M[:, -1], torch.zeros(3, 10, dtype=torch.float64))
    # the kept suppliers are each problem's cheapest (by their best column) with their own costs
    best = cost[:, :-1].amin(1)
    for b in range(3):
        kept_cost = M[b, :, :6]
        ranked = best[b].topk(6, largest=False).indices
        torch.testing.assert_close(kept_cost, cost[b][:, ranked])


def test_aggregate_cost_is_the_supply_weighted_soft_minimum_and_uneven_groups_work():
    cost = torch.tensor([[[0.0, 0.1, 0.3, 0.5, 0.2, 0.9, 0.4]]], dtype=torch.float64)
    supply = torch.tensor([1.0, 2.0, 1.0, 1.0, 3.0, 1.0, 1.0], dtype=torch.float64)
    groups = torch.tensor([0, 0, 0, 1, 1, 2, 2])  # uneven, contiguous
    a, M, grp = aggregate_suppliers(cost, supply, groups, 3, keep=1, eps=0.1)
    # kept: supplier 0 (cost 0); group 0's rest is {1, 2}, group 1 all, group 2 all
    assert grp[0].tolist() == [0, 0, 1, 2]
    torch.testing.assert_close(a[0], torch.tensor([1.0, 3.0, 4.0, 2.0], dtype=torch.float64))
    for col, members in ((1, [1, 2]), (2, [3, 4]), (3, [5, 6])):
        w = supply[members] / supply[members].sum()
        expected = -0.1 * torch.log((w * torch.exp(-cost[0, 0, members] / 0.1)).sum())
        torch.testing.assert_close(M[0, 0, col], expected)
    # a group kept entirely gets an empty aggregate (supply 0)
    a, M, grp = aggregate_suppliers(cost, supply, groups, 3, keep=4, eps=0.1)  # keeps 0, 1, 4, 2: all of group 0
    assert float(a[0, 4]) == 0.0 and grp[0, 4] == 0 and float(M[0, 0, 4]) == 0.0


def test_merging_identical_suppliers_is_exact():
    """Members of one aggregate with equal cost rows: the class masses equal the unpruned ones."""
    bank, centres = _bank(1, classes=4, per=100, dim=16)
    vectors = bank.vectors(np.arange(400)).copy()
    vectors[50:100] = vectors[50]  # class 0's second half: one look, 50 times
    vectors[150:200] = vectors[150]
    bank = PrototypeBank.create(vectors, dict(bank.table), method="test", feature_encoder="test", dtype="float32")
    sub = _proposals(centres, [3, 5], seed=2)
    classes = [f"c{c}" for c in range(4)]
    ref = _reference(bank, classes, sub)
    # keep the 8 cheapest: everything else per class is either identical (class 0 / 1 halves) or far
    pruned = _matcher(bank, classes, prune_keep=0.02, prune_min=8, stop_thr=1e-9, iterations=20000,
                      transport_dtype="float64")
    assert pruned_count(400, pruned.prepared()) == 8
    got = subregion_ot(sub, pruned.prepared()).double()
    np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=5e-3)


@pytest.mark.parametrize("seed,spread,eps", [(3, 0.5, 0.05), (4, 0.3, 0.05), (5, 0.5, 0.02)])
def test_pruned_class_probabilities_close_to_the_unpruned_solution(seed, spread, eps):
    """Random high-dimensional banks: 5 % kept + class aggregates against the unpruned converged solution;
    dropping the unkept prototypes instead (sent to the dustbin) is far off."""
    bank, centres = _bank(seed, classes=6, per=400, dim=256, spread=spread)
    sub = _proposals(centres, [4, 9, 12, 1], seed=seed + 10, spread=spread)
    classes = [f"c{c}" for c in range(6)]
    ref = _reference(bank, classes, sub, epsilon=eps)
    pruned = _matcher(bank, classes, epsilon=eps, prune_keep=0.05, prune_min=1, transport_dtype="float64",
                      stop_thr=1e-8, iterations=20000)
    assert pruned_count(2400, pruned.prepared()) == 120
    got = subregion_ot(sub, pruned.prepared()).double()
    err = float((got - ref).abs().max())
    assert err < 1e-3, err
    # plain top-M: the same kept prototypes, the others' supply sent to the dustbin
    C = 6
    suppliers = pruned.suppliers
    cost = costs(sub.features, suppliers.prototypes)
    a, M, grp = aggregate_suppliers(cost.double(), suppliers.supply.double(), suppliers.prototype_class, C, 120, eps,
                                    sub.valid)
    Mt = torch.cat([M[:, :, :120], torch.zeros(len(M), 1, 120, dtype=torch.float64)], 1)
    dustbin = float(suppliers.supply.double().sum()) - 1
    a_kept = a[:, :120]
    demand = torch.cat([sub.demand.double(), (a_kept.sum(1) - 1)[:, None]], 1)
    real = torch.cat([sub.valid, torch.zeros(len(M), 1, dtype=torch.bool)], 1)
    mask = torch.cat([sub.valid, torch.ones(len(M), 1, dtype=torch.bool)], 1)
    top_m, _ = sinkhorn_grouped_mass(a_kept, demand, Mt.transpose(1, 2), eps, grp[:, :120], C, real, mask=mask,
                                     num_iter_max=20000, stop_thr=1e-8, measured=real)
    assert dustbin > 0 and float((top_m - ref).abs().max()) > 10 * err


def test_pruned_transport_close_to_pot_on_the_full_problem():
    bank, centres = _bank(6, classes=4, per=200, dim=128)
    sub = _proposals(centres, [3, 6], seed=7)
    classes = [f"c{c}" for c in range(4)]
    m = _matcher(bank, classes, prune_keep=0.05, prune_min=1, stop_thr=1e-7, iterations=20000)
    got = subregion_ot(sub, m.prepared()).double().numpy()
    a = m.suppliers.supply.double().numpy()
    for p in range(2):
        live = sub.valid[p].numpy()
        d = sub.demand[p].double().numpy()[live]
        M = 1 - m.suppliers.prototypes.double().numpy() @ sub.features[p].double().numpy()[live].T
        plan = ot.sinkhorn(a, np.concatenate([d, [a.sum() - 1]]), np.concatenate([M, np.zeros((len(a), 1))], 1),
                           0.05, numItermax=20000, stopThr=1e-9, warn=False)
        ref = np.bincount(m.suppliers.prototype_class.numpy(), weights=plan[:, :-1].sum(1), minlength=4)
        np.testing.assert_allclose(got[p], ref, atol=1e-3)


# ---------------------------------------------------------------- buckets and chunks
@pytest.mark.parametrize("prune_keep", [0.0, 0.1])
def test_bucketed_and_chunked_equal_one_problem_at_a_time(prune_keep):
    bank, centres = _bank(8, classes=4, per=100, dim=32)
    counts = [1, 1, 7, 2, 30, 1, 8, 3]
    sub = _proposals(centres, counts, seed=9)
    classes = [f"c{c}" for c in range(4)]
    options = {"prune_keep": prune_keep, "prune_min": 1, "stop_thr": 1e-9, "iterations": 20000}
    batched = _matcher(bank, classes, **options)
    bucketed = buckets(sub.valid.sum(1), 400, batched.cost_chunk_bytes)
    assert [n for _, n in bucketed] == [3, 8, 30]  # counts 1,1,1,2,3 | 7,8 | 30 (within 25 % + 2 of the first)
    whole = subregion_ot(sub, batched.prepared())
    tiny = _matcher(bank, classes, cost_chunk_bytes=1, chunk_bytes=1, **options)
    tiny_chunks = subregion_ot(sub, tiny.prepared())
    torch.testing.assert_close(tiny_chunks, whole, atol=1e-6, rtol=0)
    for p, k in enumerate(counts):  # each proposal alone, unpadded
        one = SubRegions(sub.features[p:p + 1, :k], sub.demand[p:p + 1, :k], sub.valid[p:p + 1, :k],
                         sub.proposal_features[p:p + 1], sub.masks[p:p + 1])
        torch.testing.assert_close(subregion_ot(one, batched.prepared())[0], whole[p], atol=1e-6, rtol=0)


def test_stop_criterion_measures_the_real_sub_regions():
    """The reported error is the real columns' marginal error (padding and dustbin excluded)."""
    bank, centres = _bank(10, classes=3, per=50, dim=16)
    sub = _proposals(centres, [2, 5], seed=11)
    m = _matcher(bank, ["c0", "c1", "c2"], prune_keep=0.0, iterations=3, stop_thr=1e-12)
    seen = []
    original = modes.sinkhorn_grouped_mass

    def spy(a, b, M, eps, groups, C, columns, **kw):
        probs, res = original(a, b, M, eps, groups, C, columns, **kw)
        plan = res.plan(M)
        seen.append((plan.sum(1) - b, kw["measured"], res.error))
        return probs, res

    modes.sinkhorn_grouped_mass = spy
    try:
        subregion_ot(sub, m.prepared())
    finally:
        modes.sinkhorn_grouped_mass = original
    for diff, measured, error in seen:
        assert not measured[:, -1].any()  # never the dustbin
        expected = torch.linalg.vector_norm(torch.where(measured, diff, torch.zeros_like(diff)), dim=1)
        torch.testing.assert_close(error, expected, rtol=1e-4, atol=1e-7)


def test_prune_keep_is_validated():
    from protoseg.config.matchers import DpsmOptions

    with pytest.raises(ProtosegError, match="prune_keep"):
        DpsmOptions(prune_keep=1.5)
    with pytest.raises(ProtosegError, match="sam_scope"):
        DpsmOptions(sam_scope="tile")


# ---------------------------------------------------------------- SAM once per image
def _sam_segmenter(tmp_path, scope: str, scale=(96, 64)) -> Segmenter:
    sam = tiny_sam(tmp_path / "sam")
    preset = get_preset("dpsm", features="handcrafted", sam=str(sam), scale=scale, crop=64, stride=48,
                        superpixels=SuperpixelParams(scale=50, sigma=0.5, min_size=20),
                        matcher_options={"sam_scope": scope,
                                         "sam_options": {"points_per_side": 3, "pred_iou_thresh": 0.0,
                                                         "stability_score_thresh": 0.0}})
    return Segmenter(preset, _handcrafted_bank())


def _count_encoder_passes(seg: Segmenter) -> list[int]:
    calls = [0]
    seg.models.sam.model.vision_encoder.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def _image(width: int) -> np.ndarray:
    image = np.zeros((64, width, 3), np.uint8)
    image[:, : width // 2] = (220, 30, 30)
    image[:, width // 2:] = (30, 30, 220)
    image[20:40, 10:30] = (30, 200, 30)
    return image


def test_sam_scope_image_equals_window_on_a_single_window_image(tmp_path):
    image = _image(64)  # one 64 x 64 window
    results = {}
    for scope in ("image", "window"):
        seg = _sam_segmenter(tmp_path / scope, scope)
        calls = _count_encoder_passes(seg)
        results[scope] = seg.segment(image, ["red", "blue"], return_scores=True)
        assert calls[0] == 1
    torch.testing.assert_close(results["image"].scores, results["window"].scores)
    assert np.array_equal(results["image"].labels, results["window"].labels)


def test_sam_scope_image_runs_the_encoder_once_for_a_two_window_image(tmp_path):
    image = _image(96)  # 64 x 96: two windows (crop 64, stride 48)
    passes = {}
    for scope in ("image", "window"):
        seg = _sam_segmenter(tmp_path / scope, scope)
        calls = _count_encoder_passes(seg)
        result = seg.segment(image, ["red", "blue"], return_scores=True)
        passes[scope] = calls[0]
        assert result.labels.shape == (64, 96)
        torch.testing.assert_close(result.scores.sum(0), torch.ones(64, 96), atol=1e-3, rtol=0)
    assert passes == {"image": 1, "window": 2}
    with pytest.raises(ProtosegError, match="makes its own"):
        _sam_segmenter(tmp_path / "given", "image").segment(image, ["red", "blue"],
                                                             proposals=np.ones((1, 64, 96), bool))


# ---------------------------------------------------------------- low-resolution filtering
@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    return SamPredictor(tiny_sam(tmp_path_factory.mktemp("sam"), image_size=256), device="cpu")


def test_low_resolution_filtering_keeps_the_full_resolution_masks(predictor):
    """Without thresholds the two paths keep the same masks exactly (the same upscaled logits); with
    SAM's thresholds and NMS, only decisions within the rounding of low-res areas / box edges may differ:
    every mask of one path has a near-identical mask in the other (mask IoU >= 0.9) for >= 90 % of them."""
    image = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    base = {"points_per_side": 8, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}
    low = generate_masks(predictor, image, MaskGenerationSettings(**base))
    full = generate_masks(predictor, image, MaskGenerationSettings(**base, filter_resolution="full"))
    assert torch.equal(low[0], full[0]) and torch.equal(low[1], full[1])
    # a random SAM's masks are all unstable whole-image blobs; structured logits test the thresholds and NMS
    blobs = _BlobPredictor()
    strict = {"points_per_side": 8, "pred_iou_thresh": 0.5, "stability_score_thresh": 0.9, "box_nms_thresh": 0.7}
    low = generate_masks(blobs, image, MaskGenerationSettings(**strict))[0]
    full = generate_masks(blobs, image, MaskGenerationSettings(**strict, filter_resolution="full"))[0]
    assert len(full) >= 10 and abs(len(low) - len(full)) <= max(1, len(full) // 10)
    inter = torch.einsum("ahw,bhw->ab", full.float(), low.float())
    union = full.flatten(1).sum(1)[:, None] + low.flatten(1).sum(1)[None] - inter
    matched = (inter / union.clamp_min(1)).amax(1) >= 0.9
    assert float(matched.float().mean()) >= 0.9


class _BlobPredictor:
    """Decoder-like logits at 64 x 64 for a 120 x 160 image: three elliptic blobs of different size and edge
    sharpness around each prompt point, bilinearly upscaled as SAM's post-processing does."""

    device = torch.device("cpu")

    class _Embedded:
        original_size = (120, 160)

    def embed(self, image):
        return self._Embedded()

    def predict_points_low(self, image, points):
        H, W = image.original_size
        yy, xx = torch.meshgrid(torch.linspace(0, H, 48), torch.linspace(0, W, 64), indexing="ij")
        out, iou = [], []
        for k, (x, y) in enumerate(points.tolist()):
            for j, (radius, sharp) in enumerate(((12, 4.0), (25, 3.0), (45, 2.0))):
                d = torch.sqrt(((xx - x) / 1.3) ** 2 + (yy - y) ** 2)
                out.append(sharp * (radius - d))
                iou.append(0.6 + 0.1 * j + 0.01 * (k % 7))
        low = torch.zeros(len(out), 64, 64)
        low[:, :48] = torch.stack(out)  # the padded part of the frame stays at 0
        return low, torch.tensor(iou)

    def low_res_valid(self, image, low_size):
        return (48, 64)

    def upscale(self, image, low):
        valid = low[:, None, :48]
        return F.interpolate(valid, size=image.original_size, mode="bilinear", align_corners=False)[:, 0]

    def predict_points(self, image, points):
        low, iou = self.predict_points_low(image, points)
        return self.upscale(image, low), iou


def test_filter_resolution_is_validated():
    with pytest.raises(ProtosegError, match="filter_resolution"):
        MaskGenerationSettings(filter_resolution="half")


# ---------------------------------------------------------------- ablation rows
def test_sam_grid_suite_rows():
    rows = SUITES["sam-grid"]
    grids = [r.options["sam_options"]["points_per_side"] for r in rows]
    assert grids == [8, 16, 32]
    assert all(r.options.get("proposals", "sam") == "sam" for r in rows)
    assert math.isfinite(len(rows))
