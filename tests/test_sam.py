"""SAM automatic mask generation: the named steps on hand cases, the settings, and the generator over a tiny
random SAM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import tiny_sam

from protoseg.errors import ProtosegError
from protoseg.models.sam import SamPredictor
from protoseg.proposals import MaskGenerationSettings, generate_masks
from protoseg.proposals.amg import (
    box_iou,
    box_nms,
    filter_by_iou,
    masks_to_boxes,
    point_grid,
    remove_small_regions,
    stability_score,
)


def test_point_grid_cell_centres():
    g = point_grid(2)
    torch.testing.assert_close(g, torch.tensor([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]))
    assert point_grid(32).shape == (1024, 2)
    assert float(point_grid(32).min()) == pytest.approx(1 / 64)


def test_box_iou_hand_case():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [5.0, 5.0, 6.0, 6.0], [0.0, 0.0, 2.0, 2.0]])
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[1 / 7, 0.0, 1.0]]))


def test_nms_hand_cases():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9.0]])
    scores = torch.tensor([0.9, 0.95, 0.5, 0.8])
    # box 1 (best) suppresses box 0 (IoU 81/119 = 0.68 > 0.5) and box 3 (IoU 72/128 = 0.5625 > 0.5)
    assert box_nms(boxes, scores, 0.5).tolist() == [1, 2]
    # at 0.7 nothing overlaps enough except 0 vs 3 (IoU 0.9): 3 goes, 0 stays
    assert box_nms(boxes, scores, 0.7).tolist() == [1, 0, 2]
    # a suppressed box does not suppress others: chain 0 -> 1 -> 2 with 1 suppressed keeps 2
    chain = torch.tensor([[0, 0, 10, 10], [4, 0, 14, 10], [8, 0, 18, 10.0]])
    assert box_nms(chain, torch.tensor([3.0, 2.0, 1.0]), 0.4).tolist() == [0, 2]
    assert box_nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0


def test_masks_to_boxes_inclusive_and_empty():
    masks = torch.zeros(2, 5, 6, dtype=torch.bool)
    masks[0, 1:3, 2:5] = True
    assert masks_to_boxes(masks).tolist() == [[2, 1, 4, 2], [0, 0, 0, 0]]


def test_stability_score_hand_case():
    logits = torch.tensor([[[2.0, 0.5, -0.5, -2.0]]])  # > 1: 1 pixel, > -1: 3 pixels
    assert stability_score(logits, 0.0, 1.0).tolist() == [pytest.approx(1 / 3)]
    assert stability_score(torch.full((1, 2, 2), -5.0)).tolist() == [0.0]
    assert filter_by_iou(torch.tensor([0.9, 0.5]), 0.88).tolist() == [True, False]


def test_remove_small_regions():
    mask = np.zeros((10, 10), bool)
    mask[1:8, 1:8] = True
    mask[4, 4] = False  # a 1-pixel hole
    mask[9, 9] = True  # a 1-pixel island
    filled, changed = remove_small_regions(mask, 3, "holes")
    assert changed and filled[4, 4] and filled[9, 9]
    cleaned, changed = remove_small_regions(filled, 3, "islands")
    assert changed and not cleaned[9, 9] and cleaned[1:8, 1:8].all()
    same, changed = remove_small_regions(cleaned, 3, "islands")
    assert not changed and (same == cleaned).all()


def test_settings_defaults_are_sams():
    s = MaskGenerationSettings()
    assert (s.points_per_side, s.points_per_batch, s.pred_iou_thresh, s.stability_score_thresh,
            s.stability_score_offset, s.box_nms_thresh, s.min_mask_region_area, s.mask_threshold) == \
        (32, 64, 0.88, 0.95, 1.0, 0.7, 0, 0.0)
    assert MaskGenerationSettings.from_options(s.to_dict()) == s
    assert MaskGenerationSettings.from_options(None) == s
    assert MaskGenerationSettings.from_options({"points_per_side": 3}).points_per_side == 3


@pytest.mark.parametrize(("field", "value"), [
    ("points_per_side", 0), ("points_per_side", 2.5), ("points_per_batch", 0), ("points_per_batch", True),
    ("min_mask_region_area", -1), ("pred_iou_thresh", float("nan")), ("pred_iou_thresh", "high"),
    ("stability_score_thresh", 1.5), ("stability_score_offset", -0.1), ("box_nms_thresh", -0.2),
    ("mask_threshold", float("inf")),
])
def test_settings_reject_bad_values_naming_the_field(field, value):
    with pytest.raises(ProtosegError, match=field):
        MaskGenerationSettings(**{field: value})


def test_settings_reject_unknown_options():
    with pytest.raises(ProtosegError, match="unknown SAM option 'points'"):
        MaskGenerationSettings.from_options({"points": 8})


@pytest.fixture(scope="module")
def sam_dir(tmp_path_factory):
    return tiny_sam(tmp_path_factory.mktemp("sam"))


@pytest.fixture(scope="module")
def predictor(sam_dir):
    return SamPredictor(sam_dir, device="cpu")


def test_generator_runs_the_real_model(predictor):
    settings = MaskGenerationSettings(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                                      points_per_batch=5)
    image = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    masks, scores = generate_masks(predictor, image, settings)
    assert masks.dtype == torch.bool and masks.shape[1:] == (40, 56)
    assert len(masks) == len(scores) >= 1
    assert (scores[:-1] >= scores[1:]).all()  # sorted by predicted IoU
    # NMS ran: no two kept masks have box IoU above the threshold
    iou = box_iou(masks_to_boxes(masks), masks_to_boxes(masks))
    assert (iou.triu(1) <= 0.7).all()
    # the same image as float [3, H, W] gives the same proposals
    masks_f, _ = generate_masks(predictor, torch.from_numpy(image).permute(2, 0, 1).float(), settings)
    assert torch.equal(masks, masks_f)
    # the candidates before filtering: 16 points x 3 masks; thresholds only ever remove masks
    strict = MaskGenerationSettings(points_per_side=4, pred_iou_thresh=2.0, points_per_batch=5)
    assert len(generate_masks(predictor, image, strict)[0]) == 0


def test_settings_are_per_call(predictor):
    """Calls with different settings on one predictor do not influence each other."""
    image = np.random.default_rng(2).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    loose = MaskGenerationSettings(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                                   box_nms_thresh=1.0)
    strict = MaskGenerationSettings(points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                                    box_nms_thresh=0.3)
    first = generate_masks(predictor, image, loose)
    other = generate_masks(predictor, image, strict)
    again = generate_masks(predictor, image, loose)
    assert len(first[0]) != len(other[0])
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


def test_generator_matches_manual_pipeline(sam_dir, predictor):
    """Logits from the model through the processor's own post-processing, filtered by hand."""
    from transformers import SamModel, SamProcessor

    settings = MaskGenerationSettings(points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                                      box_nms_thresh=1.0)
    image = np.random.default_rng(1).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    masks, scores = generate_masks(predictor, image, settings)
    model, processor = SamModel.from_pretrained(sam_dir), SamProcessor.from_pretrained(sam_dir)
    points = (point_grid(2) * torch.tensor([48.0, 32.0])).tolist()
    inputs = processor(images=image, input_points=[[[p] for p in points]], return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs, multimask_output=True)
    ref = processor.post_process_masks(out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"])[0]
    ref = ref.flatten(0, 1)
    ref_scores = out.iou_scores[0].flatten()
    keep = ref.flatten(1).any(1)
    assert len(masks) == int(keep.sum())  # NMS at 1.0 keeps every non-empty mask
    order = torch.sort(ref_scores[keep], descending=True, stable=True).indices
    torch.testing.assert_close(scores, ref_scores[keep][order])
    assert torch.equal(masks, ref[keep][order])
