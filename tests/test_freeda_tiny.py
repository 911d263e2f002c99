"""FreeDA end to end with real model classes (tiny random DINOv2 + CLIP) and a bank with CLIP text keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_models import tiny_clip, tiny_dinov2

from protoseg.bank import PrototypeBank
from protoseg.models.clip import ClipModel
from protoseg.segment import BACKGROUND, Segmenter
from protoseg.windows import rescale_size, resize_image, slide, window_grid

CLASSES = ["cat", "dog", "sky"]
DISTRACTORS = ["car", "tree", "road", "person", "sofa", "grass"]
ROWS_PER_CLASS = 4


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("freeda")
    return tiny_dinov2(root / "dinov2-tiny"), tiny_clip(root / "clip-tiny")


@pytest.fixture(scope="module")
def bank_and_rows(folders):
    """A bank whose rows ``rows[c]`` have the class embedding of ``CLASSES[c]`` as key (cosine 1), and
    distractor rows keyed by other names. Every row has its own random prototype."""
    dinov2_dir, clip_dir = folders
    clip = ClipModel(str(clip_dir), device="cpu")
    class_keys = clip.encode_classes(CLASSES).numpy()
    distractor_keys = clip.encode_classes(DISTRACTORS).numpy()
    rng = np.random.default_rng(0)
    keys, labels, rows = [], [], {c: [] for c in range(len(CLASSES))}
    order = [(c, None) for c in range(len(CLASSES)) for _ in range(ROWS_PER_CLASS)]
    order += [(None, d) for d in range(len(DISTRACTORS)) for _ in range(3)]
    for i in rng.permutation(len(order)):  # interleave rows so retrieval cannot rely on order
        c, d = order[i]
        if c is not None:
            rows[c].append(len(keys))
            keys.append(class_keys[c])
            labels.append(CLASSES[c])
        else:
            keys.append(distractor_keys[d])
            labels.append(DISTRACTORS[d])
    prototypes = rng.normal(size=(len(keys), 32)).astype(np.float32)
    bank = PrototypeBank.create(prototypes, {"label": labels}, method="freeda",
                                feature_encoder=str(dinov2_dir), keys=np.stack(keys),
                                text_encoder=str(clip_dir), dtype="float32")
    # Precondition of the test: class keys are strictly nearer their class than any other key.
    sims = class_keys @ np.concatenate([class_keys, distractor_keys]).T
    off = sims - np.eye(len(CLASSES), sims.shape[1])
    assert (np.diag(sims) - off.max(1) > 1e-4).all()
    return bank, {c: np.array(r) for c, r in rows.items()}, class_keys


@pytest.fixture(scope="module")
def segmenter(folders, bank_and_rows):
    dinov2_dir, clip_dir = folders
    bank, _, _ = bank_and_rows
    return Segmenter.from_preset("freeda-b", bank=bank, device="cpu", features=str(dinov2_dir),
                                 text=str(clip_dir), matcher_options={"k": ROWS_PER_CLASS})


def _image(h: int = 120, w: int = 160) -> np.ndarray:
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, size=(h // 20 + 1, w // 20 + 1, 3)).repeat(20, 0).repeat(20, 1)[:h, :w]
    return np.clip(base + rng.integers(-10, 11, size=(h, w, 3)), 0, 255).astype(np.uint8)


def test_segment_label_map(segmenter):
    image = _image()
    result = segmenter.segment(image, CLASSES, return_scores=True)
    assert result.labels.shape == image.shape[:2] and result.labels.dtype == np.int64
    assert result.labels.min() >= 0 and result.labels.max() < len(CLASSES)
    assert result.classes == CLASSES
    assert result.scores.shape == (3, *image.shape[:2])
    torch.testing.assert_close(torch.from_numpy(result.labels), result.scores.argmax(0))
    # FreeDA's score is 0.8 * sigmoid(cos) + 0.2 * cos, so it lies in (0.8 * sigmoid(-1) - 0.2, 1)
    assert result.scores.min() > 0.8 * torch.sigmoid(torch.tensor(-1.0)) - 0.2 - 1e-5
    assert result.scores.max() < 0.8 * torch.sigmoid(torch.tensor(1.0)) + 0.2 + 1e-5


def test_background_threshold(segmenter):
    result = segmenter.segment(_image(), CLASSES, background=True, return_scores=True)
    best = result.scores.max(0).values
    above = (best > segmenter.preset.background_threshold).numpy()
    expected = np.where(above, result.scores.argmax(0).numpy(), BACKGROUND)
    np.testing.assert_array_equal(result.labels, expected)


def test_retrieval_uses_text_keys(segmenter, bank_and_rows):
    bank, rows, class_keys = bank_and_rows
    segmenter.prepare(CLASSES)
    matcher = segmenter.matcher
    torch.testing.assert_close(matcher.text_vectors, torch.from_numpy(class_keys))
    assert matcher.prototypes.shape == (len(CLASSES), 1, 32)
    for c in range(len(CLASSES)):
        expected = F.normalize(torch.from_numpy(np.asarray(bank.prototypes[rows[c]]).mean(0)), dim=-1)
        torch.testing.assert_close(matcher.prototypes[c, 0], expected)
    # any other choice of rows would give a different prototype
    wrong = F.normalize(torch.from_numpy(np.asarray(bank.prototypes[rows[1]]).mean(0)), dim=-1)
    assert not torch.allclose(matcher.prototypes[0, 0], wrong, atol=1e-3)


def test_prototype_equal_to_region_feature_wins(folders, bank_and_rows):
    """If a class's only prototype is the pooled DINOv2 feature of the whole image, that class wins
    everywhere: checks that the tiny models' features actually drive the label map."""
    dinov2_dir, clip_dir = folders
    bank, rows, _ = bank_and_rows
    seg = Segmenter.from_preset("freeda-b", bank=bank, device="cpu", features=str(dinov2_dir),
                                text=str(clip_dir), matcher_options={"k": ROWS_PER_CLASS, "use_global": False,
                                                                     "beta": 1.0, "use_superpixels": False})
    image = np.full((64, 64, 3), 128, dtype=np.uint8)
    seg.prepare(CLASSES)
    crop = torch.full((3, 448, 448), 128.0)
    feat = seg.models.features(crop[None])[0].flatten(1).mean(1)
    seg.matcher.prototypes[2, 0] = F.normalize(feat, dim=0)
    labels = seg.segment(image, CLASSES).labels
    assert (labels == 2).all()


