"""The examples layout: any labelled image folder, and the procedural worlds' splits opened in it.

Layout (also what :func:`protoseg.worlds.files.write_examples` writes)::

    ROOT/classes.txt          one class name a line; line i is label value i
    ROOT/images/<stem>.<ext>  png / jpg / jpeg / bmp / tif / webp
    ROOT/masks/<stem>.png     single-channel, pixel = class index, 255 = ignore

If the first class is ``background`` the dataset has a background class (scored, never queried;
:func:`protoseg.datasets.base.has_background`).
"""

from __future__ import annotations

from pathlib import Path

from protoseg.classes import read_class_file
from protoseg.datasets.base import Sample, SegDataset
from protoseg.errors import ProtosegError
from protoseg.worlds.cache import (
    WORLD_DATASETS,
    WORLD_SPLITS,
    check_world,
    default_parts_world_root,
    ensure_parts_world_split,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
EXAMPLES_LAYOUT = (
    "ROOT/classes.txt (one name a line), ROOT/images/<stem>.<png|jpg>, ROOT/masks/<stem>.png "
    "(pixel = class index, 255 = ignore)"
)

def open_examples(root: str | Path, name: str = "examples") -> SegDataset:
    """Open a folder in the examples layout."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ProtosegError(f"{name}: {root} is not a folder; expected {EXAMPLES_LAYOUT}")
    try:
        classes = tuple(read_class_file(root / "classes.txt", indexed=True))
    except ProtosegError as exc:
        raise ProtosegError(f"{exc}; expected {EXAMPLES_LAYOUT}") from None
    image_dir, mask_dir = root / "images", root / "masks"
    if not image_dir.is_dir():
        raise ProtosegError(f"{name}: folder {image_dir} is missing; expected {EXAMPLES_LAYOUT}")
    images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ProtosegError(f"{name}: no .jpg/.png images (nor .bmp/.tif/.webp) in {image_dir}; "
                            f"expected {EXAMPLES_LAYOUT}")
    if not mask_dir.is_dir():
        raise ProtosegError(f"{name}: folder {mask_dir} is missing; expected {EXAMPLES_LAYOUT}")
    stems = [p.stem for p in images]
    if len(set(stems)) != len(stems):
        raise ProtosegError(f"{name}: two images in {image_dir} share a file stem")
    samples = [Sample(p.stem, p, mask_dir / f"{p.stem}.png") for p in images]
    missing = [s.label for s in samples if not s.label.is_file()]
    if missing:
        raise ProtosegError(
            f"{name}: {len(missing)} masks are missing (e.g. {missing[0]}); expected {EXAMPLES_LAYOUT}"
        )
    return SegDataset(name, classes, samples)


def open_parts_world(data_root: str | Path | None = None, split: str = "test", world: str = "parts"
                     ) -> SegDataset:
    """A split (``"train"``, ``"dev"`` or ``"test"``, :data:`WORLD_SPLITS`) of a procedural world
    (``"parts"`` or ``"recombined"``), generated on first use under ``data_root`` (default
    :func:`~protoseg.worlds.cache.default_parts_world_root`; the renewal policy of
    :mod:`protoseg.worlds.cache`)."""
    check_world(world)
    root = Path(data_root).expanduser() if data_root else default_parts_world_root(world)
    if split not in WORLD_SPLITS[world]:
        raise ProtosegError(f"{WORLD_DATASETS[world]} split must be one of {', '.join(WORLD_SPLITS[world])}, "
                            f"got {split!r}")
    spec = WORLD_SPLITS[world][split]
    path = ensure_parts_world_split(root, split, int(spec["count"]), int(spec["seed"]), world, str(spec["combos"]),
                                    renew=not data_root)
    return open_examples(path, name=WORLD_DATASETS[world])
