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

#: Splits of each procedural world (:data:`protoseg.partsworld.WORLDS`): ``train`` builds the support
#: bank, ``dev`` chooses settings, ``test`` is held out for reporting; each split has its own seeds.
#: The recombined world's ``dev`` and ``test`` scenes recombine parts as ``train`` never does.
WORLD_SPLITS: dict[str, dict[str, dict[str, object]]] = {
    "parts": {
        "train": {"count": 40, "seed": 0, "combos": "support"},
        "dev": {"count": 30, "seed": 2, "combos": "support"},
        "test": {"count": 60, "seed": 1, "combos": "support"},
    },
    "recombined": {
        "train": {"count": 40, "seed": 10, "combos": "support"},
        "dev": {"count": 30, "seed": 12, "combos": "novel"},
        "test": {"count": 60, "seed": 11, "combos": "novel"},
    },
}
#: Dataset name of each world (``protoseg eval --dataset``).
WORLD_DATASETS = {"parts": "parts-world", "recombined": "recombined-world"}
#: Version of the files a world split holds (2: ``objects/`` masks; 3: scene PNGs carry the parts-world
#: text chunk); splits protoseg generated in an older format are regenerated.
WORLD_FORMAT = 3


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


def default_parts_world_root(world: str = "parts") -> Path:
    """``$PROTOSEG_CACHE/<dataset name>`` (default ``~/.cache/protoseg/parts-world`` or
    ``.../recombined-world``)."""
    cache = os.environ.get("PROTOSEG_CACHE") or Path.home() / ".cache" / "protoseg"
    return Path(cache) / WORLD_DATASETS[_check_world(world)]


def _check_world(world: str) -> str:
    if world not in WORLD_SPLITS:
        raise ProtosegError(f"unknown world {world!r}; choose one of: {', '.join(WORLD_SPLITS)}")
    return world


def world_spec(split: str, count: int, seed: int, size: int = 448, world: str = "parts",
               combos: str = "support") -> dict[str, object]:
    """The record a generated world split is marked with (:func:`protoseg.atomic.generated_dir`): a split
    with another record (other settings, or files of an older :data:`WORLD_FORMAT`) is regenerated."""
    spec: dict[str, object] = {"parts-world": split, "count": count, "seed": seed, "size": size}
    if world != "parts":
        spec.update(world=world, combos=combos)
    return spec | {"format": WORLD_FORMAT}


def ensure_parts_world_split(root: Path, split: str, count: int, seed: int, world: str = "parts",
                             combos: str = "support", renew: bool = False) -> Path:
    """``root/<split>`` of ``world``, generated deterministically when it does not exist; returns its path.

    An existing split is read as it is and never regenerated or modified — whoever made it (``protoseg
    partsworld``, an earlier run, the user) — except with ``renew`` (protoseg's own cache folder): then a
    split protoseg generated with other settings or an older file format (:data:`WORLD_FORMAT`) is
    generated again, and one holding files protoseg did not write is refused. A missing split is generated
    into a temporary sibling folder, marked as protoseg's and renamed into place, so an interrupted run
    leaves nothing half-written.

    Raises:
        ProtosegError: ``root`` or ``root/<split>`` is a file, or (``renew``) a generated split now holds
            other files.
    """
    from protoseg.atomic import generated_dir
    from protoseg.partsworld import write_examples

    target = Path(root) / split
    for path in (Path(root), target):
        if path.exists() and not path.is_dir():
            raise ProtosegError(f"parts-world: {path} is a file; give the folder holding train/ and test/")
    if target.exists() and not renew:
        return target
    generated_dir(target, world_spec(split, count, seed, world=world, combos=combos),
                  lambda tmp: write_examples(tmp, count=count, seed=seed, world=world, combos=combos))
    return target


def open_parts_world(data_root: str | Path | None = None, split: str = "test", world: str = "parts"
                     ) -> SegDataset:
    """A split (``"train"``, ``"dev"`` or ``"test"``, :data:`WORLD_SPLITS`) of a procedural world
    (``"parts"`` or ``"recombined"``), generated on first use under ``data_root`` (default
    :func:`default_parts_world_root`)."""
    _check_world(world)
    root = Path(data_root).expanduser() if data_root else default_parts_world_root(world)
    if split not in WORLD_SPLITS[world]:
        raise ProtosegError(f"{WORLD_DATASETS[world]} split must be one of {', '.join(WORLD_SPLITS[world])}, "
                            f"got {split!r}")
    spec = WORLD_SPLITS[world][split]
    path = ensure_parts_world_split(root, split, int(spec["count"]), int(spec["seed"]), world, str(spec["combos"]),
                                    renew=not data_root)
    return open_examples(path, name=WORLD_DATASETS[world])
