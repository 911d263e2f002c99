"""Per-image time of every stage of FreeDA, DPSM and the offline stage on an accelerator, fp32 and bf16.

One command for a machine with a GPU::

    python benchmarks/gpu_suite.py --device cuda [--dtypes float32,bfloat16] [--model-dir DIR]

Models: full-size random-initialised checkpoints from their default configurations (compute does not depend
on the weight values) — DINOv2-B/14 and -L/14, CLIP ViT-B/16 and ViT-L/14, SAM ViT-B, and a real
``StableDiffusionPipeline`` with Stable Diffusion 2.1-base's UNet, VAE, text encoder (OpenCLIP-H text tower)
and scheduler configurations (written below as dicts, so no hub is needed; every parameter count equals the
released checkpoint's) — saved with ``save_pretrained`` to a folder (``--model-dir`` keeps and reuses them)
and loaded through protoseg's adapters (:class:`protoseg.models.ModelSet`,
:func:`protoseg.models.diffusion.load_pipeline`) in each dtype.

Stages, each timed on one image after an untimed warm-up image, with the device synchronised around it:

- FreeDA-B and FreeDA-L (a 448 x 672 image: two 448² windows; 20 classes, a random bank of 20,000 keyed
  prototypes, K = 350): class preparation (CLIP text + retrieval), windows (resize + crops), DINOv2,
  CLIP image (global term), Felzenszwalb superpixels, pooling + scores (region weights, pooling, cosine);
- DPSM (the same image; SAM once per image; a random paper-scale bank, 150 classes x 64 clusters x 8
  parts = 76,800 part prototypes; SAM's IoU / stability thresholds at 0 so that a random SAM yields a
  realistic number of proposals): SAM image encoder, prompt encoder + mask decoder over the 32 x 32 grid
  (the fast decoder), filtering + NMS + upscaling (``generate_masks`` on the recorded decoder outputs),
  DINOv2, superpixels, sub-regions, transport + composition;
- offline: one 512² Stable Diffusion image at 50 steps with cross-attention capture and the DPSM UNet
  feature, mask extraction (FreeDA's and DPSM's rule), DINOv2 on the image, prototypes (FreeDA's mask
  pooling and text key, DPSM's parts and supplies);
- ``Segmenter.segment_many`` over a folder of 4 images (FreeDA-B and DPSM), in seconds per image; the
  images per second are printed below the table.

Peak memory per stage is ``torch.cuda.max_memory_allocated`` (reset before the stage; weights included);
on a CPU it is the process's peak resident memory so far. Output: a Markdown table
``| stage | <dtype> s ... | peak memory |``, the images/s lines, and a last line ``stages N``.

Budget on one H100 (estimated; the whole run within 10 minutes): building and saving the eight random
models (2.35 B parameters, 9.4 GB in fp32) on the host's CPU takes one to two minutes, and nothing with
``--model-dir`` pointing at a previous run's folder; per dtype, loading everything once from the page cache
takes well under a minute; the FreeDA and DPSM stages are 2 images each (warm-up + timed) plus 4 images of
``segment_many`` — seconds for the forwards, the CPU-bound superpixels and SAM post-processing of ~6 images,
tens of seconds in all; the offline stage is one 2-step warm-up plus one 50-step 512² image (two UNet passes
per step under classifier-free guidance: a few seconds in bf16, ~10 s in fp32). About five minutes in all,
half of it building and loading models.

``--tiny --device cpu`` runs the same code with the tiny random models of :mod:`protoseg.testing.tiny`
(224 x 336 images in 224² windows, an 8 x 8 point grid, small banks, a 64² image at 5 steps, 2 images of
``segment_many``; fp32 unless ``--dtypes`` says otherwise); the test suite runs it.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.utils import logging as diffusers_logging
from PIL import Image
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
    CLIPTextModel,
    Dinov2Config,
    Dinov2Model,
    SamConfig,
    SamModel,
    SamProcessor,
)
from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil
from transformers.utils import logging as transformers_logging

diffusers_logging.disable_progress_bar()
transformers_logging.disable_progress_bar()

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.append(str(HERE))  # dpsm_speed
from dpsm_speed import random_bank as dpsm_bank  # noqa: E402

from protoseg.bank import PrototypeBank  # noqa: E402
from protoseg.config.build import get_build_preset  # noqa: E402
from protoseg.config.segment import get_preset  # noqa: E402
from protoseg.errors import ProtosegError  # noqa: E402
from protoseg.generate.keys import text_keys  # noqa: E402
from protoseg.generate.masks import dpsm_mask, freeda_mask  # noqa: E402
from protoseg.generate.synthesis import synthesize  # noqa: E402
from protoseg.images import load_image  # noqa: E402
from protoseg.models import ModelSet, resolve_device, resolve_dtype  # noqa: E402
from protoseg.models.clip import FREEDA_TEMPLATES  # noqa: E402
from protoseg.models.diffusion import load_pipeline  # noqa: E402
from protoseg.models.sam import as_uint8_image  # noqa: E402
from protoseg.offline.common import image_features  # noqa: E402
from protoseg.offline.parts import image_prototypes, supply_units  # noqa: E402
from protoseg.proposals import generate_masks  # noqa: E402
from protoseg.proposals.amg import point_grid  # noqa: E402
from protoseg.regions import mask_weights, pool_features, superpixels  # noqa: E402
from protoseg.segment import Segmenter  # noqa: E402
from protoseg.testing import TINY_WORDS, clip_tokenizer, tiny_clip, tiny_dinov2, tiny_sam, tiny_stable_diffusion  # noqa: E402
from protoseg.windows import rescale_size, resize_image, window_grid  # noqa: E402
from protoseg.worlds import render_scene  # noqa: E402

CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
           "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
           "tvmonitor"]
PROMPT, WORD = "a photo of a dog sitting on the grass", "dog"

FREEDA_STAGES = ("classes: CLIP text + retrieval", "windows", "DINOv2", "CLIP image", "superpixels",
                 "pooling + scores")
DPSM_STAGES = ("SAM encoder", "SAM decoder over the grid", "filtering + NMS", "DINOv2", "superpixels",
               "sub-regions", "transport + compose")
OFFLINE_STAGES = ("SD image + attention capture", "mask extraction", "DINOv2", "prototypes + keys")
METHODS = ("FreeDA-B", "FreeDA-L")
#: Every row of the table, in order.
STAGES = tuple([f"{m}: {s}" for m in METHODS for s in FREEDA_STAGES] + [f"DPSM: {s}" for s in DPSM_STAGES]
               + [f"offline: {s}" for s in OFFLINE_STAGES]
               + ["segment_many FreeDA-B: s per image", "segment_many DPSM: s per image"])

# ---------------------------------------------------------------- configurations of the full-size models
DINOV2 = {"b": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12),
          "l": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16)}
CLIP = {"b": dict(text=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8),
                  vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                              num_attention_heads=12, patch_size=16), projection_dim=512),
        "l": dict(text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
                  vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                              num_attention_heads=16, patch_size=14), projection_dim=768)}
# stabilityai/stable-diffusion-2-1-base: unet/, vae/, text_encoder/ and scheduler/ configurations.
SD21_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True, act_fn="silu",
    norm_num_groups=32, norm_eps=1e-5, flip_sin_to_cos=True, freq_shift=0, downsample_padding=1,
    mid_block_scale_factor=1, center_input_sample=False)
SD21_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, act_fn="silu",
    norm_num_groups=32, sample_size=512)
SD21_TEXT = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                 num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=512,
                 layer_norm_eps=1e-5)
SD21_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                      set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1, num_train_timesteps=1000,
                      prediction_type="epsilon")


@dataclass(frozen=True)
class Budget:
    """How much work one run does (module docstring): ``image`` (h, w) of the test images and ``window`` the
    sliding-window side (the presets' resize to a short side of ``window``, stride ``window // 2``), ``many``
    images of ``segment_many``, the SAM grid side, the random banks' sizes, the SD steps."""

    image: tuple[int, int] = (448, 672)
    window: int = 448
    many: int = 4
    points_per_side: int = 32
    freeda_bank: int = 20000
    dpsm_bank: tuple[int, int, int] = (150, 64, 8)
    steps: int = 50


FULL = Budget()
TINY = Budget(image=(224, 336), window=224, many=2, points_per_side=8, freeda_bank=2000, dpsm_bank=(10, 4, 4),
              steps=5)


@dataclass(frozen=True)
class ModelDirs:
    """Folders of the saved checkpoints."""

    dinov2_b: Path
    dinov2_l: Path
    clip_b: Path
    clip_l: Path
    sam: Path
    sd: Path


def _fresh(folder: Path, marker: str = "config.json") -> bool:
    """Whether ``folder`` still needs its checkpoint (no ``marker`` file yet)."""
    return not (folder / marker).is_file()


def save_full_models(root: Path) -> ModelDirs:
    """Random full-size checkpoints (module docstring) under ``root``; folders already there are reused."""
    dirs = ModelDirs(*(root / n for n in ("dinov2-base", "dinov2-large", "clip-vit-base-patch16",
                                           "clip-vit-large-patch14", "sam-vit-base",
                                           "stable-diffusion-2-1-base")))
    torch.manual_seed(0)
    for size, folder in (("b", dirs.dinov2_b), ("l", dirs.dinov2_l)):
        if _fresh(folder):
            Dinov2Model(Dinov2Config(image_size=518, patch_size=14, **DINOV2[size])).save_pretrained(folder)
    words = sorted({w.strip(".") for t in FREEDA_TEMPLATES for w in t.split()} | set(CLASSES))
    tokenizer = clip_tokenizer(words)
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    for size, folder in (("b", dirs.clip_b), ("l", dirs.clip_l)):
        if _fresh(folder):
            cfg = CLIP[size]
            text = dict(vocab_size=49408, max_position_embeddings=77, **cfg["text"], **ids)
            config = CLIPConfig(text_config=text, vision_config=dict(image_size=224, **cfg["vision"]),
                                projection_dim=cfg["projection_dim"])
            CLIPModel(config).save_pretrained(folder)
            tokenizer.save_pretrained(folder)
    if _fresh(dirs.sam):
        SamModel(SamConfig()).save_pretrained(dirs.sam)  # the defaults are SAM ViT-B
        SamProcessor(image_processor=SamImageProcessorPil()).save_pretrained(dirs.sam)
    if _fresh(dirs.sd, "model_index.json"):
        save_sd21(dirs.sd)
    return dirs


def save_sd21(folder: Path) -> None:
    """A ``StableDiffusionPipeline`` of random components with Stable Diffusion 2.1-base's configurations."""
    tokenizer = clip_tokenizer(TINY_WORDS)
    text = CLIPTextModel(CLIPTextConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                        pad_token_id=tokenizer.pad_token_id, **SD21_TEXT))
    pipe = StableDiffusionPipeline(vae=AutoencoderKL(**SD21_VAE), text_encoder=text, tokenizer=tokenizer,
                                   unet=UNet2DConditionModel(**SD21_UNET),
                                   scheduler=PNDMScheduler.from_config(SD21_SCHEDULER), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)


