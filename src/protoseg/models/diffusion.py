"""Stable Diffusion loading, and a tiny random Stable Diffusion pipeline for tests and ``*-tiny`` presets.

:func:`load_pipeline` loads a real ``StableDiffusionPipeline`` by hub id (e.g.
``stabilityai/stable-diffusion-2-1-base`` for FreeDA, ``stabilityai/stable-diffusion-2-base`` for DPSM)
or local folder. :func:`make_tiny_pipeline` writes a randomly initialised pipeline of the very same
classes (UNet, VAE, CLIP text encoder, CLIP BPE tokenizer, DDIM scheduler) to a folder, small enough to
generate 64x64 images on a CPU in well under a second per step; it exercises the same code paths as the
real models (cross-attention at several resolutions, several heads per layer, classifier-free guidance).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from protoseg.errors import ProtosegError
from protoseg.models.base import resolve_device
from protoseg.models.hub import from_pretrained

__all__ = ["SCHEDULERS", "TINY_WORDS", "load_pipeline", "make_tiny_pipeline"]

#: Scheduler choices of :func:`load_pipeline` (``None`` keeps the pipeline's own scheduler).
SCHEDULERS = ("ddim", "pndm", "dpm")


def _resolve_pipeline_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None``/``"auto"``: fp16 on CUDA (the usual Stable Diffusion inference precision), fp32 elsewhere."""
    if dtype is None or dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    from protoseg.models.base import resolve_dtype

    return resolve_dtype(dtype, device)


def _dtype_kwarg(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """``dtype=`` for diffusers versions that renamed ``torch_dtype`` (and warn on the old name)."""
    try:
        from diffusers.utils.deprecation_utils import _TORCH_DTYPE_DEPRECATION_MESSAGE  # noqa: F401
    except ImportError:
        return {"torch_dtype": dtype}
    return {"dtype": dtype}


def _swap_scheduler(pipe: Any, scheduler: str) -> None:
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, PNDMScheduler

    classes = {"ddim": DDIMScheduler, "pndm": PNDMScheduler, "dpm": DPMSolverMultistepScheduler}
    if scheduler not in classes:
        raise ProtosegError(f"unknown scheduler {scheduler!r}; choose one of: {', '.join(SCHEDULERS)} "
                            "(or none to keep the pipeline's own)")
    pipe.scheduler = classes[scheduler].from_config(pipe.scheduler.config)


def load_pipeline(name_or_path: str | Path, device: str | torch.device | None = None,
                  dtype: str | torch.dtype | None = None, scheduler: str | None = None) -> Any:
    """A ``diffusers.StableDiffusionPipeline`` from a hub id or a local folder, ready for inference.

    Args:
        name_or_path: hub id (``stabilityai/stable-diffusion-2-1-base``) or folder written by
            ``save_pretrained`` (e.g. by :func:`make_tiny_pipeline`).
        device: ``None``/``"auto"`` = CUDA when available, else CPU.
        dtype: ``None``/``"auto"`` = float16 on CUDA, float32 on CPU; or ``"float32"``/``"float16"``/...
        scheduler: ``None`` keeps the scheduler saved with the pipeline (for the SD 2.x base checkpoints
            that is the checkpoint's default; neither paper states the sampler, only 50 steps);
            ``"ddim"``, ``"pndm"`` or ``"dpm"`` rebuild that scheduler class from the saved config.

    The safety checker is disabled (not loaded): prototypes are built from synthetic images whose
    content is fixed by the captions, and a blacked-out image would silently corrupt a prototype.
    The progress bar of diffusers is switched off (library code never prints).
    """
    from diffusers import StableDiffusionPipeline

    device_ = resolve_device(device)
    dtype_ = _resolve_pipeline_dtype(dtype, device_)
    pipe = from_pretrained(StableDiffusionPipeline.from_pretrained, str(name_or_path), **_dtype_kwarg(dtype_),
                           safety_checker=None, requires_safety_checker=False)
    if scheduler is not None:
        _swap_scheduler(pipe, scheduler)
    pipe = pipe.to(device_)
    pipe.set_progress_bar_config(disable=True)
    return pipe


#: Words that the tiny tokenizer encodes as one token each (any other text falls back to sub-words/bytes).
TINY_WORDS: tuple[str, ...] = tuple(dict.fromkeys("""
a an the of on in at with and to is are by near next under over behind front top its their his her
photo picture image view close up good nice two three some many one
cat dog car wheel bus truck bicycle motorcycle person man woman child people bird horse sheep cow
boat train airplane plane bottle chair sofa couch table plant tree grass sky road street building house
wall floor window door water sea river mountain snow sand field food pizza cake cup bowl bed tv laptop
keyboard book clock vase kitchen room city park beach body tire window roof leg head tail eye
red blue green white black yellow brown small large big old new wooden metal
sitting standing parked walking running lying riding flying eating holding
""".split()))


def _bytes_to_unicode() -> dict[int, str]:
    """The reversible byte -> printable character map of byte-level BPE (GPT-2 / CLIP)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def _bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding of one word: repeatedly merge the lowest-ranked adjacent pair (all occurrences)."""
    symbols = list(symbols)
    while len(symbols) > 1:
        pairs = [(symbols[i], symbols[i + 1]) for i in range(len(symbols) - 1)]
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        merged: list[str] = []
        i = 0
        while i < len(symbols):
            if i < len(symbols) - 1 and (symbols[i], symbols[i + 1]) == best:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


def _tiny_vocab_and_merges(words: tuple[str, ...]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-style BPE vocabulary: all 256 byte symbols (with and without ``</w>``), merges that make
    every word of ``words`` a single token, and the two special tokens."""
    byte_chars = list(_bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars]
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in dict.fromkeys(words):
        # Append merges at the end of the ranking: a new merge only fires once no earlier merge applies,
        # so words already encoded as one token keep their encoding.
        initial = list(word[:-1]) + [word[-1] + "</w>"]
        symbols = _bpe(initial, ranks)
        while len(symbols) > 1:
            pair = (symbols[0], symbols[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            tokens.append(pair[0] + pair[1])
            symbols = _bpe(initial, ranks)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    return vocab, merges


def _tiny_tokenizer(words: tuple[str, ...]) -> Any:
    """A real ``CLIPTokenizer`` built offline from a written ``vocab.json`` / ``merges.txt``."""
    from transformers import CLIPTokenizer

    vocab, merges = _tiny_vocab_and_merges(words)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        (Path(tmp) / "merges.txt").write_text(
            "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
        tokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=77)
    return tokenizer


def make_tiny_pipeline(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny randomly initialised ``StableDiffusionPipeline`` to ``folder`` and return it.

    Components (same classes as Stable Diffusion 2.x): ``UNet2DConditionModel`` with three levels
    (channels 32/64/64, cross-attention in the first two levels of both paths, 2 and 4 heads, latent
    8x8 for a 64x64 image, so cross-attention maps at 8x8 and 4x4), ``AutoencoderKL`` with scale factor
    8, ``CLIPTextModel`` (hidden size 32, 77 positions), ``CLIPTokenizer`` whose vocabulary makes every
    word of :data:`TINY_WORDS` one token, and ``DDIMScheduler`` with the SD betas. No safety checker.
    Load it with :func:`load_pipeline`. Deterministic given ``seed``.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(folder)
    tokenizer = _tiny_tokenizer(TINY_WORDS)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64, 64), norm_num_groups=8, cross_attention_dim=32,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=(2, 4, 4))
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        block_out_channels=(8, 16, 16, 16), sample_size=64,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder
