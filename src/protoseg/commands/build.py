"""``protoseg build-bank``: the offline stage (FreeDA from captions, DPSM from class names)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from protoseg.commands.common import check_device, check_positive, progress_bar, quiet_model_loading, read_classes
from protoseg.errors import ProtosegError

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
    device: Annotated[str | None, typer.Option("--device", help="cuda, cuda:1, cpu (default: auto)")] = None,
    dtype: Annotated[str | None, typer.Option(
        "--dtype", help="diffusion dtype (default: float16 on CUDA, float32 on CPU)")] = None,
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
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", help="Ray cluster address (default: a running cluster or a local Ray)")] = None,
    ray_task_threads: Annotated[int | None, typer.Option(
        "--ray-task-threads", help="CPUs (torch threads) per Ray task (default 1)")] = None,
    keep_work_dir: Annotated[bool, typer.Option(
        "--keep-work-dir", help="keep the shards afterwards")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing bank")] = False,
) -> None:
    """Build a prototype bank: FreeDA from captions, DPSM from class names. Interrupted builds resume; a
    rerun after the inputs or settings changed starts fresh."""
    from protoseg.bank.storage import check_bank_out
    from protoseg.config.fields import given
    from protoseg.offline import BuildSource, RunOptions, build_bank, default_work_dir, get_build_preset
    from protoseg.runs import check_work_dir

    if preset is None:
        if method is None:
            raise ProtosegError("pass --method freeda|dpsm or --preset NAME")
        preset = {"freeda": "freeda-b", "dpsm": "dpsm"}.get(method)
        if preset is None:
            raise ProtosegError(f"unknown method {method!r}; use freeda or dpsm")
    chosen = get_build_preset(preset, **given(prompts=prompts, clustering=clustering, k=k, kappa=kappa,
                                              steps=steps, batch_size=batch_size))
    if method is not None and method != chosen.method:
        raise ProtosegError(f"preset {chosen.name!r} builds a {chosen.method} bank, not {method}")
    class_list = read_classes(classes, classes_file, required=False)
    # Everything the user controls is checked before a model loads.
    check_positive(shard_size=shard_size, limit=limit, ray_task_threads=ray_task_threads)
    check_device(device, dtype)
    check_bank_out(out, overwrite)
    check_work_dir(work_dir or default_work_dir(out), what="build")
    if chosen.method == "freeda" and captions is not None and not captions.is_file():
        raise ProtosegError(f"captions file not found: {captions}")
    if descriptions is not None:
        from protoseg.atomic import check_not_inputs, check_output_file

        check_output_file(descriptions, "--descriptions")
        check_not_inputs([descriptions], [p for p in (captions, classes_file) if p is not None], "--descriptions")
    source = BuildSource(captions=captions, limit=limit, classes=tuple(class_list) if class_list else None,
                         llm=llm, descriptions=descriptions)
    run = RunOptions(work_dir=work_dir, shard_size=shard_size, seed=seed, device=device, dtype=dtype, ray=ray,
                     ray_address=ray_address, ray_task_threads=ray_task_threads, keep_work_dir=keep_work_dir,
                     overwrite=overwrite)
    quiet_model_loading(diffusion=True)
    console = Console(stderr=True)
    start = time.perf_counter()
    with progress_bar(console) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(_STAGES.get(stage, stage), total=total)
            bar.update(tasks[stage], completed=done, total=total)

        path = build_bank(chosen, source, out, run, progress=progress)
    from protoseg.bank import PrototypeBank

    summary = PrototypeBank.load(path).summary()
    console.print(f"wrote {path}: {summary['prototypes']} prototypes of {summary['classes']} classes "
                  f"({chosen.method}, preset {chosen.name}) in {time.perf_counter() - start:.1f} s; "
                  f"segment with --preset {chosen.segment_preset}")


def register(app: typer.Typer) -> None:
    app.command("build-bank")(build_bank_command)
