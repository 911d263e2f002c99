"""Per-image CPU time of ``--preset dpsm`` with full-size random-initialised SAM-B and DINOv2-B.

Both models are built from their default configs (``SamConfig()`` is the ViT-B SAM; ``Dinov2Config()``
is DINOv2-B), saved with ``save_pretrained`` into a temporary folder and loaded back through protoseg's
adapters, so the measured path is the real one; compute does not depend on weight values.

A random SAM's masks are meaningless: its predicted IoUs and stability scores are noise, so with the
usual thresholds (0.88 / 0.95) few or no masks survive. The benchmark therefore relaxes both thresholds
to 0 by default (``--pred-iou-thresh`` / ``--stability-thresh`` restore them) so that NMS, sub-regions and
transport see a realistic number of proposals; the number of proposals is printed.

The bank is random at paper scale by default (ADE20K: 150 classes x 64 coarse clusters x 8 fused parts =
76,800 part prototypes). The image is a 448 x 672 parts-world scene: two sliding windows (``--windows 1``:
448 x 448). SAM runs once per image (``sam_scope="image"``; ``--sam-scope window`` for once per window).

SAM's prompt encoder + mask decoder run as ``--decoder fast`` (default: per-point work only, see
:mod:`protoseg.models.sam_decoder`) or ``--decoder hf`` (``SamModel.forward``).

Printed: model forwards (SAM image encoder, SAM prompt encoder + mask decoder over the point grid, DINOv2)
and the rest (mask upscaling, filtering, NMS, superpixels, sub-regions, transport, composition); the SAM
encoder passes; the peak resident memory of the process; last line
``total T forwards F other O other_share P`` (seconds; P = O / T).

Usage: ``python benchmarks/dpsm_speed.py [--classes 150 --clusters 64 --parts 8 --windows 2 --repeats 1
--sam-scope image --points-per-side 32 --filter-resolution low --dtype float32 --decoder fast]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import functools  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import protoseg.match.dpsm.matcher as dpsm_module  # noqa: E402
from protoseg.bank import PrototypeBank  # noqa: E402
from protoseg.config.segment import get_preset  # noqa: E402
from protoseg.match.dpsm import modes as dpsm_modes  # noqa: E402
from protoseg.models import ModelSet  # noqa: E402
from protoseg.models.sam import keep_freed_memory  # noqa: E402
from protoseg.models.sam_decoder import DECODERS  # noqa: E402
from protoseg.segment import Segmenter  # noqa: E402
from protoseg.worlds import render_scene  # noqa: E402

TIMES: dict[str, float] = {}


def timed(name: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        TIMES[name] = TIMES.get(name, 0.0) + time.perf_counter() - t0
        return out

    return wrapper


def save_models(folder: Path) -> tuple[Path, Path]:
    from transformers import Dinov2Config, Dinov2Model, SamConfig, SamModel, SamProcessor
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    torch.manual_seed(0)
    sam_dir, dino_dir = folder / "sam-vit-base", folder / "dinov2-base"
    SamModel(SamConfig()).save_pretrained(sam_dir)
    SamProcessor(image_processor=SamImageProcessorPil()).save_pretrained(sam_dir)
    Dinov2Model(Dinov2Config()).save_pretrained(dino_dir)
    try:
        from transformers import BitImageProcessor

        BitImageProcessor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}, do_center_crop=True,
                          image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(dino_dir)
    except ImportError:  # the adapter does not need it
        pass
    return sam_dir, dino_dir


def random_bank(encoder: str, dim: int, classes: int, clusters: int, parts: int, seed: int = 0) -> PrototypeBank:
    rng = np.random.default_rng(seed)
    per_class = clusters * parts
    vectors = rng.standard_normal((classes * (per_class + clusters), dim)).astype(np.float32)
    table = {"label": [], "level": [], "image_id": [], "part_id": [], "supply": [], "coarse_cluster": []}
    for c in range(classes):
        for k in range(clusters):
            for level, count in (("whole", 1), ("part", parts)):
                for f in range(count):
                    table["label"].append(f"class{c}")
                    table["level"].append(level)
                    table["image_id"].append(c * clusters + k)
                    table["part_id"].append(f if level == "part" else -1)
                    table["supply"].append(float(rng.random() + 0.1) if level == "part" else 0.0)
                    table["coarse_cluster"].append(k)
    return PrototypeBank.create(vectors, table, method="random", feature_encoder=encoder, dtype="float16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=150)
    parser.add_argument("--clusters", type=int, default=64)
    parser.add_argument("--parts", type=int, default=8)
    parser.add_argument("--pred-iou-thresh", type=float, default=0.0)
    parser.add_argument("--stability-thresh", type=float, default=0.0)
    parser.add_argument("--box-nms-thresh", type=float, default=0.7)
    parser.add_argument("--max-proposals", type=int, default=None,
                        help="keep at most this many SAM proposals (best predicted IoU first)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--windows", type=int, choices=(1, 2), default=2)
    parser.add_argument("--sam-scope", choices=("image", "window"), default="image")
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--filter-resolution", choices=("low", "full"), default="low")
    parser.add_argument("--prune-keep", type=float, default=None, help="default: the matcher's")
    parser.add_argument("--dtype", default="float32", help="float32 or bfloat16 (both models)")
    parser.add_argument("--decoder", choices=DECODERS, default="fast", help="SAM prompt encoder + mask decoder")
    parser.add_argument("--no-keep-freed-memory", action="store_true",
                        help="leave glibc's allocator settings alone")
    parser.add_argument("--model-dir", type=Path, default=None)
    args = parser.parse_args()
    if not args.no_keep_freed_memory:
        keep_freed_memory()
    folder = args.model_dir or Path(tempfile.mkdtemp(prefix="dpsm-speed-"))
    if not (folder / "sam-vit-base" / "config.json").is_file():
        save_models(folder)
    sam_dir, dino_dir = folder / "sam-vit-base", folder / "dinov2-base"
    options = {"max_proposals": args.max_proposals, "sam_scope": args.sam_scope,
               "sam_options": {"pred_iou_thresh": args.pred_iou_thresh,
                               "stability_score_thresh": args.stability_thresh,
                               "box_nms_thresh": args.box_nms_thresh, "points_per_side": args.points_per_side,
                               "filter_resolution": args.filter_resolution}}
    if args.prune_keep is not None:
        options["prune_keep"] = args.prune_keep
    preset = get_preset("dpsm", features=str(dino_dir), sam=str(sam_dir), matcher_options=options)
    models = ModelSet(preset.features, None, preset.sam, device="cpu", dtype=args.dtype)
    features = models.features
    bank = random_bank(features.encoder_id, features.dim, args.classes, args.clusters, args.parts)
    seg = Segmenter(preset, bank, models)
    sam = models.sam
    sam.decoder = args.decoder
    passes = [0]
    encode = timed("SAM image encoder", sam.model.get_image_embeddings)

    def counted(*a, **k):
        passes[0] += 1
        return encode(*a, **k)

    sam.model.get_image_embeddings = counted
    sam.decode = timed("SAM prompt encoder + mask decoder", sam.decode)
    features.__class__.__call__ = timed("DINOv2", features.__class__.__call__)
    proposals = []
    dpsm_module.generate_masks = (lambda f: functools.wraps(f)(lambda *a, **k: proposals.append(
        len((r := f(*a, **k))[0])) or r))(dpsm_module.generate_masks)
    dpsm_modes.MODES["subregion-ot"] = timed("transport (rest)", dpsm_modes.MODES["subregion-ot"])
    seg.matcher.subregions = timed("sub-regions (rest)", seg.matcher.subregions)
    matched = []
    seg.matcher.proposal_scores = (lambda f: lambda sub: matched.append(len(sub.masks)) or f(sub))(
        seg.matcher.proposal_scores)
    classes = [f"class{c}" for c in range(args.classes)]
    width = 448 if args.windows == 1 else 672
    image = render_scene(np.random.default_rng(0), width)[0][:448]
    seg.prepare(classes)
    print(f"SAM-B (random, SamConfig()) + DINOv2-B (random, Dinov2Config()) from {folder}; bank "
          f"{args.classes} classes x {args.clusters} clusters x {args.parts} parts = "
          f"{int((bank.table['level'] == 'part').sum())} part prototypes; image 448x{width} ({args.windows} "
          f"window{'s' if args.windows > 1 else ''}); sam_scope {args.sam_scope}; {args.points_per_side}x"
          f"{args.points_per_side} points; filtering at {args.filter_resolution} resolution; dtype {args.dtype}; "
          f"{args.decoder} decoder; prune_keep {seg.matcher.options.prune_keep}; "
          f"torch threads {torch.get_num_threads()}; SAM thresholds iou {args.pred_iou_thresh} "
          f"stability {args.stability_thresh}")
    totals = []
    for _ in range(args.repeats):
        TIMES.clear()
        passes[0] = 0
        proposals.clear()
        matched.clear()
        t0 = time.perf_counter()
        seg.segment(image, classes)
        totals.append(time.perf_counter() - t0)
    total = totals[-1]
    forwards = sum(v for k, v in TIMES.items() if "(rest)" not in k)
    for name, value in TIMES.items():
        print(f"  {name}: {value:.2f} s")
    print(f"SAM proposals after NMS per SAM run: {proposals}; matched proposals per window incl. fallback "
          f"(uncovered parts of superpixels): {matched}; transport problems not converged: "
          f"{seg.matcher.stats['transport_not_converged']}/{seg.matcher.stats['transport_problems']}")
    print(f"sam_encoder_passes {passes[0]}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)
    print(f"peak_memory_gib {peak:.2f}")
    other = total - forwards
    print(f"total {total:.2f} forwards {forwards:.2f} other {other:.2f} other_share {other / total:.3f}")


if __name__ == "__main__":
    main()
