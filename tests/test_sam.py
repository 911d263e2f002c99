"""SAM automatic mask generation: the named steps on hand cases, and the proposer on a tiny random SAM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import tiny_sam

from protoseg.models.sam import (
    SamProposer,
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


@pytest.fixture(scope="module")
def sam_dir(tmp_path_factory):
    return tiny_sam(tmp_path_factory.mktemp("sam"))


def test_proposer_runs_the_real_model(sam_dir):
    proposer = SamProposer(sam_dir, device="cpu", points_per_side=4, pred_iou_thresh=0.0,
                           stability_score_thresh=0.0, points_per_batch=5)
    image = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    masks, scores = proposer(image)
    assert masks.dtype == torch.bool and masks.shape[1:] == (40, 56)
    assert len(masks) == len(scores) >= 1
    assert (scores[:-1] >= scores[1:]).all()  # sorted by predicted IoU
    # NMS ran: no two kept masks have box IoU above the threshold
    iou = box_iou(masks_to_boxes(masks), masks_to_boxes(masks))
    assert (iou.triu(1) <= 0.7).all()
    # the same image as float [3, H, W] gives the same proposals
    masks_f, _ = proposer(torch.from_numpy(image).permute(2, 0, 1).float())
    assert torch.equal(masks, masks_f)
    # the candidates before filtering: 16 points x 3 masks; thresholds only ever remove masks
    strict = SamProposer(sam_dir, device="cpu", points_per_side=4, pred_iou_thresh=2.0, points_per_batch=5)
    assert len(strict(image)[0]) == 0


def test_proposer_matches_manual_pipeline(sam_dir):
    """Logits from the model through the processor's own post-processing, filtered by hand."""
    from transformers import SamModel, SamProcessor

    proposer = SamProposer(sam_dir, device="cpu", points_per_side=2, pred_iou_thresh=0.0,
                           stability_score_thresh=0.0, box_nms_thresh=1.0)
    image = np.random.default_rng(1).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    masks, scores = proposer(image)
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
