"""Banks from labelled examples: a few annotated images instead of a diffusion model.

Layout of an examples folder::

    EXAMPLES/classes.txt          one class name a line (line i -> mask value i)
    EXAMPLES/images/<stem>.jpg|png
    EXAMPLES/masks/<stem>.png     uint8, pixel = class index, 255 = ignore

Each image is processed exactly as test images are (keep-ratio resize to short side 448, sliding
windows 448 / 224), so prototypes and queries see the same views. For every window and every class
present in it, one whole-level row (features pooled on the class mask) and part-level rows
(superpixel ∩ class mask, DPSM eq. 3) with supply units (eq. 7) are written. With a CLIP model, every
row also gets its class's text key (the 7-template class embedding), so FreeDA-style retrieval works.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from protoseg.bank.storage import PrototypeBank
from protoseg.classes import validate_classes
from protoseg.datasets.base import Sample, read_label_png
from protoseg.datasets.examples import open_examples
from protoseg.errors import ProtosegError
from protoseg.images import load_image
from protoseg.models.base import DenseFeatureExtractor
from protoseg.offline.parts import object_prototypes, supply_units
from protoseg.regions import SuperpixelParams, superpixels
from protoseg.windows import rescale_size, resize_image, window_grid

IGNORE = 255


def read_examples(root: str | Path) -> tuple[list[str], list[Sample]]:
    """Validate an examples folder (:func:`protoseg.datasets.examples.open_examples`); return
    ``(classes, samples)`` sorted by stem (``sample.label`` is the mask).

    Raises:
        ProtosegError: the layout is wrong (message shows the expected layout).
    """
    data = open_examples(root)
    classes = validate_classes(list(data.classes))
    if len(classes) > IGNORE:
        raise ProtosegError(f"{root}/classes.txt lists {len(classes)} classes; masks hold at most {IGNORE}")
    return classes, data.samples


def load_mask(path: Path, shape: tuple[int, int], num_classes: int) -> np.ndarray:
    """Read a label mask ``uint8 [H, W]`` and check it against the image size and class count."""
    mask = read_label_png(path).astype(np.int64)
    if mask.shape != shape:
        raise ProtosegError(f"mask {path} is {mask.shape[1]}x{mask.shape[0]} but its image is "
                            f"{shape[1]}x{shape[0]}")
    bad = np.unique(mask[(mask != IGNORE) & ((mask < 0) | (mask >= num_classes))])
    if bad.size:
        raise ProtosegError(f"mask {path} has values {bad.tolist()[:5]} outside 0..{num_classes - 1} and 255")
    return mask.astype(np.uint8)


def _nearest_resize(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(mask).resize((size[1], size[0]), Image.NEAREST))


@torch.no_grad()
def bank_from_examples(root: str | Path, features: DenseFeatureExtractor, *,
                       params: SuperpixelParams = SuperpixelParams(), pooling: str = "area",
                       text_model=None, scale: tuple[int, int] = (2048, 448), crop: int = 448,
                       stride: int = 224, min_pixels: int = 64, dtype: str = "float16",
                       progress: Callable[[int, int], None] | None = None) -> PrototypeBank:
    """Build a bank from a labelled examples folder (module docstring).

    Args:
        features: dense feature backend (its ``encoder_id`` is recorded in the bank).
        text_model: optional CLIP adapter; when given, rows get class text keys.
        min_pixels: a class needs this many pixels in a window to yield prototypes.
        progress: called with ``(done, total)`` after each image.
    """
    classes, examples = read_examples(root)
    rows: list[dict] = []  # one per (window, class) support view
    for n, ex in enumerate(examples):
        image = load_image(ex.image)
        mask = load_mask(ex.label, image.shape[:2], len(classes))
        size = rescale_size(*image.shape[:2], scale)
        resized = resize_image(image, size)
        mask_r = _nearest_resize(mask, size)
        for y1, y2, x1, x2 in window_grid(*size, crop, stride):
            crop_t = resized[:, y1:y2, x1:x2]
            crop_np = crop_t.permute(1, 2, 0).byte().numpy()
            crop_mask = mask_r[y1:y2, x1:x2]
            present = [c for c in np.unique(crop_mask) if c != IGNORE and (crop_mask == c).sum() >= min_pixels]
            if not present:
                continue
            feats = features(crop_t[None].to(features.device))[0].float()
            objects = np.where(np.isin(crop_mask, present), crop_mask, IGNORE)
            found = object_prototypes(feats, objects, superpixels(crop_np, params), pooling, ignore=IGNORE)
            for c, protos in sorted(found.items()):
                if len(protos.parts):
                    rows.append({"class": c, "stem": ex.stem, "protos": protos})
        if progress is not None:
            progress(n + 1, len(examples))
    if not rows:
        raise ProtosegError(f"no class in {root} covers {min_pixels}+ pixels of any image; nothing to build")
    views_per_class = np.bincount([r["class"] for r in rows], minlength=len(classes))
    vectors, table = [], {k: [] for k in ("label", "text", "image_id", "part_id", "level", "area", "supply")}

    def add(vec, label, stem, image_id, part_id, level, area, supply):
        vectors.append(vec)
        for key, value in zip(table, (label, stem, image_id, part_id, level, area, supply), strict=True):
            table[key].append(value)

    for image_id, r in enumerate(rows):
        p, label = r["protos"], classes[r["class"]]
        add(p.whole[None], label, r["stem"], image_id, -1, "whole", p.whole_area, 0.0)
        supply = supply_units(p.part_areas, int(views_per_class[r["class"]]))
        for f in range(len(p.parts)):
            add(p.parts[f:f + 1], label, r["stem"], image_id, f, "part", float(p.part_areas[f]), float(supply[f]))
    prototypes = torch.cat(vectors).cpu().numpy()
    keys = None
    if text_model is not None:
        served = sorted(set(table["label"]))
        class_keys = text_model.encode_classes(served).float().cpu().numpy()
        lookup = {name: i for i, name in enumerate(served)}
        keys = class_keys[[lookup[label] for label in table["label"]]]
    settings = {"source": "examples", "examples": str(Path(root).resolve()), "pooling": pooling,
                "superpixels": asdict(params),
                "images": len(examples), "views": len(rows), "min_pixels": min_pixels}
    return PrototypeBank.create(prototypes, table, method="examples", feature_encoder=features.encoder_id,
                                keys=keys, text_encoder=getattr(text_model, "encoder_id", None), dtype=dtype,
                                settings=settings)
