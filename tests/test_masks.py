"""FreeDA and DPSM foreground mask rules on hand-computed cases."""

from __future__ import annotations

import numpy as np
import torch

from protoseg.generate.masks import (
    DPSM_GAMMA,
    FREEDA_GAMMA,
    dpsm_mask,
    freeda_mask,
    is_degenerate,
    minmax_normalize,
)


def test_default_thresholds_are_the_papers() -> None:
    assert FREEDA_GAMMA == 0.45 and DPSM_GAMMA == 0.4


def test_freeda_rule_hand_computed() -> None:
    # min-max to [-1, 1]: [-1, -0.202, -0.2, 0, 1]; sigmoid: [0.2689, 0.44967, 0.45017, 0.5, 0.7311]
    a = np.array([[0.0, 39.9, 40.0, 50.0, 100.0]], dtype=np.float32)
    assert freeda_mask(a).tolist() == [[False, False, True, True, True]]
    # gamma 0.5 keeps what is above the middle of the range: sigmoid(x) > 0.5 <=> x > 0
    assert freeda_mask(a, gamma=0.5).tolist() == [[False, False, False, False, True]]
    # gamma below sigmoid(-1) keeps everything
    assert freeda_mask(a, gamma=0.25).all()


def test_dpsm_rule_hand_computed() -> None:
    # min-max to [0, 1]: [0, 0.399, 0.401, 0.5, 1]
    a = np.array([[10.0, 13.99, 14.01, 15.0, 20.0]], dtype=np.float32)
    assert dpsm_mask(a).tolist() == [[False, False, True, True, True]]
    assert dpsm_mask(a, gamma=0.45).tolist() == [[False, False, False, True, True]]


def test_normalisation_is_per_map_and_affine_invariant() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((3, 5, 7)).astype(np.float32)
    scaled = np.stack([a[0], 10 * a[1] + 3, 0.01 * a[2] - 5])
    for rule in (freeda_mask, dpsm_mask):
        masks = rule(scaled)
        assert masks.shape == (3, 5, 7) and masks.dtype == bool
        for i in range(3):
            assert np.array_equal(masks[i], rule(a[i]))
    n = minmax_normalize(scaled, -1.0, 1.0)
    assert np.allclose(n.min(axis=(1, 2)), -1) and np.allclose(n.max(axis=(1, 2)), 1)


def test_torch_in_torch_out_and_constant_maps() -> None:
    t = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    out = dpsm_mask(t)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.bool
    assert out.tolist() == [[False, False], [True, True]]
    flat = np.full((4, 4), 0.3, dtype=np.float32)
    assert not freeda_mask(flat).any() and not dpsm_mask(flat).any()
    assert bool(is_degenerate(flat)) and not bool(is_degenerate(t))
