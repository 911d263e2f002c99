"""Cost of cross-attention capture: plain Stable Diffusion pipeline vs the same call with capture.

Random-init models (speed does not depend on weight values), same prompts, seeds and steps; the
timings alternate plain / capture and report the median of ``--repeats`` runs.

    python benchmarks/attention_overhead.py                 # "small": SD-shaped, 1/5 width, 128x128
    python benchmarks/attention_overhead.py --config sd2 --size 256 --steps 3 --batch 1 --repeats 1

On a machine shared with other jobs, run with ``OMP_NUM_THREADS=1``: oversubscribed torch threads spin
and make timings meaningless.

Prints ``plain <s> capture <s> ratio <x>``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from protoseg.generate.attention import capture_cross_attention, word_token_indices
from protoseg.testing import TINY_WORDS, clip_tokenizer

CONFIGS = {
    # SD 2.x layout with 1/5 of the channels: cross-attention at 4 resolutions, 1-4 heads of 64
    "small": dict(unet=dict(block_out_channels=(64, 128, 256, 256), attention_head_dim=(1, 2, 4, 4),
                            cross_attention_dim=256, norm_num_groups=32),
                  vae=(32, 64, 128, 128), text=dict(hidden_size=256, intermediate_size=1024,
                                                    num_hidden_layers=4, num_attention_heads=4)),
    # Stable Diffusion 2.x base shapes (865M-parameter UNet, OpenCLIP-H text encoder)
    "sd2": dict(unet=dict(block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20),
                          cross_attention_dim=1024, norm_num_groups=32),
                vae=(128, 256, 512, 512), text=dict(hidden_size=1024, intermediate_size=4096,
                                                    num_hidden_layers=23, num_attention_heads=16)),
}


def build(config: str, size: int) -> StableDiffusionPipeline:
    cfg = CONFIGS[config]
    tokenizer = clip_tokenizer(TINY_WORDS)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=size // 8, in_channels=4, out_channels=4, layers_per_block=2, use_linear_projection=True,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, **cfg["unet"])
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                        block_out_channels=cfg["vae"], down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, sample_size=size)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), max_position_embeddings=77,
                                        hidden_act="gelu", bos_token_id=tokenizer.bos_token_id,
                                        eos_token_id=tokenizer.eos_token_id,
                                        pad_token_id=tokenizer.pad_token_id, **cfg["text"]))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="small")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--map-size", type=int, default=None, help="common map resolution (default: latent)")
    args = parser.parse_args()

    pipe = build(args.config, args.size)
    prompts = ["a photo of a cat on the sofa", "a red car parked on the street near a tree",
               "a dog running on the beach", "a man riding a horse in a field"][: args.batch]
    words = [["cat", "sofa"], ["car", "street"], ["dog", "beach"], ["man", "horse"]][: args.batch]
    indices = [[word_token_indices(pipe.tokenizer, p, w) for w in ws]
               for p, ws in zip(prompts, words, strict=True)]
    latent = (args.size // 8, args.size // 8)
    map_size = (args.map_size, args.map_size) if args.map_size else None

    def run() -> None:
        pipe(prompt=prompts, num_inference_steps=args.steps, guidance_scale=7.5, height=args.size,
             width=args.size, generator=[torch.Generator().manual_seed(i) for i in range(len(prompts))],
             output_type="np")

    run()  # warm-up
    plain, capture = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        run()
        plain.append(time.perf_counter() - start)
        start = time.perf_counter()
        with capture_cross_attention(pipe.unet, indices, latent, map_size):
            run()
        capture.append(time.perf_counter() - start)
    p, c = statistics.median(plain), statistics.median(capture)
    print(f"config {args.config} size {args.size} steps {args.steps} batch {args.batch} "
          f"threads {torch.get_num_threads()}")
    print(f"plain {p:.3f} capture {c:.3f} ratio {c / p:.3f}")


if __name__ == "__main__":
    main()
