"""Generate support images with Stable Diffusion, with eq. 1 attribution maps and UNet features.

One call of :func:`synthesize` runs the pipeline over prompts in batches; for each image it returns
the pixels, the cross-attention attribution map of each requested word (eq. 1 of FreeDA / DPSM, see
:mod:`protoseg.generate.attention`) and optionally one UNet decoder feature map (DPSM's whole-level
feature, eq. 2: ``phi_1`` = the SD UNet).

Determinism: each image has its own seed and its own ``torch.Generator`` (on the CPU, so a seed gives
the same initial latent on every device), so an image depends only on its prompt and seed, never on
the batch it was generated in.

UNet features (DPSM eq. 2): DPSM names the SD UNet as ``phi_1`` without saying which layer or step.
The default here, :data:`DEFAULT_UNET_FEATURE_BLOCK` = ``up_blocks[1]`` output at the denoising step
whose timestep is closest to :data:`DEFAULT_UNET_FEATURE_TIMESTEP` = 261, is the usual choice for
semantic Stable Diffusion features (DIFT, Tang et al. 2023: SD 2.1, ``up_ft_index=1``, ``t=261``); for a
512x512 SD 2.x image it is a ``[1280, 32, 32]`` map. Only the conditional branch is kept under
classifier-free guidance.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from protoseg.errors import ProtosegError
from protoseg.generate.attention import capture_cross_attention, word_token_indices

__all__ = ["DEFAULT_UNET_FEATURE_BLOCK", "DEFAULT_UNET_FEATURE_TIMESTEP", "Synthesis", "UnetFeatureCapture",
           "synthesize"]

DEFAULT_UNET_FEATURE_BLOCK = 1
DEFAULT_UNET_FEATURE_TIMESTEP = 261


@dataclass
class Synthesis:
    """One generated image and what was captured while generating it.

    Attributes:
        prompt: the conditioning text.
        seed: the seed of the image's generator.
        image: uint8 ``[H, W, 3]`` RGB.
        attributions: word -> float32 ``[H, W]`` eq. 1 map (mean cross-attention probability over
            steps, layers and heads; non-negative; sums of token probabilities for multi-token words).
        unet_features: float32 ``[C, h, w]`` (CPU) output of the chosen UNet block at the chosen step,
            conditional branch, or ``None`` when not requested.
        unet_timestep: the scheduler timestep at which ``unet_features`` was taken, or ``None``.
    """

    prompt: str
    seed: int
    image: np.ndarray
    attributions: dict[str, np.ndarray]
    unet_features: torch.Tensor | None = None
    unet_timestep: int | None = None


def _resolve_block(unet: Any, block: int | str) -> torch.nn.Module:
    if isinstance(block, int):
        if not 0 <= block < len(unet.up_blocks):
            raise ProtosegError(f"unet_feature_block {block} out of range: the UNet has "
                                f"{len(unet.up_blocks)} up blocks (use 0..n-1, or a module path "
                                "such as 'up_blocks.1')")
        return unet.up_blocks[block]
    try:
        return unet.get_submodule(block)
    except AttributeError:
        raise ProtosegError(f"the UNet has no module {block!r}; "
                            "use e.g. 'up_blocks.1' or 'mid_block'") from None


class UnetFeatureCapture:
    """Forward hooks that keep one UNet module's output at one denoising step.

    A pre-hook on the UNet reads the timestep of each call; the step chosen is the one of the
    scheduler's timesteps closest to ``timestep`` (decided at the first UNet call, when the pipeline
    has set the schedule). The module's output rows of the conditional branch are kept as
    float32 ``[B, C, h, w]`` in :attr:`features` (on the CPU).
    """

    def __init__(self, unet: Any, scheduler: Any, block: int | str, timestep: int, batch_size: int):
        self.unet = unet
        self.scheduler = scheduler
        self.module = _resolve_block(unet, block)
        self.target = timestep
        self.batch_size = batch_size
        self.chosen: int | None = None
        self.current: int | None = None
        self.features: torch.Tensor | None = None

    def _pre_hook(self, module: Any, args: tuple, kwargs: dict) -> None:
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        self.current = int(t.flatten()[0].item()) if isinstance(t, torch.Tensor) else int(t)
        if self.chosen is None:
            steps = [int(s) for s in self.scheduler.timesteps]
            self.chosen = min(steps, key=lambda s: (abs(s - self.target), s))

    def _hook(self, module: Any, args: tuple, output: Any) -> None:
        if self.current != self.chosen or self.features is not None:
            return
        out = output[0] if isinstance(output, tuple) else output
        rows = out.shape[0]
        if rows not in (self.batch_size, 2 * self.batch_size):
            raise ValueError(f"UNet batch of {rows} rows does not match {self.batch_size} samples")
        self.features = out[rows - self.batch_size:].detach().float().cpu()

    @contextmanager
    def attached(self) -> Iterator[UnetFeatureCapture]:
        handles = [self.unet.register_forward_pre_hook(self._pre_hook, with_kwargs=True),
                   self.module.register_forward_hook(self._hook)]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()


def _occurs(tokenizer: Any, prompt: str, word: str) -> bool:
    try:
        word_token_indices(tokenizer, prompt, word)
    except ProtosegError:
        return False
    return True


def _image_size(pipe: Any, height: int | None, width: int | None) -> tuple[int, int]:
    default = pipe.unet.config.sample_size * pipe.vae_scale_factor
    height, width = height or default, width or default
    if height % pipe.vae_scale_factor or width % pipe.vae_scale_factor:
        raise ProtosegError(f"image size {height}x{width} must be a multiple of {pipe.vae_scale_factor}")
    return height, width


def synthesize(pipe: Any, prompts: Sequence[str], words: Sequence[Sequence[str]], seeds: Sequence[int],
               steps: int = 50, guidance: float = 7.5, height: int | None = None, width: int | None = None,
               batch_size: int = 4, unet_feature_block: int | str | None = None,
               unet_feature_timestep: int = DEFAULT_UNET_FEATURE_TIMESTEP,
               map_size: tuple[int, int] | None = None,
               token_reduction: str = "sum", negative_prompt: str | None = None,
               missing_words: str = "raise") -> list[Synthesis]:
    """Generate one image per prompt with its words' attribution maps (and optionally UNet features).

    Args:
        pipe: a ``StableDiffusionPipeline`` (:func:`protoseg.models.diffusion.load_pipeline`).
        prompts: ``N`` texts.
        words: per prompt, the words whose maps are wanted (each must occur in its prompt; may be empty).
        seeds: ``N`` seeds, one per image.
        steps: denoising steps (both papers: 50). guidance: classifier-free guidance scale (> 1 enables
            it; the diffusers default 7.5, the papers do not state it).
        height: image height (default: the UNet's native size, 512 for SD 2.x base).
        width: image width (default likewise).
        batch_size: images per pipeline call (does not change the results).
        unet_feature_block: ``None`` (no features), an index into ``unet.up_blocks``
            (:data:`DEFAULT_UNET_FEATURE_BLOCK` for DPSM), or a module path (``"mid_block"``).
        unet_feature_timestep: the features are taken at the step whose timestep is closest to this.
        map_size: resolution ``(h, w)`` of the stored maps (:class:`protoseg.generate.attention.CrossAttentionStore`).
        token_reduction: how a word's sub-tokens combine (:class:`protoseg.generate.attention.CrossAttentionStore`).
        negative_prompt: optional text of the unconditional branch.
        missing_words: ``"raise"`` (a :class:`ProtosegError` when a word does not occur in its prompt) or
            ``"skip"`` (such a word gets no entry in ``attributions``).

    Returns:
        ``N`` :class:`Synthesis` in prompt order.
    """
    if not (len(prompts) == len(words) == len(seeds)):
        raise ProtosegError(f"got {len(prompts)} prompts, {len(words)} word lists and {len(seeds)} seeds; "
                            "pass one word list and one seed per prompt")
    if missing_words not in ("raise", "skip"):
        raise ProtosegError(f"missing_words must be 'raise' or 'skip', got {missing_words!r}")
    if batch_size < 1:
        raise ProtosegError(f"batch_size must be at least 1, got {batch_size}")
    height, width = _image_size(pipe, height, width)
    latent_size = (height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
    results: list[Synthesis] = []
    for start in range(0, len(prompts), batch_size):
        batch = range(start, min(start + batch_size, len(prompts)))
        batch_prompts = [prompts[i] for i in batch]
        batch_words = [[w for w in dict.fromkeys(words[i])
                        if missing_words == "raise" or _occurs(pipe.tokenizer, prompts[i], w)] for i in batch]
        token_indices = [[word_token_indices(pipe.tokenizer, prompts[i], w) for w in ws]
                         for i, ws in zip(batch, batch_words, strict=True)]
        generators = [torch.Generator("cpu").manual_seed(int(seeds[i])) for i in batch]
        features = (UnetFeatureCapture(pipe.unet, pipe.scheduler, unet_feature_block, unet_feature_timestep,
                                       len(batch)) if unet_feature_block is not None else None)
        with (capture_cross_attention(pipe.unet, token_indices, latent_size, map_size, token_reduction)
              as store, features.attached() if features is not None else nullcontext()):
            output = pipe(prompt=batch_prompts, num_inference_steps=steps, guidance_scale=guidance,
                          height=height, width=width, generator=generators, output_type="np",
                          negative_prompt=[negative_prompt] * len(batch) if negative_prompt else None)
        images = (np.asarray(output.images) * 255).round().clip(0, 255).astype(np.uint8)
        maps = store.attribution_maps((height, width))
        for j, i in enumerate(batch):
            results.append(Synthesis(
                prompt=prompts[i], seed=int(seeds[i]), image=images[j],
                attributions={w: maps[j][k].numpy().astype(np.float32) for k, w in enumerate(batch_words[j])},
                unet_features=features.features[j] if features is not None and features.features is not None
                else None,
                unet_timestep=features.chosen if features is not None else None))
    return results
