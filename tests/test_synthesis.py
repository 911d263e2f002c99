"""Batched synthesis through a real tiny StableDiffusionPipeline: determinism, shapes, UNet features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from protoseg.errors import ProtosegError
from protoseg.generate.synthesis import DEFAULT_UNET_FEATURE_BLOCK, Synthesis, synthesize
from protoseg.models.diffusion import load_pipeline
from protoseg.testing import tiny_stable_diffusion

PROMPTS = ["a photo of a cat on a wheelbarrow", "a red car with a wheel", "a dog in the park"]
WORDS = [["cat", "wheelbarrow"], ["car", "wheel"], []]
SEEDS = [1, 2, 3]


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory):
    return load_pipeline(tiny_stable_diffusion(tmp_path_factory.mktemp("tiny-sd")), device="cpu")


def _first_latents(pipe, batch_size: int) -> torch.Tensor:
    """The latents entering the UNet (conditional rows) in one-step generations of all prompts."""
    seen: list[torch.Tensor] = []

    def pre_hook(module, args, kwargs):
        seen.append(args[0][args[0].shape[0] // 2:].clone())

    handle = pipe.unet.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        synthesize(pipe, PROMPTS, WORDS, SEEDS, steps=1, batch_size=batch_size)
    finally:
        handle.remove()
    assert len(seen) == -(-len(PROMPTS) // batch_size)  # one UNet call per batch
    return torch.cat(seen)


def test_results_do_not_depend_on_batch_size(pipe) -> None:
    # the random source is per image: the initial latents are bit-identical whatever the batching
    assert torch.equal(_first_latents(pipe, 1), _first_latents(pipe, 3))
    one = synthesize(pipe, PROMPTS, WORDS, SEEDS, steps=3, batch_size=1, unet_feature_block=1)
    three = synthesize(pipe, PROMPTS, WORDS, SEEDS, steps=3, batch_size=3, unet_feature_block=1)
    two = synthesize(pipe, PROMPTS, WORDS, SEEDS, steps=3, batch_size=2)
    for a, b, c in zip(one, three, two, strict=True):
        assert isinstance(a, Synthesis) and a.prompt == b.prompt and a.seed == b.seed
        assert a.image.shape == (64, 64, 3) and a.image.dtype == np.uint8
        # the rest is the same computation; BLAS kernels sum in a shape-dependent order, so floats agree
        # to ~1e-6 and a value sitting on a rounding edge may move one uint8 level in a rare pixel
        for other in (b, c):
            diff = np.abs(a.image.astype(int) - other.image)
            assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
        assert a.attributions.keys() == b.attributions.keys()
        for w in a.attributions:
            np.testing.assert_allclose(a.attributions[w], b.attributions[w], rtol=1e-4, atol=1e-7)
            assert a.attributions[w].shape == (64, 64) and a.attributions[w].dtype == np.float32
        torch.testing.assert_close(a.unet_features, b.unet_features, rtol=1e-4, atol=1e-4)
        assert c.unet_features is None and c.unet_timestep is None
    # different seeds give different images
    assert not np.array_equal(one[0].image, synthesize(pipe, PROMPTS[:1], WORDS[:1], [99], steps=3)[0].image)


def test_image_matches_the_plain_pipeline(pipe) -> None:
    result = synthesize(pipe, PROMPTS[:2], WORDS[:2], SEEDS[:2], steps=3, guidance=5.0)
    out = pipe(prompt=PROMPTS[:2], num_inference_steps=3, guidance_scale=5.0, height=64, width=64,
               generator=[torch.Generator().manual_seed(s) for s in SEEDS[:2]], output_type="np")
    for r, image in zip(result, out.images, strict=True):
        assert np.array_equal(r.image, (image * 255).round().astype(np.uint8))


def test_unet_features_are_the_chosen_block_at_the_chosen_step(pipe) -> None:
    steps, seeds = 5, [4, 5]
    outputs: list[torch.Tensor] = []
    handle = pipe.unet.up_blocks[DEFAULT_UNET_FEATURE_BLOCK].register_forward_hook(
        lambda module, args, out: outputs.append(out.detach().clone()))
    try:
        pipe(prompt=PROMPTS[:2], num_inference_steps=steps, guidance_scale=7.5, height=64, width=64,
             generator=[torch.Generator().manual_seed(s) for s in seeds], output_type="np")
    finally:
        handle.remove()
    timesteps = [int(t) for t in pipe.scheduler.timesteps]
    assert len(outputs) == steps
    chosen = int(np.argmin([abs(t - 261) for t in timesteps]))
    result = synthesize(pipe, PROMPTS[:2], WORDS[:2], seeds, steps=steps, unet_feature_block=1)
    for b, r in enumerate(result):
        assert r.unet_timestep == timesteps[chosen]
        assert r.unet_features.shape == outputs[chosen].shape[1:]
        # conditional rows are the second half of the CFG batch
        torch.testing.assert_close(r.unet_features, outputs[chosen][2 + b].float())
    # another timestep and a module path
    late = synthesize(pipe, PROMPTS[:1], WORDS[:1], seeds[:1], steps=steps, unet_feature_block="up_blocks.1",
                      unet_feature_timestep=900)[0]
    assert late.unet_timestep == max(timesteps)
    torch.testing.assert_close(late.unet_features, outputs[0][2].float())


def test_without_guidance_and_other_sizes(pipe) -> None:
    r = synthesize(pipe, PROMPTS[:1], WORDS[:1], [0], steps=2, guidance=1.0, height=48, width=80,
                   unet_feature_block="mid_block")[0]
    assert r.image.shape == (48, 80, 3)
    assert r.attributions["cat"].shape == (48, 80) and np.isfinite(r.attributions["cat"]).all()
    assert r.unet_features.ndim == 3


def test_user_errors(pipe) -> None:
    with pytest.raises(ProtosegError, match="one word list and one seed per prompt"):
        synthesize(pipe, PROMPTS, WORDS[:2], SEEDS, steps=1)
    with pytest.raises(ProtosegError, match="does not occur"):
        synthesize(pipe, ["a cat"], [["dog"]], [0], steps=1)
    skipped = synthesize(pipe, ["a cat"], [["dog", "cat"]], [0], steps=1, missing_words="skip")[0]
    assert list(skipped.attributions) == ["cat"]
    with pytest.raises(ProtosegError, match="multiple of 8"):
        synthesize(pipe, ["a cat"], [["cat"]], [0], steps=1, height=60)
    with pytest.raises(ProtosegError, match="out of range"):
        synthesize(pipe, ["a cat"], [["cat"]], [0], steps=1, unet_feature_block=7)


def test_half_precision_pipeline_capture_keeps_image(tmp_path) -> None:
    """The CUDA default dtype (float16) through the same code, here on the CPU."""
    half = load_pipeline(tiny_stable_diffusion(tmp_path / "sd"), device="cpu", dtype="float16")
    assert half.unet.dtype == torch.float16
    result = synthesize(half, PROMPTS[:1], WORDS[:1], [0], steps=2, unet_feature_block=1)[0]
    out = half(prompt=PROMPTS[:1], num_inference_steps=2, height=64, width=64,
               generator=[torch.Generator().manual_seed(0)], output_type="np")
    assert np.array_equal(result.image, (out.images[0] * 255).round().astype(np.uint8))
    assert all(m.dtype == np.float32 and np.isfinite(m).all() for m in result.attributions.values())
    assert result.unet_features.dtype == torch.float32
