"""Tiny random models of the real Hugging Face classes, saved to folders the adapters load.

They share the architecture code and the loading path of the real checkpoints (``facebook/dinov2-*``,
``openai/clip-vit-*``, ``stabilityai/stable-diffusion-2-*``, ``facebook/sam-vit-*``); only the sizes and
the (random, seeded) weights differ. The CLIP and Stable Diffusion text towers share one tokenizer
(:mod:`protoseg.testing.tokenizer`). The ``*-tiny`` presets use them so that an install can be
smoke-tested end to end on a CPU without any download; their outputs carry no meaning.

:func:`ensure_tiny_models` writes them once into ``tiny_dir()`` (``$PROTOSEG_CACHE/tiny``, default
``~/.cache/protoseg/tiny``) and returns the folders.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from protoseg.atomic import atomic_dir, mark_generated
from protoseg.testing.tokenizer import TINY_WORDS, clip_tokenizer

#: Folder names of the tiny models inside :func:`tiny_dir` (also their encoder ids in banks).
TINY_NAMES = {"features": "tiny-dinov2", "text": "tiny-clip", "diffusion": "tiny-sd"}


def tiny_dir() -> Path:
    """Where the tiny models live: ``$PROTOSEG_CACHE/tiny`` (default ``~/.cache/protoseg/tiny``)."""
    root = os.environ.get("PROTOSEG_CACHE") or str(Path.home() / ".cache" / "protoseg")
    return Path(root) / "tiny"


def tiny_dinov2(folder: str | Path, seed: int = 0, hidden_size: int = 32) -> Path:
    """A random 2-layer ``Dinov2Model`` (patch 14, 518 px -> 37x37 grid) saved to ``folder``."""
    # import time: transformers / diffusers (seconds), paid only when a tiny model is made
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    config = Dinov2Config(hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=2 * hidden_size, patch_size=14, image_size=518)
    folder = Path(folder)
    Dinov2Model(config).eval().save_pretrained(folder)
    return folder


def tiny_clip(folder: str | Path, seed: int = 0, projection_dim: int = 16) -> Path:
    """A random 2-layer ``CLIPModel`` (text 32-d, vision 32-d patch 32 at 224 px, projection 16-d) with the
    tiny ``CLIPTokenizer`` (:func:`protoseg.testing.tokenizer.clip_tokenizer`), both saved to ``folder``."""
    # import time: transformers / diffusers (seconds), paid only when a tiny model is made
    from transformers import CLIPConfig, CLIPModel

    folder = Path(folder)
    tokenizer = clip_tokenizer(TINY_WORDS)
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=224, patch_size=32)
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim))
    model.eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_stable_diffusion(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny randomly initialised ``StableDiffusionPipeline`` to ``folder`` and return it.

    Components (same classes as Stable Diffusion 2.x): ``UNet2DConditionModel`` with three levels
    (channels 32/64/64, cross-attention in the first two levels of both paths, 2 and 4 heads, latent
    8x8 for a 64x64 image, so cross-attention maps at 8x8 and 4x4), ``AutoencoderKL`` with scale factor
    8, ``CLIPTextModel`` (hidden size 32, 77 positions), the tiny ``CLIPTokenizer`` whose vocabulary makes
    every word of :data:`~protoseg.testing.tokenizer.TINY_WORDS` one token, and ``DDIMScheduler`` with the
    SD betas. No safety checker. Small enough to generate 64x64 images on a CPU in well under a second per
    step; it exercises the same code paths as the real models (cross-attention at several resolutions,
    several heads per layer, classifier-free guidance). Load it with
    :func:`protoseg.models.diffusion.load_pipeline`. Deterministic given ``seed``.
    """
    # import time: transformers / diffusers (seconds), paid only when a tiny model is made
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(folder)
    tokenizer = clip_tokenizer(TINY_WORDS)
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


def tiny_sam(folder: str | Path, image_size: int = 64, seed: int = 0) -> Path:
    """A random ``SamModel`` (2-layer ViT, 32-d) + a ``SamProcessor`` resizing to ``image_size``, saved in
    ``folder``; returns ``folder``."""
    # import time: transformers / diffusers (seconds), paid only when a tiny model is made
    from transformers import (
        SamConfig,
        SamMaskDecoderConfig,
        SamModel,
        SamProcessor,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    folder = Path(folder)
    torch.manual_seed(seed)
    patch = 16
    vision = SamVisionConfig(hidden_size=32, output_channels=32, num_hidden_layers=2, num_attention_heads=2,
                             image_size=image_size, patch_size=patch, window_size=2, global_attn_indexes=[1],
                             num_pos_feats=16, mlp_dim=64)
    prompt = SamPromptEncoderConfig(hidden_size=32, image_size=image_size, patch_size=patch,
                                    mask_input_channels=4)
    decoder = SamMaskDecoderConfig(hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2,
                                   iou_head_hidden_dim=32)
    config = SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)
    model = SamModel(config)
    model.eval()
    model.save_pretrained(folder)
    mask_side = image_size // 4
    processor = SamProcessor(image_processor=SamImageProcessorPil(
        size={"longest_edge": image_size}, pad_size={"height": image_size, "width": image_size},
        mask_size={"longest_edge": mask_side}, mask_pad_size={"height": mask_side, "width": mask_side}))
    processor.save_pretrained(folder)
    return folder


_BUILDERS = {"features": tiny_dinov2, "text": tiny_clip, "diffusion": tiny_stable_diffusion}


def tiny_model_path(role: str, root: str | Path | None = None) -> Path:
    """Folder of the tiny model of ``role`` (``"features"``, ``"text"``, ``"diffusion"``); may not exist."""
    return Path(root or tiny_dir()) / TINY_NAMES[role]


def ensure_tiny_models(roles: tuple[str, ...] = ("features", "text", "diffusion"),
                       root: str | Path | None = None, seed: int = 0) -> dict[str, Path]:
    """Create the tiny models of ``roles`` under ``root`` (default :func:`tiny_dir`) unless present.

    Each folder is written to a temporary sibling, marked as generated by protoseg and renamed into place,
    so a half-written model is never picked up; an existing folder is never modified. Returns
    ``{role: folder}``.
    """
    out = {}
    for role in roles:
        target = tiny_model_path(role, root)
        if not target.is_dir():
            try:
                with atomic_dir(target) as tmp:
                    _BUILDERS[role](tmp, seed=seed)
                    mark_generated(tmp, {"tiny-model": role, "seed": seed})
            except OSError:
                if not target.is_dir():  # another process may have won the race
                    raise
        out[role] = target
    return out
