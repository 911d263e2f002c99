"""Metrics: hand-computed cases, MMSeg's histogram semantics, and agreement with sklearn to 1e-9."""

import numpy as np
import torch
from sklearn.metrics import confusion_matrix

from protoseg.eval.metrics import MetricAccumulator, intersect_and_union, summarize


def mmseg_intersect_and_union(pred, label, num_classes, ignore_index=255):
    """MMSeg 0.27's torch.histc implementation, transcribed (an independent reference)."""
    pred, label = torch.from_numpy(pred), torch.from_numpy(label)
    mask = label != ignore_index
    pred, label = pred[mask], label[mask]
    inter = pred[pred == label]
    ai = torch.histc(inter.float(), bins=num_classes, min=0, max=num_classes - 1)
    ap = torch.histc(pred.float(), bins=num_classes, min=0, max=num_classes - 1)
    al = torch.histc(label.float(), bins=num_classes, min=0, max=num_classes - 1)
    return np.stack([ai.numpy(), (ap + al - ai).numpy(), ap.numpy(), al.numpy()]).astype(np.int64)


def test_hand_computed_example():
    gt = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 1, 0]])
    c = intersect_and_union(pred, gt, 3)
    # valid pixels: (0,0),(0,1),(1,1)->gt 0,0,1,1,2 ; pred 0,1,1,1,1 (ignored pixel dropped)
    assert c[0].tolist() == [1, 2, 0]  # intersect
    assert c[2].tolist() == [1, 4, 0]  # pred areas
    assert c[3].tolist() == [2, 2, 1]  # label areas
    assert c[1].tolist() == [2, 4, 1]  # union
    s = summarize(c)
    assert np.allclose(s.iou, [1 / 2, 2 / 4, 0.0])
    assert np.isclose(s.miou, (0.5 + 0.5 + 0) / 3)
    assert np.allclose(s.acc, [1 / 2, 2 / 2, 0 / 1])
    assert np.isclose(s.aacc, 3 / 5)


def test_absent_classes_are_nan_and_skipped():
    gt = np.array([[0, 0], [1, 1]])
    pred = np.array([[0, 0], [1, 1]])
    s = summarize(intersect_and_union(pred, gt, 4))
    assert np.isnan(s.iou[2]) and np.isnan(s.iou[3]) and s.miou == 1.0
    # a class predicted but never in the ground truth has IoU 0 (not NaN) and accuracy NaN
    s = summarize(intersect_and_union(np.array([[0, 3]]), np.array([[0, 0]]), 4))
    assert s.iou[3] == 0.0 and np.isnan(s.acc[3]) and np.isclose(s.miou, 0.25)


def test_out_of_range_values_follow_mmseg_histc():
    gt = np.array([[0, 7, 1, 255]])  # 7: out of range label (not ignored)
    pred = np.array([[9, 1, 1, 1]])  # 9: out of range prediction
    ours = intersect_and_union(pred, gt, 3)
    assert np.array_equal(ours, mmseg_intersect_and_union(pred, gt, 3))
    assert ours[2].tolist() == [0, 2, 0] and ours[3].tolist() == [1, 1, 0]


def test_matches_sklearn_confusion_matrix_on_random_maps():
    rng = np.random.default_rng(0)
    C = 21
    acc = MetricAccumulator(C)
    cm = np.zeros((C, C), dtype=np.int64)
    for _ in range(25):
        h, w = rng.integers(20, 90, size=2)
        gt = rng.integers(0, C, size=(h, w))
        gt[rng.random((h, w)) < 0.15] = 255  # ignore pixels
        pred = np.where(rng.random((h, w)) < 0.6, gt, rng.integers(0, C, size=(h, w)))
        pred[pred == 255] = 0
        acc.add(pred, gt)
        keep = gt != 255
        cm += confusion_matrix(gt[keep], pred[keep], labels=np.arange(C))
    tp = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - tp
    iou = tp / union
    s = acc.scores()
    assert np.allclose(s.iou, iou, atol=1e-12, rtol=0)
    assert abs(s.miou - np.nanmean(iou)) < 1e-9
    assert abs(s.aacc - tp.sum() / cm.sum()) < 1e-9
    assert abs(s.macc - np.nanmean(tp / cm.sum(1))) < 1e-9
    assert acc.images == 25


def test_matches_mmseg_histc_reference_on_random_maps():
    rng = np.random.default_rng(1)
    for _ in range(20):
        C = int(rng.integers(2, 40))
        gt = rng.integers(0, C + 3, size=(37, 53))
        gt[rng.random(gt.shape) < 0.2] = 255
        pred = rng.integers(0, C + 2, size=gt.shape)
        assert np.array_equal(intersect_and_union(pred, gt, C), mmseg_intersect_and_union(pred, gt, C))


def test_dataset_wide_accumulation_is_not_mean_of_image_ious():
    # image 1: class 0 perfect on 100 px; image 2: class 0 on 1 px predicted wrong
    a_gt, a_pred = np.zeros((10, 10), int), np.zeros((10, 10), int)
    b_gt, b_pred = np.array([[0, 1]]), np.array([[1, 1]])
    acc = MetricAccumulator(2)
    acc.add(a_pred, a_gt)
    acc.add(b_pred, b_gt)
    s = acc.scores()
    assert np.isclose(s.iou[0], 100 / 101) and np.isclose(s.iou[1], 1 / 2)
