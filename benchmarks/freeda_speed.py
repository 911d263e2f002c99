"""Wall time of one FreeDA-B segmentation on this machine, split into model forwards and the rest.

Full-size, randomly initialised DINOv2-B/14 and CLIP ViT-B/16 (compute does not depend on the weight
values) are saved to a folder and loaded through protoseg's adapters; the bank holds random prototypes
with random text keys. The forwards (DINOv2, CLIP image, CLIP text) are timed by wrapping the adapters'
methods; everything else (resize, windows, superpixels, pooling, retrieval, aggregation, stitching) is
"other". A warm-up segmentation runs first; the measured run re-does the per-class-list preparation
(text encoding + retrieval), as a first call on a new class list does.

    python benchmarks/freeda_speed.py [--runs 3] [--model-dir DIR]

The windows go through the models ``--batch-size`` at a time (the matcher's ``batch_size``; superpixels
run on a worker thread meanwhile, so their time overlaps the forwards and is listed for information).
Each run prints the time per part; the last line is::

    total T forwards F other O other_share P

with ``T``, ``F``, ``O`` in seconds (medians over runs of the total, of the forwards, and ``O = T - F``)
and ``P = O / T`` as a fraction (as ``benchmarks/dpsm_speed.py``). Both parts are timed in the same run,
so on a CPU shared with other work the share stays comparable even when the absolute times are not.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


import protoseg.match.freeda as freeda_module  # noqa: E402
from protoseg.bank import PrototypeBank  # noqa: E402
from protoseg.models.clip import FREEDA_TEMPLATES, ClipModel  # noqa: E402
from protoseg.models.dinov2 import Dinov2Features  # noqa: E402
from protoseg.segment import Segmenter  # noqa: E402
from protoseg.testing import clip_tokenizer  # noqa: E402

CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
           "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
           "tvmonitor"]

TIMES: dict[str, float] = defaultdict(float)
FORWARDS = ("dinov2", "clip_image", "clip_text")


def _timed(name: str, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TIMES[name] += time.perf_counter() - start
    return wrapper


def build_models(folder: Path) -> tuple[Path, Path]:
    """Random DINOv2-B/14 and CLIP ViT-B/16 saved with ``save_pretrained`` (skipped when present)."""
    from transformers import CLIPConfig, CLIPModel, Dinov2Config, Dinov2Model

    dinov2_dir, clip_dir = folder / "dinov2-base", folder / "clip-vit-base-patch16"
    torch.manual_seed(0)
    if not (dinov2_dir / "config.json").is_file():
        Dinov2Model(Dinov2Config()).save_pretrained(dinov2_dir)  # defaults = ViT-B/14
    if not (clip_dir / "config.json").is_file():
        words = sorted({w.strip(".") for t in FREEDA_TEMPLATES for w in t.split()} | set(CLASSES))
        tokenizer = clip_tokenizer(words)
        text = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                    num_attention_heads=8, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                    eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                      image_size=224, patch_size=16)
        config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=512)
        CLIPModel(config).save_pretrained(clip_dir)
        tokenizer.save_pretrained(clip_dir)
    return dinov2_dir, clip_dir


def random_bank(dinov2_dir: Path, clip_dir: Path, size: int, seed: int = 0) -> PrototypeBank:
    rng = np.random.default_rng(seed)
    prototypes = rng.normal(size=(size, 768)).astype(np.float16)
    keys = rng.normal(size=(size, 512)).astype(np.float32)
    labels = [f"noun{i % 5000}" for i in range(size)]
    return PrototypeBank.create(prototypes, {"label": labels}, method="freeda",
                                feature_encoder=str(dinov2_dir), keys=keys, text_encoder=str(clip_dir),
                                dtype="float16")


def test_image(height: int = 512, width: int = 683, seed: int = 0) -> np.ndarray:
    """A piecewise-smooth image (random blobs + mild noise), closer to a photo than white noise."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(height // 32 + 1, width // 32 + 1, 3)).astype(np.float32)
    image = coarse.repeat(32, 0).repeat(32, 1)[:height, :width]
    image = gaussian_filter(image, sigma=(6, 6, 0)) + rng.normal(0, 6, size=(height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--bank-size", type=int, default=20000)
    parser.add_argument("--k", type=int, default=350)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--model-dir", type=Path, default=None, help="reuse/keep the random checkpoints here")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--batch-size", type=int, default=None, help="windows per forward (default: the matcher's)")
    parser.add_argument("--profile", type=Path, default=None, help="write cProfile stats of one run here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    Dinov2Features.__call__ = _timed("dinov2", Dinov2Features.__call__)
    ClipModel.encode_images = _timed("clip_image", ClipModel.encode_images)
    ClipModel.encode_text = _timed("clip_text", ClipModel.encode_text)
    # parts of "other", reported for information
    freeda_module.superpixels = _timed("superpixels", freeda_module.superpixels)
    PrototypeBank.retrieve = _timed("retrieval", PrototypeBank.retrieve)

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.model_dir or Path(tmp)
        dinov2_dir, clip_dir = build_models(folder)
        bank = random_bank(dinov2_dir, clip_dir, args.bank_size)
        options = {"k": args.k} | ({"batch_size": args.batch_size} if args.batch_size else {})
        seg = Segmenter.from_preset("freeda-b", bank=bank, device="cpu", features=str(dinov2_dir),
                                    text=str(clip_dir), matcher_options=options)
        image = test_image()
        classes = CLASSES[: args.classes]
        seg.segment(image, classes)  # warm-up (also builds the faiss index)
        totals, forwards = [], []
        for _ in range(args.runs):
            TIMES.clear()
            seg._prepared = None  # measure the text encoding + retrieval too
            start = time.perf_counter()
            if args.profile:
                import cProfile

                cProfile.runctx("seg.segment(image, classes)", globals(), locals(), str(args.profile))
            else:
                seg.segment(image, classes)
            total = time.perf_counter() - start
            totals.append(total)
            forwards.append(sum(TIMES[k] for k in FORWARDS))
            print("run " + " ".join(f"{k} {v:.3f}" for k, v in sorted(TIMES.items()))
                  + f" total {total:.3f}", flush=True)
    total, fwd = statistics.median(totals), statistics.median(forwards)
    print(f"image {image.shape[0]}x{image.shape[1]} classes {len(classes)} bank {args.bank_size} k {args.k} "
          f"threads {torch.get_num_threads()} batch_size {seg.matcher.batch_size}")
    other = total - fwd
    print(f"total {total:.3f} forwards {fwd:.3f} other {other:.3f} other_share {other / total:.3f}")


if __name__ == "__main__":
    main()
