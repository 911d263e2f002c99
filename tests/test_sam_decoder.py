"""The per-point SAM decoder (protoseg.models.sam_decoder) against transformers' SamModel forward: SAM-B's full-size
decoder on a random image embedding, a tiny SAM through the predictor and in bf16, and the predictor's switch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny_models import tiny_sam
from torch import nn
from transformers import SamConfig, SamModel, SamVisionConfig

from protoseg.errors import ProtosegError
from protoseg.models.sam import SamPredictor
from protoseg.models.sam_decoder import decode_points, decode_points_hf, prepare_image
from protoseg.proposals import MaskGenerationSettings, generate_masks


def spread_weights(model: SamModel, seed: int = 0) -> SamModel:
    """Re-draw the prompt encoder's and mask decoder's weights at fan-in-normalised scale, so that logits are
    O(1-10) rather than SAM's near-zero init and a tolerance of 1e-3 means something."""
    generator = torch.Generator().manual_seed(seed)

    def draw(param: nn.Parameter, std: float, mean: float = 0.0) -> None:
        param.data = mean + std * torch.randn(param.shape, generator=generator)

    for part in (model.prompt_encoder, model.mask_decoder):
        for module in part.modules():
            if isinstance(module, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
                fan_in = module.weight.shape[0] if isinstance(module, nn.ConvTranspose2d) else module.weight[0].numel()
                draw(module.weight, 1 / math.sqrt(fan_in))
                draw(module.bias, 0.1)
            elif isinstance(module, nn.LayerNorm):
                draw(module.weight, 0.1, mean=1.0)
                draw(module.bias, 0.1)
            elif isinstance(module, nn.Embedding):
                draw(module.weight, 0.5)
    return model


@pytest.fixture(scope="module")
def sam_b():
    """SAM-B's prompt encoder and mask decoder (``SamConfig()`` defaults; a one-layer vision encoder, unused)."""
    torch.manual_seed(0)
    config = SamConfig(vision_config=SamVisionConfig(num_hidden_layers=1, global_attn_indexes=[0]))
    return spread_weights(SamModel(config).eval())


def grid_prompts(count: int, side: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    points = (torch.rand(count, 1, 2, generator=torch.Generator().manual_seed(1)) * side)
    return points, torch.ones(count, 1, dtype=torch.long)


@pytest.mark.parametrize("multimask", [True, False])
def test_full_size_decoder_matches_samodel(sam_b, multimask):
    embedding = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(2))
    points, labels = grid_prompts(6)
    masks, iou = decode_points(sam_b, prepare_image(sam_b, embedding), points, labels, multimask)
    ref_masks, ref_iou = decode_points_hf(sam_b, embedding, points, labels, multimask)
    count = 3 if multimask else 1
    assert masks.shape == ref_masks.shape == (6, count, 256, 256) and iou.shape == ref_iou.shape == (6, count)
    assert float(ref_masks.abs().max()) > 1  # the comparison is not between near-zero logits
    torch.testing.assert_close(masks, ref_masks, atol=1e-3, rtol=0)
    torch.testing.assert_close(iou, ref_iou, atol=1e-3, rtol=0)


def test_multi_point_prompts_with_background_and_padding_labels(sam_b):
    embedding = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(3))
    points = torch.rand(4, 3, 2, generator=torch.Generator().manual_seed(4)) * 1024
    labels = torch.tensor([[1, 0, -10], [1, 1, 0], [1, -1, -10], [0, 1, 1]])
    masks, iou = decode_points(sam_b, prepare_image(sam_b, embedding), points, labels)
    ref_masks, ref_iou = decode_points_hf(sam_b, embedding, points, labels)
    torch.testing.assert_close(masks, ref_masks, atol=1e-3, rtol=0)
    torch.testing.assert_close(iou, ref_iou, atol=1e-3, rtol=0)


@pytest.fixture(scope="module")
def sam_dir(tmp_path_factory):
    return tiny_sam(tmp_path_factory.mktemp("sam"))


def test_small_config_predictor_fast_equals_hf(sam_dir):
    fast, hf = SamPredictor(sam_dir, device="cpu"), SamPredictor(sam_dir, device="cpu", decoder="hf")
    assert fast.decoder == "fast"
    spread_weights(fast.model)
    hf.model.load_state_dict(fast.model.state_dict())
    rng = np.random.default_rng(0)
    for shape in ((40, 56, 3), (64, 48, 3)):  # two images in turn: the shared part follows the image
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        points = torch.tensor([[3.0, 5.0], [20.0, 30.0], [40.0, 10.0]])
        low, iou = fast.predict_points_low(fast.embed(image), points)
        ref_low, ref_iou = hf.predict_points_low(hf.embed(image), points)
        assert low.shape == ref_low.shape == (9, 16, 16)
        torch.testing.assert_close(low, ref_low, atol=1e-4, rtol=0)
        torch.testing.assert_close(iou, ref_iou, atol=1e-4, rtol=0)
    settings = MaskGenerationSettings(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                                      points_per_batch=5)
    image = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    masks, scores = generate_masks(fast, image, settings)
    ref_masks, ref_scores = generate_masks(hf, image, settings)
    assert len(masks) >= 1 and torch.equal(masks, ref_masks)
    torch.testing.assert_close(scores, ref_scores, atol=1e-5, rtol=0)


def test_bfloat16_agrees_with_samodel_in_bfloat16(sam_dir):
    model = spread_weights(SamModel.from_pretrained(sam_dir).eval()).to(torch.bfloat16)
    embedding = torch.randn(1, 32, 4, 4, generator=torch.Generator().manual_seed(5)).bfloat16()
    points, labels = grid_prompts(6, side=64)
    masks, iou = decode_points(model, prepare_image(model, embedding), points.bfloat16(), labels)
    ref_masks, ref_iou = decode_points_hf(model, embedding, points.bfloat16(), labels)
    assert masks.dtype == iou.dtype == torch.bfloat16 and masks.shape == ref_masks.shape
    # bf16 keeps ~3 significant digits and both decoders round at different places
    assert float((masks.float() - ref_masks.float()).abs().max()) <= 0.05 * float(ref_masks.float().abs().max())
    assert float((iou.float() - ref_iou.float()).abs().max()) <= 0.05 * float(ref_iou.float().abs().max())


def test_unknown_decoder_is_refused(sam_dir):
    with pytest.raises(ProtosegError, match="unknown SAM decoder 'onnx'"):
        SamPredictor(sam_dir, device="cpu", decoder="onnx")
