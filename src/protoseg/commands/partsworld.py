"""``protoseg partsworld``: generate the procedural parts world (examples layout)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from protoseg.commands.common import check_positive
from protoseg.errors import ProtosegError

#: Smallest image side the scenes are drawn at.
MIN_SIZE = 32


def partsworld(
    out: Annotated[Path, typer.Argument(help="Folder to write train/ and test/ into.")],
    train: Annotated[int, typer.Option(help="Support images (train/).")] = 24,
    test: Annotated[int, typer.Option(help="Held-out images (test/).")] = 8,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = 448,
    world: Annotated[str, typer.Option(help="parts, or recombined (test scenes recombine parts).")] = "parts",
) -> None:
    """Write procedural scenes with exact masks and object masks: OUT/train and OUT/test in the examples
    layout (plus objects/ for oracle proposals). In the recombined world the test scenes recombine parts
    as the train scenes never do.

    Each split is a folder protoseg marks as generated; rerunning with the same settings leaves it as is,
    with other settings replaces it — unless someone put other files into it (then nothing is touched)."""
    from protoseg.worlds import PARTS_WORLD_CLASSES, WORLDS  # numpy: loaded when the command runs
    from protoseg.worlds.cache import write_world

    if world not in WORLDS:
        raise ProtosegError(f"--world must be one of {', '.join(WORLDS)}; got {world!r}")
    check_positive(train=train, test=test)
    if size < MIN_SIZE:
        raise ProtosegError(f"--size must be at least {MIN_SIZE} pixels, got {size}")
    wrote = write_world(out, train, test, seed, size, world)
    done = "wrote " + " and ".join(wrote) if wrote else "already up to date:"
    typer.echo(f"{done} {train} + {test} {world}-world scenes in {out}; classes: {', '.join(PARTS_WORLD_CLASSES)}")


def register(app: typer.Typer) -> None:
    app.command("partsworld")(partsworld)
