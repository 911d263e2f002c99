"""COCO-Object ground truth from COCO-Stuff 164k annotations (GroupViT's converter, used by FreeDA).

Raw COCO-Stuff label maps hold COCO category ids minus one (things ``0..90`` with 11 unused ids,
stuff ``91..181``, ``255`` unlabelled). The conversion writes ``<stem>_instanceTrainIds.png`` with

- thing id ``k <= 90`` -> its COCO-Stuff train id (``0..79``) ``+ 1``  (``1..80``);
- stuff ids ``91..181`` **and 255** -> ``0`` (background) — so nothing is ignored;
- any other value is left unchanged (as the reference converter does; such values do not occur).

When only MMSeg's ``*_labelTrainIds.png`` maps are present the same result is obtained from train ids:
``t < 80 -> t + 1``, every other value (stuff ``80..170``, ``255``) -> ``0``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from protoseg.atomic import atomic_path
from protoseg.datasets.base import read_label_png
from protoseg.errors import ProtosegError
from protoseg.runs import Progress

#: COCO ids (minus one) that no category uses.
UNUSED_COCO_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
SUFFIX = "_instanceTrainIds.png"


def coco_id_to_train_id() -> dict[int, int]:
    """The COCO-Stuff ``id -> train id`` map (``0..170``), as MMSeg's COCO-Stuff converter defines it."""
    used = [i for i in range(182) if i not in UNUSED_COCO_IDS]
    return {cid: t for t, cid in enumerate(used)}


def raw_to_object_lut() -> np.ndarray:
    """uint8 ``[256]``: raw COCO-Stuff value -> COCO-Object label."""
    lut = np.arange(256, dtype=np.uint8)
    for cid, train in coco_id_to_train_id().items():
        lut[cid] = train + 1 if cid <= 90 else 0
    lut[255] = 0
    return lut


def train_ids_to_object_lut() -> np.ndarray:
    """uint8 ``[256]``: COCO-Stuff train id -> COCO-Object label."""
    lut = np.zeros(256, dtype=np.uint8)
    lut[:80] = np.arange(1, 81)
    return lut


def _write_png(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def _sources(ann_dir: Path) -> tuple[list[Path], np.ndarray]:
    raw = sorted(p for p in ann_dir.glob("*.png") if "TrainIds" not in p.name)
    if raw:
        return raw, raw_to_object_lut()
    train = sorted(ann_dir.glob("*_labelTrainIds.png"))
    if train:
        return train, train_ids_to_object_lut()
    raise ProtosegError(
        f"no COCO-Stuff label maps in {ann_dir}: expected raw <id>.png maps "
        "(stuffthingmaps_trainval2017) or MMSeg's <id>_labelTrainIds.png"
    )


def convert_coco_object(
    data_root: str | Path,
    splits: tuple[str, ...] = ("val2017",),
    workers: int = 4,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> int:
    """Write ``annotations/<split>/<stem>_instanceTrainIds.png`` for every COCO-Stuff label map.

    Existing outputs newer than their source are kept unless ``overwrite`` (so an interrupted run resumes,
    and a source changed since is converted again). ``progress("convert", done, total)`` is called after
    each file. Returns the number of files written.
    """
    root = Path(data_root).expanduser()
    jobs: list[tuple[Path, Path, np.ndarray]] = []
    for split in splits:
        ann_dir = root / "annotations" / split
        if not ann_dir.is_dir():
            raise ProtosegError(
                f"{ann_dir} is missing; expected COCO-Stuff 164k as "
                "DATA_ROOT/{images,annotations}/<split>/ (MMSeg layout)"
            )
        sources, lut = _sources(ann_dir)
        for src in sources:
            stem = src.name.removesuffix("_labelTrainIds.png").removesuffix(".png")
            out = ann_dir / (stem + SUFFIX)
            if overwrite or not out.exists() or out.stat().st_mtime_ns < src.stat().st_mtime_ns:
                jobs.append((src, out, lut))

    def run(job: tuple[Path, Path, np.ndarray]) -> None:
        src, out, lut = job
        raw = read_label_png(src)
        if raw.dtype != np.uint8:
            raise ProtosegError(f"{src}: expected 8-bit label values, got {raw.dtype}")
        _write_png(lut[raw], out)

    done = 0
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for _ in pool.map(run, jobs):
            done += 1
            if progress:
                progress("convert", done, len(jobs))
    return done