def save_tiny_models(root: Path) -> ModelDirs:
    """The tiny random models (:mod:`protoseg.testing.tiny`; a wider DINOv2 and CLIP stand in for -L)."""
    dirs = ModelDirs(*(root / n for n in ("tiny-dinov2-b", "tiny-dinov2-l", "tiny-clip-b", "tiny-clip-l",
                                           "tiny-sam", "tiny-sd")))
    builders = ((dirs.dinov2_b, lambda f: tiny_dinov2(f)), (dirs.dinov2_l, lambda f: tiny_dinov2(f, hidden_size=48)),
                (dirs.clip_b, lambda f: tiny_clip(f)), (dirs.clip_l, lambda f: tiny_clip(f, projection_dim=24)),
                (dirs.sam, lambda f: tiny_sam(f)))
    for folder, build in builders:
        if _fresh(folder):
            build(folder)
    if _fresh(dirs.sd, "model_index.json"):
        tiny_stable_diffusion(dirs.sd)
    return dirs


# ---------------------------------------------------------------- timing
class Stopwatch:
    """Synchronised wall time and peak memory of named stages of one dtype; a stage entered several times
    (once per window) adds up its times and keeps its largest peak. ``keep=False``: a warm-up, nothing kept."""

    def __init__(self, device: torch.device, keep: bool = True):
        self.device, self.keep = device, keep
        self.seconds: dict[str, float] = {}
        self.peak: dict[str, float] = {}

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def stage(self, name: str, per: int = 1) -> Iterator[None]:
        """Time the block as stage ``name``; ``per``: the block did that many images (seconds per image kept)."""
        self.sync()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        yield
        self.sync()
        elapsed = (time.perf_counter() - start) / per
        if self.keep:
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed
            self.peak[name] = max(self.peak.get(name, 0.0), peak_memory_gib(self.device))


