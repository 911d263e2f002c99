"""Throughput of SAM's prompt encoder + mask decoder against DINOv2-B's, in one process on this machine.

Full-size random models from their default configs (``SamConfig()`` is SAM-B, ``Dinov2Config()`` DINOv2-B;
compute does not depend on the weight values). The decoder gets a random image embedding ``[1, 256, 64, 64]``
and a batch of ``--points`` single-point prompts (the first points of SAM's 32 x 32 grid, positive labels,
three masks each), as the automatic mask generator feeds it; DINOv2-B gets two 518 x 518 windows.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` — for the decoder always on
``transformers``' own forward (:func:`protoseg.models.sam_decoder.decode_points_hf`), so both decoders are
rated by the same work — and divided by the median wall time of ``--repeats`` runs of the decoder under test
(``--decoder fast``: :func:`~protoseg.models.sam_decoder.prepare_image` + ``decode_points`` per batch;
``--decoder hf``: ``SamModel.forward``). The timings of the decoder and of DINOv2 alternate, so on a shared
machine the ratio stays comparable when absolute numbers do not. ``max_abs_diff`` is the largest absolute
difference of the fast decoder's mask logits and IoU predictions to ``SamModel.forward``'s (0 for ``hf``).

    python benchmarks/sam_decoder.py [--decoder fast|hf] [--points 64] [--repeats 3] [--dtype float32]

Last line: ``decoder_gflop_per_s A dinov2_gflop_per_s B rate_ratio R max_abs_diff D`` (``R = A / B``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import Dinov2Config, Dinov2Model, SamConfig, SamModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from protoseg.models.sam_decoder import DECODERS, decode_points, decode_points_hf, prepare_image  # noqa: E402
from protoseg.proposals.amg import point_grid  # noqa: E402


def count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def seconds(fn: Callable[[], object], device: torch.device) -> float:
    """Wall time of ``fn()``, waiting for the accelerator's queued work."""
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    synchronize()
    start = time.perf_counter()
    fn()
    synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decoder", choices=DECODERS, default="fast")
    parser.add_argument("--points", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    sam = SamModel(SamConfig()).to(device, dtype).eval().requires_grad_(False)
    dinov2 = Dinov2Model(Dinov2Config()).to(device, dtype).eval().requires_grad_(False)
    embedding = torch.randn(1, 256, 64, 64, device=device, dtype=dtype)
    side = sam.config.vision_config.image_size
    points = (point_grid(32)[:args.points] * side)[:, None, :].to(device, dtype)  # [P, 1, 2]
    labels = torch.ones(points.shape[:2], dtype=torch.long, device=device)
    windows = torch.randn(2, 3, 518, 518, device=device, dtype=dtype)

    def hf() -> tuple[torch.Tensor, torch.Tensor]:
        return decode_points_hf(sam, embedding, points, labels)

    def fast() -> tuple[torch.Tensor, torch.Tensor]:
        return decode_points(sam, prepare_image(sam, embedding), points, labels)

    @torch.no_grad()
    def features() -> torch.Tensor:
        return dinov2(pixel_values=windows).last_hidden_state

    decoder = fast if args.decoder == "fast" else hf
    decoder_flops, dinov2_flops = count_flops(hf), count_flops(features)
    reference, ours = hf(), decoder()
    difference = max(float((a.float() - b.float()).abs().max()) for a, b in zip(reference, ours, strict=True))
    decoder_times, dinov2_times = [], []
    for _ in range(args.repeats):
        decoder_times.append(seconds(decoder, device))
        dinov2_times.append(seconds(features, device))
    decoder_time, dinov2_time = statistics.median(decoder_times), statistics.median(dinov2_times)
    a, b = decoder_flops / decoder_time / 1e9, dinov2_flops / dinov2_time / 1e9
    print(f"decoder {args.decoder} ({args.dtype}, {device}, torch threads {torch.get_num_threads()}): "
          f"{args.points} points, {decoder_flops / 1e9:.1f} GFLOP (SamModel.forward), median {decoder_time:.2f} s "
          f"of {[round(t, 2) for t in decoder_times]}")
    print(f"DINOv2-B: 2 windows 518x518, {dinov2_flops / 1e9:.1f} GFLOP, median {dinov2_time:.2f} s of "
          f"{[round(t, 2) for t in dinov2_times]}")
    print(f"decoder_gflop_per_s {a:.1f} dinov2_gflop_per_s {b:.1f} rate_ratio {a / b:.3f} "
          f"max_abs_diff {difference:.3g}")


if __name__ == "__main__":
    main()