def test_batched_windows_equal_window_by_window(folders, bank_and_rows):
    """Windows scored in batches (one DINOv2 / CLIP forward each, superpixels on the worker thread) give
    the scores of window-by-window scoring; the last batch may be partial."""
    dinov2_dir, clip_dir = folders
    bank, _, _ = bank_and_rows
    seg = Segmenter.from_preset("freeda-b", bank=bank, device="cpu", features=str(dinov2_dir),
                                text=str(clip_dir), matcher_options={"k": ROWS_PER_CLASS})
    assert seg.matcher.batch_size == 4  # the documented default
    image = _image(90, 400)  # 448 x 1991 after the resize: 8 windows
    seg.prepare(CLASSES)
    resized = resize_image(image, rescale_size(*image.shape[:2]))
    assert len(window_grid(*resized.shape[-2:])) == 8
    one_by_one = slide(resized, seg.matcher, len(CLASSES))  # the matcher's per-window call
    for batch in (1, 3, 4, 8):
        seg.matcher.batch_size = batch
        torch.testing.assert_close(seg.window_scores(image, CLASSES), one_by_one, atol=1e-5, rtol=1e-5)
    with_background = seg.window_scores(image, CLASSES, background=True)
    torch.testing.assert_close(with_background[1:], one_by_one, atol=1e-5, rtol=1e-5)
    assert (with_background[0] == seg.preset.background_threshold).all()


def test_batch_size_is_a_validated_option():
    from protoseg.config.matchers import FreedaOptions
    from protoseg.errors import ProtosegError

    assert FreedaOptions(batch_size=8).batch_size == 8
    with pytest.raises(ProtosegError, match="batch_size"):
        FreedaOptions(batch_size=0)