def peak_memory_gib(device: torch.device) -> float:
    """``torch.cuda.max_memory_allocated`` on CUDA; the process's peak resident memory elsewhere (GiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def release() -> None:
    """Free the models of the last group before loading the next."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def scene_images(budget: Budget, count: int, seed: int = 0) -> list[np.ndarray]:
    """Parts-world scenes ``uint8 [h, w, 3]`` of the budget's size."""
    rng = np.random.default_rng(seed)
    h, w = budget.image
    return [render_scene(rng, max(h, w))[0][:h, :w] for _ in range(count)]


def window_fields(budget: Budget) -> dict[str, Any]:
    """Preset overrides of the budget's window (the presets' own for 448)."""
    side = budget.window
    return {"scale": (2048 * side // 448, side), "crop": side, "stride": side // 2}


# ---------------------------------------------------------------- FreeDA
def freeda_segmenter(name: str, features: Path, text: Path, budget: Budget, device: torch.device,
                     dtype: torch.dtype) -> Segmenter:
    """The ``freeda-b`` / ``freeda-l`` preset on the saved models with a random keyed bank."""
    preset = get_preset(name.lower(), features=str(features), text=str(text), **window_fields(budget))
    models = ModelSet.for_preset(preset, device=device, dtype=dtype)
    rng = np.random.default_rng(0)
    size = budget.freeda_bank
    labels = {"label": [f"noun{i % 5000}" for i in range(size)]}
    bank = PrototypeBank.create(
        rng.normal(size=(size, models.features.dim)).astype(np.float16), labels, method="freeda",
        feature_encoder=models.features.encoder_id,
        keys=rng.normal(size=(size, models.clip.dim)).astype(np.float32), text_encoder=str(text), dtype="float16")
    return Segmenter(preset, bank, models)


def time_freeda(seg: Segmenter, image: np.ndarray, watch: Stopwatch, method: str) -> None:
    """FreeDA's steps on one image (:meth:`protoseg.match.freeda.FreeDAMatcher.score_windows`, with the
    superpixels in line instead of on a worker thread)."""
    matcher, models, preset = seg.matcher, seg.models, seg.preset
    with watch.stage(f"{method}: classes: CLIP text + retrieval"):
        matcher.prepare(CLASSES)
    with watch.stage(f"{method}: windows"):
        size = rescale_size(*image.shape[:2], preset.scale)
        resized = resize_image(image, size).to(models.device)
        crops = torch.stack([resized[:, y1:y2, x1:x2] for y1, y2, x1, x2 in
                             window_grid(*size, preset.crop, preset.stride)])
    feats = []
    for start in range(0, len(crops), matcher.batch_size):
        batch = crops[start:start + matcher.batch_size]
        with watch.stage(f"{method}: DINOv2"):
            feats.append(models.features(batch))
        with watch.stage(f"{method}: CLIP image"):
            matcher.global_scores(batch)
    for crop, f in zip(crops, torch.cat(feats), strict=True):
        with watch.stage(f"{method}: superpixels"):
            labels = superpixels(as_uint8_image(crop), matcher.superpixel_params)
        with watch.stage(f"{method}: pooling + scores"):
            matcher.local_scores(crop, f, labels)


def run_freeda(dirs: ModelDirs, budget: Budget, device: torch.device, dtype: torch.dtype, images: list[np.ndarray],
               paths: list[Path], watch: Stopwatch) -> None:
    """FreeDA-B and -L stages (warm-up image, timed image); ``segment_many`` with FreeDA-B."""
    for method, features, text in (("FreeDA-B", dirs.dinov2_b, dirs.clip_b), ("FreeDA-L", dirs.dinov2_l, dirs.clip_l)):
        seg = freeda_segmenter(method, features, text, budget, device, dtype)
        time_freeda(seg, images[0], Stopwatch(device, keep=False), method)
        time_freeda(seg, images[1], watch, method)
        if method == "FreeDA-B":
            time_many(seg, CLASSES, paths, watch, "segment_many FreeDA-B: s per image")
        del seg
        release()


def time_many(seg: Segmenter, classes: list[str], paths: list[Path], watch: Stopwatch, name: str) -> None:
    """``segment_many`` over the image files (read as it goes), classes prepared beforehand."""
    seg.prepare(classes)
    with watch.stage(name, per=len(paths)):
        for _ in seg.segment_many((load_image(p) for p in paths), classes):
            pass


# ---------------------------------------------------------------- DPSM
class RecordedPredictor:
    """SAM's decoder outputs computed beforehand, served in order to
    :func:`~protoseg.proposals.generate_masks`, so that its own work (filtering, NMS, upscaling) is timed
    alone; upscaling and the valid low-resolution area are the real predictor's."""

    def __init__(self, sam: Any, embedded: Any, outputs: list[tuple[torch.Tensor, torch.Tensor]]):
        self.sam, self.embedded, self.outputs = sam, embedded, list(outputs)

    def embed(self, image: Any) -> Any:
        return self.embedded

    def predict_points_low(self, image: Any, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.outputs.pop(0)

    def predict_points(self, image: Any, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low, iou = self.predict_points_low(image, points)
        return self.sam.upscale(image, low), iou

    def low_res_valid(self, image: Any, low_size: tuple[int, int]) -> tuple[int, int]:
        return self.sam.low_res_valid(image, low_size)

    def upscale(self, image: Any, low: torch.Tensor) -> torch.Tensor:
        return self.sam.upscale(image, low)


def dpsm_segmenter(dirs: ModelDirs, budget: Budget, device: torch.device, dtype: torch.dtype) -> Segmenter:
    """The ``dpsm`` preset on the saved DINOv2-B and SAM, SAM's thresholds at 0, a random part bank."""
    sam_options = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "points_per_side": budget.points_per_side}
    preset = get_preset("dpsm", features=str(dirs.dinov2_b), sam=str(dirs.sam),
                        matcher_options={"sam_options": sam_options}, **window_fields(budget))
    models = ModelSet.for_preset(preset, device=device, dtype=dtype)
    bank = dpsm_bank(models.features.encoder_id, models.features.dim, *budget.dpsm_bank)
    return Segmenter(preset, bank, models)


def time_dpsm(seg: Segmenter, image: np.ndarray, watch: Stopwatch) -> int:
    """DPSM's steps on one image (SAM once on the resized image, then
    :meth:`protoseg.match.dpsm.DPSMMatcher.__call__`'s steps per window); returns the SAM proposals kept."""
    matcher, models, preset = seg.matcher, seg.models, seg.preset
    sam, settings = models.sam, matcher.sam_settings
    size = rescale_size(*image.shape[:2], preset.scale)
    resized = resize_image(image, size).to(models.device)
    with watch.stage("DPSM: SAM encoder"):
        embedded = sam.embed(resized)
    H, W = embedded.original_size
    grid = point_grid(settings.points_per_side) * torch.tensor([W, H], dtype=torch.float32)
    with watch.stage("DPSM: SAM decoder over the grid"):
        outputs = [sam.predict_points_low(embedded, grid[start:start + settings.points_per_batch])
                   for start in range(0, len(grid), settings.points_per_batch)]
    with watch.stage("DPSM: filtering + NMS"):
        masks = generate_masks(RecordedPredictor(sam, embedded, outputs), resized, settings)[0].to(resized.device)
    for y1, y2, x1, x2 in window_grid(*size, preset.crop, preset.stride):
        crop = resized[:, y1:y2, x1:x2]
        with watch.stage("DPSM: DINOv2"):
            feats = models.features(crop[None])[0].float()
        with watch.stage("DPSM: superpixels"):
            pixels = as_uint8_image(crop)
            fine = torch.from_numpy(superpixels(pixels, matcher.superpixel_params)).to(feats.device)
        with watch.stage("DPSM: sub-regions"):
            proposals = matcher.propose(crop, pixels, masks[:, y1:y2, x1:x2]).to(feats.device)
            sub = matcher.subregions(feats, matcher.add_fallback(proposals, fine), fine)
        with watch.stage("DPSM: transport + compose"):
            matcher.compose(matcher.proposal_scores(sub), sub.masks)
    return len(masks)


def run_dpsm(dirs: ModelDirs, budget: Budget, device: torch.device, dtype: torch.dtype, images: list[np.ndarray],
             paths: list[Path], watch: Stopwatch) -> int:
    """DPSM stages (warm-up image, timed image) and ``segment_many``; returns the timed image's SAM proposals."""
    seg = dpsm_segmenter(dirs, budget, device, dtype)
    classes = [f"class{c}" for c in range(budget.dpsm_bank[0])]
    seg.matcher.prepare(classes)
    time_dpsm(seg, images[0], Stopwatch(device, keep=False))
    proposals = time_dpsm(seg, images[1], watch)
    time_many(seg, classes, paths, watch, "segment_many DPSM: s per image")
    del seg
    release()
    return proposals


# ---------------------------------------------------------------- offline
def time_offline(pipe: Any, models: ModelSet, steps: int, watch: Stopwatch) -> None:
    """One support image as the FreeDA and DPSM builders make it (:func:`protoseg.offline.freeda.freeda_shard`,
    :func:`protoseg.offline.dpsm.dpsm_shard`): synthesis with attention capture and the UNet feature, both
    mask rules, DINOv2, FreeDA's pooled prototype and key, DPSM's parts, supplies and UNet guide."""
    freeda, dpsm = get_build_preset("freeda-b"), get_build_preset("dpsm")
    with watch.stage("offline: SD image + attention capture"):
        synth = synthesize(pipe, [PROMPT], [[WORD]], [0], steps=steps, guidance=freeda.guidance, batch_size=1,
                           unet_feature_block=dpsm.unet_block, unet_feature_timestep=dpsm.unet_timestep)[0]
    attribution = synth.attributions[WORD]
    with watch.stage("offline: mask extraction"):
        masks = [np.asarray(freeda_mask(attribution, freeda.gamma)), np.asarray(dpsm_mask(attribution, dpsm.gamma))]
    # A random model's map may be flat (an empty mask): then the whole image stands in, so that pooling is timed.
    fg_freeda, fg_dpsm = (m if m.any() else np.ones_like(m) for m in masks)
    with watch.stage("offline: DINOv2"):
        feats = image_features(models.features, [synth.image], 1)[0].float()
    with watch.stage("offline: prototypes + keys"):
        weights = mask_weights(torch.from_numpy(fg_freeda)[None].to(feats.device), tuple(feats.shape[-2:]),
                               freeda.pooling)
        pool_features(feats, weights)
        text_keys(models.clip, [WORD], [PROMPT], alpha=freeda.alpha)
        parts = image_prototypes(feats, synth.image, fg_dpsm, dpsm.superpixels, dpsm.pooling)
        if parts is not None and len(parts.parts):
            supply_units(parts.part_areas, dpsm.images_per_class)
        unet = synth.unet_features
        pool_features(unet, mask_weights(torch.from_numpy(fg_dpsm)[None], tuple(unet.shape[-2:]), dpsm.pooling))


def run_offline(dirs: ModelDirs, budget: Budget, device: torch.device, dtype: torch.dtype, watch: Stopwatch) -> None:
    """The offline stage: a 2-step warm-up image, then one image at ``budget.steps`` steps."""
    pipe = load_pipeline(dirs.sd, device, dtype)
    models = ModelSet(str(dirs.dinov2_b), str(dirs.clip_b), device=device, dtype=dtype)
    time_offline(pipe, models, 2, Stopwatch(device, keep=False))
    time_offline(pipe, models, budget.steps, watch)
    del pipe, models
    release()


# ---------------------------------------------------------------- report
DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def report(results: dict[torch.dtype, Stopwatch], device: torch.device) -> list[str]:
    """The Markdown table (one row per stage of :data:`STAGES`) and the images/s lines."""
    names = [DTYPE_NAMES[d] for d in results]
    memory = "GiB allocated" if device.type == "cuda" else "GiB peak RSS"
    lines = ["| stage | " + " | ".join(f"{n} s" for n in names) + " | peak memory |",
             "|---|" + "---:|" * len(names) + "---|"]
    for stage in STAGES:
        seconds = " | ".join(f"{w.seconds[stage]:.4f}" for w in results.values())
        peak = " / ".join(f"{w.peak[stage]:.2f}" for w in results.values())
        lines.append(f"| {stage} | {seconds} | {peak} {memory} |")
    lines.append("")
    for stage in STAGES[-2:]:
        rates = " ".join(f"{n} {1 / w.seconds[stage]:.3f}" for n, w in zip(names, results.values(), strict=True))
        lines.append(f"images_per_s {stage.split(':')[0].removeprefix('segment_many ')} {rates}")
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="cuda, cuda:N, cpu or auto (default)")
    parser.add_argument("--dtypes", default=None,
                        help="comma-separated (float32, bfloat16, float16); default float32,bfloat16 on CUDA, "
                             "float32 elsewhere")
    parser.add_argument("--tiny", action="store_true", help="the tiny random models and a small budget")
    parser.add_argument("--model-dir", type=Path, default=None, help="keep / reuse the random checkpoints here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        device = resolve_device(args.device)
        dtypes = [resolve_dtype(d.strip(), device) for d in
                  (args.dtypes or ("float32,bfloat16" if device.type == "cuda" else "float32")).split(",")]
    except ProtosegError as exc:
        sys.exit(f"error: {exc}")
    budget = TINY if args.tiny else FULL
    with tempfile.TemporaryDirectory(prefix="gpu-suite-") as tmp:
        root = args.model_dir or Path(tmp)
        start = time.perf_counter()
        dirs = (save_tiny_models if args.tiny else save_full_models)(root)
        built = time.perf_counter() - start
        images = scene_images(budget, 2 + budget.many)
        paths = []
        for i, image in enumerate(images[2:]):
            paths.append(Path(tmp) / f"image{i}.png")
            Image.fromarray(image).save(paths[-1])
        where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        print(f"{'tiny' if args.tiny else 'full-size'} random models in {root} (ready in {built:.1f} s); {where}; "
              f"torch {torch.__version__}; image {budget.image[0]}x{budget.image[1]}; SAM grid "
              f"{budget.points_per_side}x{budget.points_per_side}; FreeDA bank {budget.freeda_bank}; DPSM bank "
              f"{'x'.join(map(str, budget.dpsm_bank))}; SD {budget.steps} steps; segment_many {budget.many} images",
              flush=True)
        results, proposals = {}, {}
        for dtype in dtypes:
            watch = results[dtype] = Stopwatch(device)
            run_freeda(dirs, budget, device, dtype, images, paths, watch)
            proposals[DTYPE_NAMES[dtype]] = run_dpsm(dirs, budget, device, dtype, images, paths, watch)
            run_offline(dirs, budget, device, dtype, watch)
    print("\n".join(report(results, device)))
    print("SAM proposals after NMS (timed image): " + ", ".join(f"{k} {v}" for k, v in proposals.items()))
    print(f"stages {len(STAGES)}")


if __name__ == "__main__":
    main()
