"""``protoseg partsworld``: generate the procedural parts world (examples layout)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def partsworld(
    out: Annotated[Path, typer.Argument(help="Folder to write train/ and test/ into.")],
    train: Annotated[int, typer.Option(help="Support images (train/).")] = 24,
    test: Annotated[int, typer.Option(help="Held-out images (test/).")] = 8,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = 448,
    world: Annotated[str, typer.Option(help="parts, or recombined (test scenes recombine parts).")] = "parts",
) -> None:
    """Write procedural scenes with exact masks and object masks: OUT/train and OUT/test in the examples
    layout (plus objects/ for oracle proposals)."""
    from protoseg.errors import ProtosegError
    from protoseg.partsworld import PARTS_WORLD_CLASSES, WORLDS, write_examples

    if world not in WORLDS:
        raise ProtosegError(f"--world must be one of {', '.join(WORLDS)}; got {world!r}")
    write_examples(out / "train", train, seed=seed, size=size, world=world, combos="support")
    write_examples(out / "test", test, seed=seed + 1, size=size, world=world,
                   combos="novel" if world == "recombined" else "support")
    typer.echo(f"wrote {train} + {test} {world}-world scenes to {out}; classes: {', '.join(PARTS_WORLD_CLASSES)}")


def register(app: typer.Typer) -> None:
    app.command("partsworld")(partsworld)
