"""Cross-attention capture (eq. 1) through a real, tiny, random StableDiffusionPipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import StableDiffusionPipeline
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

from protoseg.errors import ProtosegError
from protoseg.generate.attention import capture_cross_attention, query_grid, word_token_indices
from protoseg.generate.synthesis import synthesize
from protoseg.models.diffusion import load_pipeline
from protoseg.testing import TINY_WORDS, tiny_stable_diffusion

SIZE = 64
LATENT = (8, 8)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory) -> StableDiffusionPipeline:
    folder = tiny_stable_diffusion(tmp_path_factory.mktemp("tiny-sd"), seed=0)
    return load_pipeline(folder, device="cpu")


def _generate(pipe: StableDiffusionPipeline, prompts: list[str], seeds: list[int], steps: int = 3,
              guidance: float = 7.5) -> np.ndarray:
    out = pipe(prompt=prompts, num_inference_steps=steps, guidance_scale=guidance, height=SIZE, width=SIZE,
               generator=[torch.Generator().manual_seed(s) for s in seeds], output_type="np")
    return np.asarray(out.images)


def _cross_attention_modules(unet: torch.nn.Module) -> list[Attention]:
    return [m for m in unet.modules() if isinstance(m, Attention) and m.is_cross_attention]


# ---------------------------------------------------------------- loading and tokens


def test_tiny_pipeline_loads_as_real_stable_diffusion(pipe: StableDiffusionPipeline) -> None:
    assert isinstance(pipe, StableDiffusionPipeline)
    assert pipe.safety_checker is None
    assert pipe.unet.dtype == torch.float32 and pipe.device.type == "cpu"
    assert pipe.vae_scale_factor == 8
    tokens = pipe.tokenizer(list(TINY_WORDS), add_special_tokens=False)["input_ids"]
    assert all(len(t) == 1 for t in tokens)
    assert len(set(t[0] for t in tokens)) == len(TINY_WORDS)
    # several resolutions and head counts, the situation eq. 1 averages over
    heads = {m.heads for m in _cross_attention_modules(pipe.unet)}
    assert len(heads) >= 2


def test_load_pipeline_scheduler_option_and_missing_weights(tmp_path, pipe) -> None:
    folder = tiny_stable_diffusion(tmp_path / "sd", seed=1)
    ddim = load_pipeline(folder, device="cpu", scheduler="pndm")
    assert type(ddim.scheduler).__name__ == "PNDMScheduler"
    with pytest.raises(ProtosegError, match="cannot load model weights"):
        load_pipeline(tmp_path / "missing", device="cpu")
    with pytest.raises(ProtosegError, match="unknown scheduler"):
        load_pipeline(folder, device="cpu", scheduler="euler-magic")


def test_word_token_indices(pipe: StableDiffusionPipeline) -> None:
    tok = pipe.tokenizer
    assert word_token_indices(tok, "a photo of a cat", "cat") == [5]
    assert word_token_indices(tok, "a photo of a cat", "a") == [1, 4]
    assert word_token_indices(tok, "A photo of a Cat", "cat") == [5]
    # a word the vocabulary splits into several tokens: its consecutive positions
    ids = tok("a wheelbarrow", add_special_tokens=False)["input_ids"]
    assert len(ids) > 2
    expected = list(range(2, 2 + len(ids) - 1))
    assert word_token_indices(tok, "a wheelbarrow on grass", "wheelbarrow") == expected
    # sub-word pieces do not match inside another word
    with pytest.raises(ProtosegError, match="does not occur"):
        word_token_indices(tok, "two wheels", "s")
    with pytest.raises(ProtosegError, match="does not occur"):
        word_token_indices(tok, "a photo of a cat", "dog")


def test_query_grid() -> None:
    assert query_grid(64, (8, 8)) == (8, 8)
    assert query_grid(4, (8, 8)) == (2, 2)
    assert query_grid(96 * 64, (96, 64)) == (96, 64)
    assert query_grid(12 * 8, (96, 64)) == (12, 8)
    assert query_grid(3 * 2, (9, 5)) == (3, 2)  # ceil halving: 9x5 -> 5x3 -> 3x2
    with pytest.raises(ValueError):
        query_grid(7, (8, 8))


# ---------------------------------------------------------------- the image is not changed


@pytest.mark.parametrize("processor", ["sdpa", "classic"])
def test_capture_does_not_change_image_and_restores_processors(pipe, processor) -> None:
    original = dict(pipe.unet.attn_processors)
    try:
        if processor == "classic":
            pipe.unet.set_attn_processor(AttnProcessor())
        before = dict(pipe.unet.attn_processors)
        prompts, seeds = ["a photo of a cat", "a red car on the road"], [3, 4]
        plain = _generate(pipe, prompts, seeds)
        indices = [[word_token_indices(pipe.tokenizer, p, w)]
                   for p, w in zip(prompts, ["cat", "car"], strict=True)]
        with capture_cross_attention(pipe.unet, indices, LATENT) as store:
            captured = _generate(pipe, prompts, seeds)
        assert np.array_equal(plain, captured)
        assert store.num_terms > 0
        after = dict(pipe.unet.attn_processors)
        assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)
    finally:
        pipe.unet.set_attn_processor(original)
    assert all(isinstance(p, AttnProcessor2_0) for p in pipe.unet.attn_processors.values())


def test_processors_restored_after_error(pipe) -> None:
    before = dict(pipe.unet.attn_processors)
    with pytest.raises(RuntimeError, match="boom"):
        with capture_cross_attention(pipe.unet, [[[1]]], LATENT):
            raise RuntimeError("boom")
    assert all(pipe.unet.attn_processors[k] is v for k, v in before.items())


# ---------------------------------------------------------------- eq. 1 against an independent capture


class _StoreEverything:
    """Reference: keeps every conditional attention probability tensor of every call (no running sum),
    computed by diffusers' own ``get_attention_scores``; the output comes from the default processor."""

    def __init__(self, calls: list[torch.Tensor], batch: int):
        self.calls, self.batch, self.default = calls, batch, AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        probs = attn.get_attention_scores(query.float(), key.float())  # [rows * heads, N, S]
        rows = hidden_states.shape[0]
        probs = probs.reshape(rows, attn.heads, *probs.shape[1:])[rows - self.batch:]
        self.calls.append(probs.detach().clone())
        return self.default(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


def _reference_eq1(calls: list[torch.Tensor], sample: int, tokens: list[int], size: int) -> torch.Tensor:
    """1/(T L H) sum_{t,l,h} upsample(sum_{tokens} attn): every single map upsampled to the image size."""
    total, terms = torch.zeros(size, size), 0
    for probs in calls:
        heads, queries = probs.shape[1], probs.shape[2]
        side = int(round(queries ** 0.5))
        for h in range(heads):
            single = probs[sample, h][:, tokens].sum(dim=-1).reshape(1, 1, side, side)
            total += F.interpolate(single, size=(size, size), mode="bilinear", align_corners=False)[0, 0]
            terms += 1
    return total / terms


def test_eq1_normalisation_matches_store_everything_reference(pipe) -> None:
    prompts = ["a photo of a cat on a wheelbarrow", "a dog near a red car"]
    words = [["cat", "wheelbarrow"], ["dog", "car"]]
    seeds, steps = [11, 12], 3
    calls: list[torch.Tensor] = []
    original = dict(pipe.unet.attn_processors)
    ref = _StoreEverything(calls, batch=2)
    pipe.unet.set_attn_processor({k: ref if k.endswith("attn2.processor") else v
                                  for k, v in original.items()})
    try:
        ref_images = _generate(pipe, prompts, seeds, steps=steps)
    finally:
        pipe.unet.set_attn_processor(original)
    n_layers = len(_cross_attention_modules(pipe.unet))
    assert len(calls) == steps * n_layers

    # literal eq. 1: every term upsampled to the image size
    literal = synthesize(pipe, prompts, words, seeds, steps=steps, height=SIZE, width=SIZE, batch_size=2,
                         map_size=(SIZE, SIZE))
    # default: running sum at the latent resolution, then upsampled
    default = synthesize(pipe, prompts, words, seeds, steps=steps, height=SIZE, width=SIZE, batch_size=2)
    for b, result in enumerate(literal):
        assert np.array_equal((ref_images[b] * 255).round().astype(np.uint8), result.image)
        for w in words[b]:
            tokens = word_token_indices(pipe.tokenizer, prompts[b], w)
            expected = _reference_eq1(calls, b, tokens, SIZE).numpy()
            got = result.attributions[w]
            assert got.shape == (SIZE, SIZE) and got.dtype == np.float32
            assert np.isfinite(got).all() and (got >= 0).all()
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
            approx = default[b].attributions[w]
            assert approx.shape == (SIZE, SIZE) and (approx >= 0).all()
            # same total attention mass (bilinear resampling preserves the mean up to borders)
            np.testing.assert_allclose(approx.mean(), expected.mean(), rtol=0.05)
            np.testing.assert_allclose(approx, expected, atol=0.25 * expected.max())


def test_token_reduction_mean_divides_by_token_count(pipe) -> None:
    prompt, word = "a wheelbarrow on grass", "wheelbarrow"
    n = len(word_token_indices(pipe.tokenizer, prompt, word))
    summed = synthesize(pipe, [prompt], [[word]], [5], steps=2, height=SIZE, width=SIZE)[0]
    mean = synthesize(pipe, [prompt], [[word]], [5], steps=2, height=SIZE, width=SIZE,
                      token_reduction="mean")[0]
    np.testing.assert_allclose(mean.attributions[word] * n, summed.attributions[word], rtol=1e-5)
    # probabilities over 77 tokens: a map of summed token probabilities never exceeds 1
    assert summed.attributions[word].max() <= 1.0 + 1e-6


# ---------------------------------------------------------------- a token drawn into a known region


def _region(name: str, grid: tuple[int, int]) -> torch.Tensor:
    """Bool ``[h, w]``: left half or top half of a query grid."""
    h, w = grid
    mask = torch.zeros(h, w, dtype=torch.bool)
    if name == "left":
        mask[:, : w // 2] = True
    else:
        mask[: h // 2, :] = True
    return mask


def _install_region_hooks(unet, targets: list[tuple[int, str]], batch: int, strength: float = 12.0) -> list:
    """Forward hooks on ``to_q``/``to_k`` of every cross-attention layer so that, in the CONDITIONAL rows
    only, sample ``b``'s token ``targets[b][0]`` takes (almost) all attention inside region
    ``targets[b][1]`` of each layer's query grid and (almost) none outside it."""
    handles = []
    for attn in _cross_attention_modules(unet):
        inner = attn.to_q.out_features
        direction = torch.ones(inner)

        def q_hook(module, args, output, direction=direction):
            rows, queries, _ = output.shape
            grid = query_grid(queries, LATENT)
            output = output.clone()
            for b, (_, region) in enumerate(targets):
                sign = _region(region, grid).flatten().float() * 2 - 1  # +1 inside, -1 outside
                output[rows - batch + b] += strength * sign[:, None] * direction
            return output

        def k_hook(module, args, output, direction=direction):
            rows = output.shape[0]
            output = output.clone()
            for b, (token, _) in enumerate(targets):
                output[rows - batch + b, token] = strength * direction
            return output

        handles += [attn.to_q.register_forward_hook(q_hook), attn.to_k.register_forward_hook(k_hook)]
    return handles


@pytest.mark.parametrize("processor", ["sdpa", "classic"])
def test_token_drawn_into_a_region_gets_its_map_there(pipe, processor) -> None:
    prompts = ["a photo of a cat and a dog", "a dog on the road near a car"]
    words = [["cat", "dog"], ["dog", "car"]]
    drawn = [("cat", "left"), ("car", "top")]
    targets = [(word_token_indices(pipe.tokenizer, p, w)[0], r)
               for p, (w, r) in zip(prompts, drawn, strict=True)]
    original = dict(pipe.unet.attn_processors)
    if processor == "classic":
        pipe.unet.set_attn_processor(AttnProcessor())
    handles = _install_region_hooks(pipe.unet, targets, batch=2)
    try:
        results = synthesize(pipe, prompts, words, [7, 8], steps=3, height=SIZE, width=SIZE, batch_size=2)
    finally:
        for handle in handles:
            handle.remove()
        pipe.unet.set_attn_processor(original)
    for result, (word, region), ws in zip(results, drawn, words, strict=True):
        inside = _region(region, (SIZE, SIZE)).numpy()
        drawn_map = result.attributions[word]
        other_map = result.attributions[next(w for w in ws if w != word)]
        # the drawn token holds nearly all attention inside its region and nearly none outside
        assert drawn_map[inside].mean() > 0.8
        assert drawn_map[~inside].mean() < 0.2
        # its strongest pixels are in the region (fails for transposed / flipped / mixed-up reshapes)
        assert inside.flatten()[np.argsort(drawn_map.flatten())[-SIZE * SIZE // 4:]].all()
        # another word of the same prompt gets no mass there (fails for an off-by-one token index)
        assert other_map[inside].mean() < 0.05
    # the two samples were drawn into different regions: maps are per sample, not mixed
    left, top = _region("left", (SIZE, SIZE)).numpy(), _region("top", (SIZE, SIZE)).numpy()
    cat, car = results[0].attributions["cat"], results[1].attributions["car"]
    assert cat[left & ~top].mean() > 5 * cat[top & ~left].mean()
    assert car[top & ~left].mean() > 5 * car[left & ~top].mean()


def test_unconditional_rows_are_ignored(pipe) -> None:
    """A token made to take all attention everywhere in the UNCONDITIONAL rows only must not show."""
    prompt, word = "a photo of a cat and a dog", "cat"
    token = word_token_indices(pipe.tokenizer, prompt, word)[0]
    handles = []
    for attn in _cross_attention_modules(pipe.unet):
        direction = torch.ones(attn.to_q.out_features)

        def q_hook(module, args, output, direction=direction):
            output = output.clone()
            output[0] += 12.0 * direction  # row 0 = unconditional half under CFG (batch of one)
            return output

        def k_hook(module, args, output, direction=direction):
            output = output.clone()
            output[0, token] = 12.0 * direction
            return output

        handles += [attn.to_q.register_forward_hook(q_hook), attn.to_k.register_forward_hook(k_hook)]
    try:
        hooked = synthesize(pipe, [prompt], [[word]], [9], steps=2, height=SIZE, width=SIZE)[0]
    finally:
        for handle in handles:
            handle.remove()
    # a capture of the unconditional half would give ~1.0 everywhere
    assert hooked.attributions[word].max() < 0.2
