"""Where the procedural worlds live when nobody named a folder, and when protoseg generates them again.

Each world has three splits with their own seeds (:data:`WORLD_SPLITS`). A split is generated on first use
into protoseg's cache folder (``$PROTOSEG_CACHE``, default ``~/.cache/protoseg``) and marked as protoseg's
with the record of its settings (:func:`world_spec`). The renewal policy:

- a folder the user named is read as it is, never regenerated or modified;
- in protoseg's cache folder, a split generated with other settings or an older file format
  (:data:`WORLD_FORMAT`) is generated again, and one holding files protoseg did not write is refused;
- support banks built from a train split are cached beside the worlds, named by the preset and the split's
  contents (:func:`support_bank_folder`), so a changed split gets a new bank.

:func:`write_world` writes a world where the user says (``protoseg partsworld``) under the same marks: a
rerun with the same settings leaves a split as it is, other settings replace it, and a split someone put
other files into is never touched.
"""

from __future__ import annotations

import os
from pathlib import Path

from protoseg.atomic import check_generated_dir, check_output_dir, generated_dir
from protoseg.errors import ProtosegError
from protoseg.runs import files_digest
from protoseg.worlds.files import write_examples

#: Splits of each procedural world (:data:`protoseg.worlds.files.WORLDS`): ``train`` builds the support
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


def check_world(world: str) -> str:
    """``world`` if it is a key of :data:`WORLD_SPLITS`.

    Raises:
        ProtosegError: an unknown world.
    """
    if world not in WORLD_SPLITS:
        raise ProtosegError(f"unknown world {world!r}; choose one of: {', '.join(WORLD_SPLITS)}")
    return world


def default_parts_world_root(world: str = "parts") -> Path:
    """``$PROTOSEG_CACHE/<dataset name>`` (default ``~/.cache/protoseg/parts-world`` or
    ``.../recombined-world``)."""
    cache = os.environ.get("PROTOSEG_CACHE") or Path.home() / ".cache" / "protoseg"
    return Path(cache) / WORLD_DATASETS[check_world(world)]


def support_bank_folder(preset_name: str, train: Path) -> Path:
    """The cached support bank of ``preset_name`` built from the train split at ``train``: named by the
    preset and the split's contents (file sizes and modification times)."""
    digest = files_digest(sorted(p for p in train.rglob("*") if p.is_file()))[:16]
    return default_parts_world_root().parent / "support-banks" / f"{preset_name}-{digest}"


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
    target = Path(root) / split
    for path in (Path(root), target):
        if path.exists() and not path.is_dir():
            raise ProtosegError(f"parts-world: {path} is a file; give the folder holding train/ and test/")
    if target.exists() and not renew:
        return target
    generated_dir(target, world_spec(split, count, seed, world=world, combos=combos),
                  lambda tmp: write_examples(tmp, count=count, seed=seed, world=world, combos=combos))
    return target


def write_world(out: Path, train: int = 24, test: int = 8, seed: int = 0, size: int = 448,
                world: str = "parts") -> list[str]:
    """Write ``out/train`` (``train`` support scenes, ``seed``) and ``out/test`` (``test`` held-out scenes,
    ``seed + 1``) of ``world`` in the examples layout, with object masks; returns the splits written (a split
    already generated with the same settings is left as it is). In the recombined world the test scenes
    recombine parts as the train scenes never do.

    Raises:
        ProtosegError: ``out`` cannot hold folders, or a split holds files protoseg did not write (checked
            for both splits before anything is written).
    """
    check_output_dir(out, "OUT")
    combos = {"train": "support", "test": "novel" if world == "recombined" else "support"}
    splits = {"train": (train, seed), "test": (test, seed + 1)}
    specs = {name: world_spec(name, n, s, size, world, combos[name]) for name, (n, s) in splits.items()}
    for name in splits:  # refuse before writing anything
        check_generated_dir(out / name, specs[name])
    wrote = []
    for name, (count, split_seed) in splits.items():
        if generated_dir(out / name, specs[name],
                         lambda tmp, name=name, count=count, split_seed=split_seed: write_examples(
                             tmp, count, seed=split_seed, size=size, world=world, combos=combos[name])):
            wrote.append(name)
    return wrote
