"""The worlds on disk: scenes of a world written in the examples layout, and the object masks read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from protoseg.worlds.canvas import PARTS_WORLD_CLASSES
from protoseg.worlds.mark import scene_info
from protoseg.worlds.parts import render_scene_objects
from protoseg.worlds.recombined import render_recombined_scene

#: world name -> what it exercises.
WORLDS: dict[str, str] = {
    "parts": "classes made of parts; some parts resemble other classes",
    "recombined": "several looks per class, parts recombined (look pairings, proportions) in held-out "
                  "scenes, small look-alike parts inside other classes",
}


def write_examples(root: str | Path, count: int, seed: int = 0, size: int = 448, world: str = "parts",
                   combos: str = "support") -> Path:
    """Write ``count`` scenes of ``world`` (``"parts"`` or ``"recombined"``, whose ``combos`` is
    ``"support"`` or ``"novel"``) in the examples layout and return ``root``::

        root/classes.txt          one class name a line (PARTS_WORLD_CLASSES)
        root/images/<stem>.png    RGB
        root/masks/<stem>.png     uint8, pixel = class index, 255 = ignore
        root/objects/<stem>.png   uint8, pixel = id of its object or stuff region (oracle proposals)

    Scene ``i`` depends only on ``(seed, i)`` (and the world and combos); existing files are rewritten
    identically.
    """
    if world not in WORLDS:
        raise ValueError(f"world must be one of {', '.join(WORLDS)}, got {world!r}")
    root = Path(root)
    for sub in ("images", "masks", "objects"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(PARTS_WORLD_CLASSES) + "\n")
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        if world == "parts":
            image, labels, objects = render_scene_objects(rng, size)
        else:
            image, labels, objects = render_recombined_scene(rng, size, combos)
        stem = f"scene_{i:05d}"
        Image.fromarray(image).save(root / "images" / f"{stem}.png", pnginfo=scene_info(seed, i))
        Image.fromarray(labels).save(root / "masks" / f"{stem}.png")
        Image.fromarray(objects).save(root / "objects" / f"{stem}.png")
    return root


def read_objects(path: str | Path) -> np.ndarray:
    """Oracle proposals from an ``objects/<stem>.png``: bool ``[K, H, W]``, one mask per object id."""
    objects = np.asarray(Image.open(path)).astype(np.int64)
    return objects[None] == np.unique(objects)[:, None, None]
