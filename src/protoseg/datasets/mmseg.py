"""The eight benchmarks in MMSegmentation's folder layout (as its data-preparation tools produce them).

``--data-root`` is the folder MMSeg's configs call ``data_root`` (e.g. ``data/ade/ADEChallengeData2016``);
the usual parent folders are also accepted (``data/``, ``data/ade``, ``VOCdevkit``), see ``ROOT_HINTS``.

=============  ==========================================================  ===============================
dataset        images / labels (relative to the root)                      label rule
=============  ==========================================================  ===============================
voc20          VOC2012 JPEGImages/*.jpg, SegmentationClass/*.png,          reduce_zero_label (bg ignored)
               split ImageSets/Segmentation/val.txt
voc            same                                                        raw, 0 = background, 255 ignore
context59      VOC2010 JPEGImages, SegmentationClassContext,               reduce_zero_label
               split ImageSets/SegmentationContext/val.txt
context60      same                                                        raw, 0 = background
coco-stuff     images/val2017/*.jpg, annotations/val2017/*_labelTrainIds.png  raw, 255 ignore
coco-object    images/val2017/*.jpg, annotations/val2017/*_instanceTrainIds.png  raw, 0 = background
cityscapes     leftImg8bit/val/<city>/*_leftImg8bit.png,                   raw, 255 ignore
               gtFine/val/<city>/*_gtFine_labelTrainIds.png
ade20k         images/validation/*.jpg, annotations/validation/*.png       reduce_zero_label
=============  ==========================================================  ===============================
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from protoseg.datasets import names
from protoseg.datasets.base import Sample, SegDataset
from protoseg.errors import ProtosegError


@dataclass(frozen=True)
class Layout:
    """Where an MMSeg dataset keeps its files.

    Attributes:
        img_dir, ann_dir: folders relative to the data root.
        img_suffix, seg_suffix: file-name endings (the stem is the name without ``img_suffix``).
        split: split file relative to the root (one stem per line), or ``None`` to scan ``img_dir``
            recursively (sorted by relative path, as MMSeg does).
        root_hints: sub-paths of ``--data-root`` tried in order to find the real root.
        prepare: how to obtain the layout (shown when it is missing).
    """

    img_dir: str
    ann_dir: str
    img_suffix: str
    seg_suffix: str
    split: str | None
    root_hints: tuple[str, ...]
    prepare: str


@dataclass(frozen=True)
class MMSegSpec:
    """One benchmark: class list, label rule and layout."""

    name: str
    classes: tuple[str, ...]
    reduce_zero_label: bool
    layout: Layout
    title: str


_VOC = Layout(
    "JPEGImages",
    "SegmentationClass",
    ".jpg",
    ".png",
    "ImageSets/Segmentation/val.txt",
    ("", "VOC2012", "VOCdevkit/VOC2012"),
    "the VOC2012 devkit (VOCtrainval_11-May-2012.tar)",
)
_CONTEXT = Layout(
    "JPEGImages",
    "SegmentationClassContext",
    ".jpg",
    ".png",
    "ImageSets/SegmentationContext/val.txt",
    ("", "VOC2010", "VOCdevkit/VOC2010"),
    "VOC2010 + MMSeg's tools/convert_datasets/pascal_context.py",
)
_STUFF = Layout(
    "images/val2017",
    "annotations/val2017",
    ".jpg",
    "_labelTrainIds.png",
    None,
    ("", "coco_stuff164k"),
    "MMSeg's tools/convert_datasets/coco_stuff164k.py",
)
_OBJECT = Layout(
    "images/val2017",
    "annotations/val2017",
    ".jpg",
    "_instanceTrainIds.png",
    None,
    ("", "coco_stuff164k"),
    "COCO-Stuff 164k, then `protoseg convert-coco-object --data-root DIR`",
)
_CITY = Layout(
    "leftImg8bit/val",
    "gtFine/val",
    "_leftImg8bit.png",
    "_gtFine_labelTrainIds.png",
    None,
    ("", "cityscapes"),
    "MMSeg's tools/convert_datasets/cityscapes.py",
)
_ADE = Layout(
    "images/validation",
    "annotations/validation",
    ".jpg",
    ".png",
    None,
    ("", "ADEChallengeData2016", "ade/ADEChallengeData2016"),
    "ADEChallengeData2016.zip",
)

MMSEG_DATASETS: dict[str, MMSegSpec] = {
    "voc20": MMSegSpec("voc20", names.VOC20_CLASSES, True, _VOC, "Pascal VOC 2012 val, 20 classes"),
    "voc": MMSegSpec("voc", names.VOC_CLASSES, False, _VOC, "Pascal VOC 2012 val, 20 classes + background"),
    "context59": MMSegSpec(
        "context59", names.CONTEXT59_CLASSES, True, _CONTEXT, "Pascal Context val, 59 classes"
    ),
    "context60": MMSegSpec(
        "context60", names.CONTEXT60_CLASSES, False, _CONTEXT, "Pascal Context val, 59 classes + background"
    ),
    "coco-stuff": MMSegSpec(
        "coco-stuff", names.COCO_STUFF_CLASSES, False, _STUFF, "COCO-Stuff 164k val, 171"
    ),
    "coco-object": MMSegSpec(
        "coco-object", names.COCO_OBJECT_CLASSES, False, _OBJECT, "COCO-Object val, 80 classes + background"
    ),
    "cityscapes": MMSegSpec(
        "cityscapes", names.CITYSCAPES_CLASSES, False, _CITY, "Cityscapes val, 19 classes"
    ),
    "ade20k": MMSegSpec("ade20k", names.ADE20K_CLASSES, True, _ADE, "ADE20K val, 150 classes"),
}


def expected_layout(spec: MMSegSpec) -> str:
    """A human-readable description of the folders ``spec`` needs."""
    lay = spec.layout
    parts = [f"{lay.img_dir}/<stem>{lay.img_suffix}", f"{lay.ann_dir}/<stem>{lay.seg_suffix}"]
    if lay.split:
        parts.append(f"{lay.split} (one stem per line)")
    return f"DATA_ROOT/{{{', '.join(parts)}}}; obtain it with {lay.prepare}"


def find_root(spec: MMSegSpec, data_root: str | Path) -> Path:
    """The folder holding ``spec``'s layout: ``data_root`` or one of its ``root_hints`` sub-folders."""
    data_root = Path(data_root).expanduser()
    if not data_root.is_dir():
        raise ProtosegError(
            f"{spec.name}: data root {data_root} is not a folder; expected {expected_layout(spec)}"
        )
    for hint in spec.layout.root_hints:
        root = data_root / hint if hint else data_root
        if (root / spec.layout.img_dir).is_dir():
            return root
    tried = ", ".join(str(data_root / h) if h else str(data_root) for h in spec.layout.root_hints)
    raise ProtosegError(
        f"{spec.name}: no {spec.layout.img_dir}/ folder under {tried}; expected {expected_layout(spec)}"
    )


