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
) -> None:
    """Write parts-world scenes with exact masks: OUT/train and OUT/test in the examples layout."""
    from protoseg.partsworld import PARTS_WORLD_CLASSES, write_examples

    write_examples(out / "train", train, seed=seed, size=size)
    write_examples(out / "test", test, seed=seed + 1, size=size)
    typer.echo(f"wrote {train} + {test} scenes to {out}; classes: {', '.join(PARTS_WORLD_CLASSES)}")


def register(app: typer.Typer) -> None:
    app.command("partsworld")(partsworld)
