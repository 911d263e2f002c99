"""The examples layout: any labelled image folder, and the generated parts-world benchmark.

Layout (also what ``protoseg.partsworld.write_examples`` writes)::

    ROOT/classes.txt          one class name a line; line i is label value i
    ROOT/images/<stem>.<ext>  png / jpg / jpeg / bmp / tif / webp
    ROOT/masks/<stem>.png     single-channel, pixel = class index, 255 = ignore

If the first class is ``background`` the dataset has a background class (scored, never queried).
"""

from __future__ import annotations

import os
from pathlib import Path

from protoseg.classes import read_class_file
from protoseg.datasets.base import Sample, SegDataset
from protoseg.errors import ProtosegError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
EXAMPLES_LAYOUT = (
    "ROOT/classes.txt (one name a line), ROOT/images/<stem>.<png|jpg>, ROOT/masks/<stem>.png "
    "(pixel = class index, 255 = ignore)"
)

#: Parts-world benchmark: held-out test split and support (bank-building) split.
PARTS_WORLD_TEST = {"split": "test", "count": 60, "seed": 1}
PARTS_WORLD_TRAIN = {"split": "train", "count": 40, "seed": 0}


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


def default_parts_world_root() -> Path:
    """``$PROTOSEG_CACHE/parts-world`` (default ``~/.cache/protoseg/parts-world``)."""
    cache = os.environ.get("PROTOSEG_CACHE") or Path.home() / ".cache" / "protoseg"
    return Path(cache) / "parts-world"


def ensure_parts_world_split(root: Path, split: str, count: int, seed: int) -> Path:
    """``root/<split>``, generated deterministically when it does not exist; returns its path.

    An existing split is read as it is and never regenerated or modified — whoever made it (``protoseg
    partsworld``, an earlier run, the user). A missing one is generated into a temporary sibling folder,
    marked as protoseg's and renamed into place, so an interrupted run leaves nothing half-written.

    Raises:
        ProtosegError: ``root`` or ``root/<split>`` is a file.
    """
    from protoseg.atomic import generated_dir
    from protoseg.partsworld import write_examples

    target = Path(root) / split
    for path in (Path(root), target):
        if path.exists() and not path.is_dir():
            raise ProtosegError(f"parts-world: {path} is a file; give the folder holding train/ and test/")
    if target.exists():
        return target
    generated_dir(target, {"parts-world": split, "count": count, "seed": seed, "size": 448},
                  lambda tmp: write_examples(tmp, count=count, seed=seed))
    return target


def open_parts_world(data_root: str | Path | None = None, split: str = "test") -> SegDataset:
    """The parts-world benchmark split (``"test"`` or ``"train"``), generated on first use."""
    root = Path(data_root).expanduser() if data_root else default_parts_world_root()
    spec = PARTS_WORLD_TEST if split == "test" else PARTS_WORLD_TRAIN
    if split not in ("test", "train"):
        raise ProtosegError(f"parts-world split must be 'test' or 'train', got {split!r}")
    path = ensure_parts_world_split(root, split, int(spec["count"]), int(spec["seed"]))
    return open_examples(path, name="parts-world")
