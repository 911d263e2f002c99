"""``protoseg build-bank``: the offline stage (FreeDA from captions, DPSM from class names)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress, TaskID

from protoseg.commands.common import (
    DeviceOption,
    RayAddressOption,
    check_device,
    check_positive,
    progress_bar,
    read_classes,
)
from protoseg.commands.verbosity import model_library_output

_STAGES = {"descriptions": "LLM descriptions", "shards": "support images (shards)", "reduce": "writing bank"}


def build_bank_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="bank directory to create")],
    method: Annotated[str | None, typer.Option(
        "--method", help="freeda or dpsm (default: the preset's)")] = None,
    captions: Annotated[Path | None, typer.Option(
        "--captions", help="FreeDA: COCO-Captions JSON or a text file with one caption a line")] = None,
    classes: Annotated[str | None, typer.Option(
        "--classes", help='DPSM: class names, e.g. "cat, dog"')] = None,
    classes_file: Annotated[Path | None, typer.Option(
        "--classes-file", help="DPSM: one class name a line")] = None,
    preset: Annotated[str | None, typer.Option(
        "--preset", "-p", help="build preset: freeda-b, freeda-l, dpsm, freeda-tiny, dpsm-tiny "
                               "(default: freeda-b / dpsm by --method)")] = None,
    work_dir: Annotated[Path | None, typer.Option(
        "--work-dir", help="where shards live (default OUT.partial); rerunning with it resumes")] = None,
    shard_size: Annotated[int, typer.Option("--shard-size", help="captions / support images per shard")] = 16,
    seed: Annotated[int, typer.Option("--seed", help="global seed of the synthesis")] = 0,
    device: DeviceOption = None,
    diffusion_dtype: Annotated[str | None, typer.Option(
        "--diffusion-dtype", help="precision of the diffusion model: float32, float16 or bfloat16 "
                                  "(default: float16 on CUDA, float32 on CPU)")] = None,
    limit: Annotated[int | None, typer.Option(
        "--limit", help="FreeDA: use only the first N captions")] = None,
    llm: Annotated[str | None, typer.Option("--llm", help="DPSM: LLM spec for the descriptions")] = None,
    prompts: Annotated[str | None, typer.Option(
        "--prompts", help="DPSM: llm (descriptions) or naive ('a good photo of a {}')")] = None,
    descriptions: Annotated[Path | None, typer.Option(
        "--descriptions", help="DPSM: editable description cache (default OUT.descriptions.json)")] = None,
    clustering: Annotated[str | None, typer.Option(
        "--clustering", help="DPSM: coarse-fine, plain or none")] = None,
    k: Annotated[int | None, typer.Option("--k", help="DPSM: descriptions per attribute (N = 4K)")] = None,
    kappa: Annotated[int | None, typer.Option("--kappa", help="DPSM: scale-up factor")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="denoising steps")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="images per diffusion batch")] = None,
    ray: Annotated[bool, typer.Option("--ray", help="run the shards as Ray tasks")] = False,
    ray_address: RayAddressOption = None,
    ray_task_threads: Annotated[int | None, typer.Option(
        "--ray-task-threads", help="CPUs (torch threads) per Ray task (default 1)")] = None,
    keep_work_dir: Annotated[bool, typer.Option(
        "--keep-work-dir", help="keep the shards afterwards")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing bank")] = False,
) -> None:
    """Build a prototype bank: FreeDA from captions, DPSM from class names. Interrupted builds resume; a
    rerun after the inputs or settings changed starts fresh."""
    # imported on use, like every command: the CLI starts without loading the library (torch: seconds)
    from protoseg.atomic import check_not_inputs
    from protoseg.bank import load_bank
    from protoseg.config.fields import given
    from protoseg.offline import RunOptions, build_bank, resolve_build_preset, source_record

    chosen = resolve_build_preset(method, preset, **given(prompts=prompts, clustering=clustering, k=k, kappa=kappa,
                                                          steps=steps, batch_size=batch_size))
    class_list = read_classes(classes, classes_file, required=False)
    check_positive(shard_size=shard_size, limit=limit, ray_task_threads=ray_task_threads)
    check_device(device, diffusion_dtype)
    if descriptions is not None and classes_file is not None:
        check_not_inputs([descriptions], [classes_file], "--descriptions")
    source = source_record(chosen.method, captions=captions, limit=limit, llm=llm, descriptions=descriptions,
                           classes=tuple(class_list) if class_list else None)
    run = RunOptions(work_dir=work_dir, shard_size=shard_size, seed=seed, device=device, dtype=diffusion_dtype,
                     ray=ray, ray_address=ray_address, ray_task_threads=ray_task_threads,
                     keep_work_dir=keep_work_dir, overwrite=overwrite)
    model_library_output(diffusion=True)
    console = Console(stderr=True)
    start = time.perf_counter()
    with progress_bar() as bar:
        path = build_bank(chosen, source, out, run, progress=_stage_bars(bar))
    summary = load_bank(path).summary()
    console.print(f"wrote {path}: {summary['prototypes']} prototypes of {summary['classes']} classes "
                  f"({chosen.method}, preset {chosen.name}) in {time.perf_counter() - start:.1f} s; "
                  f"segment with --preset {chosen.segment_preset}")


def _stage_bars(bar: Progress) -> Callable[[str, int, int], None]:
    """``progress(stage, done, total)`` drawing one bar per stage of the build on ``bar``."""
    tasks: dict[str, TaskID] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(_STAGES.get(stage, stage), total=total)
        bar.update(tasks[stage], completed=done, total=total)

    return progress


def register(app: typer.Typer) -> None:
    app.command("build-bank")(build_bank_command)