def _list_samples(spec: MMSegSpec, root: Path) -> list[Sample]:
    lay = spec.layout
    img_dir, ann_dir = root / lay.img_dir, root / lay.ann_dir
    if not ann_dir.is_dir():
        hint = ""
        if spec.name == "coco-object":
            hint = (
                " (create the _instanceTrainIds.png maps with `protoseg convert-coco-object --data-root DIR`)"
            )
        raise ProtosegError(
            f"{spec.name}: label folder {ann_dir} is missing{hint}; expected {expected_layout(spec)}"
        )
    samples: list[Sample] = []
    if lay.split:
        split = root / lay.split
        if not split.is_file():
            raise ProtosegError(
                f"{spec.name}: split file {split} is missing; expected {expected_layout(spec)}"
            )
        for line in split.read_text().splitlines():
            name = line.strip()
            if name:
                samples.append(
                    Sample(
                        Path(name).name, img_dir / (name + lay.img_suffix), ann_dir / (name + lay.seg_suffix)
                    )
                )
    else:
        for image in sorted(
            img_dir.rglob("*" + lay.img_suffix), key=lambda p: p.relative_to(img_dir).as_posix()
        ):
            rel = image.relative_to(img_dir).as_posix()[: -len(lay.img_suffix)]
            samples.append(Sample(image.stem, image, ann_dir / (rel + lay.seg_suffix)))
    if not samples:
        raise ProtosegError(
            f"{spec.name}: no images matching *{lay.img_suffix} in {img_dir}; "
            f"expected {expected_layout(spec)}"
        )
    missing_img = [s.image for s in samples if not s.image.is_file()]
    missing_ann = [s.label for s in samples if not s.label.is_file()]
    for what, missing in (("images", missing_img), ("label maps", missing_ann)):
        if missing:
            shown = ", ".join(str(p) for p in missing[:3])
            raise ProtosegError(
                f"{spec.name}: {len(missing)} of {len(samples)} {what} are missing (e.g. {shown}); "
                f"expected {expected_layout(spec)}"
            )
    stems = [s.stem for s in samples]
    if len(set(stems)) != len(stems):
        raise ProtosegError(f"{spec.name}: image file stems under {img_dir} are not unique")
    return samples


def open_mmseg(name: str, data_root: str | Path) -> SegDataset:
    """Open benchmark ``name`` (a key of :data:`MMSEG_DATASETS`) under ``data_root``."""
    spec = MMSEG_DATASETS[name]
    root = find_root(spec, data_root)
    return SegDataset(spec.name, spec.classes, _list_samples(spec, root), spec.reduce_zero_label)
