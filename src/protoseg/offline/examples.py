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

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from protoseg.bank import PrototypeBank
from protoseg.classes import validate_classes
from protoseg.config.build import ExamplesSource, examples_preset
from protoseg.config.segment import Preset, get_preset
from protoseg.datasets.base import Sample, read_label_png
from protoseg.datasets.examples import open_examples
from protoseg.errors import ProtosegError
from protoseg.images import load_image
from protoseg.models import load_features
from protoseg.models.clip import ClipModel
from protoseg.models.hub import resolve_weights
from protoseg.offline.base import Plan, ReducingBuilder
from protoseg.offline.common import cached_model, str_array
from protoseg.offline.parts import object_prototypes, supply_units
from protoseg.regions import superpixels
from protoseg.runs import Progress, ShardResult, files_digest, load_shard
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


@dataclass(frozen=True)
class ExampleItem:
    """One labelled example: its position ``index`` (the order of stems), paths and the class count."""

    index: int
    stem: str
    image: Path
    mask: Path
    num_classes: int


class ExamplesBuilder(ReducingBuilder):
    """Banks from a labelled examples folder (module docstring, an :class:`ExamplesSource`); ``preset`` from
    :func:`protoseg.config.build.examples_preset`.

    Plan: the examples, sorted by stem. Shard: per example, every window view of every class present
    with ``min_pixels``+ pixels gives a whole-level and part-level prototypes. Reduce: supplies (eq. 7
    with ``N`` = the class's views), class text keys when the preset has CLIP, the bank.
    """

    def plan(self, source: ExamplesSource, out: Path, seed: int, progress: Progress | None = None) -> Plan:
        classes, samples = read_examples(source.examples)
        items = [ExampleItem(n, s.stem, s.image, s.label, len(classes)) for n, s in enumerate(samples)]
        settings = {"source": "examples", "examples": str(Path(source.examples).resolve()),
                    "images": len(items)}
        files = [Path(source.examples) / "classes.txt", *(p for it in items for p in (it.image, it.mask))]
        return Plan(items, settings, {"examples": files_digest(files)}, {"classes": classes})

    def _features(self) -> Any:
        name = self.preset.features
        return cached_model(("features", name, self.device),
                            lambda: load_features(resolve_weights(name, "features"), self.device))

    @torch.no_grad()
    def shard(self, items: list[ExampleItem]) -> ShardResult:
        """Per view (one class in one window): ``view_class``, ``view_image`` (example index),
        ``view_stem``, ``whole [v, D]``, ``whole_area``; per part: ``part_view`` (view row),
        ``part [p, D]``, ``part_area``; 0-d ``feature_encoder``."""
        p = self.preset
        features = self._features()
        views: dict[str, list[Any]] = {k: [] for k in ("class", "image", "stem", "whole", "area")}
        parts: dict[str, list[Any]] = {k: [] for k in ("view", "proto", "area")}
        for ex in items:
            image = load_image(ex.image)
            mask = load_mask(ex.mask, image.shape[:2], ex.num_classes)
            size = rescale_size(*image.shape[:2], p.scale)
            resized = resize_image(image, size)
            mask_r = _nearest_resize(mask, size)
            for y1, y2, x1, x2 in window_grid(*size, p.crop, p.stride):
                crop_t = resized[:, y1:y2, x1:x2]
                crop_mask = mask_r[y1:y2, x1:x2]
                present = [c for c in np.unique(crop_mask)
                           if c != IGNORE and (crop_mask == c).sum() >= p.min_pixels]
                if not present:
                    continue
                feats = features(crop_t[None].to(features.device))[0].float()
                objects = np.where(np.isin(crop_mask, present), crop_mask, IGNORE)
                regions = superpixels(crop_t.permute(1, 2, 0).byte().numpy(), p.superpixels)
                for c, protos in sorted(object_prototypes(feats, objects, regions, p.pooling,
                                                          ignore=IGNORE).items()):
                    if not len(protos.parts):
                        continue
                    row = len(views["class"])
                    for key, value in (("class", c), ("image", ex.index), ("stem", ex.stem),
                                       ("whole", protos.whole.cpu().numpy()), ("area", protos.whole_area)):
                        views[key].append(value)
                    parts["view"].extend([row] * len(protos.parts))
                    parts["proto"].extend(protos.parts.cpu().numpy())
                    parts["area"].extend(protos.part_areas.cpu().numpy())
        dim = int(features.dim)
        return {
            "view_class": np.asarray(views["class"], np.int64), "view_image": np.asarray(views["image"], np.int64),
            "view_stem": str_array(views["stem"]),
            "whole": np.asarray(views["whole"], np.float32).reshape(len(views["whole"]), dim),
            "whole_area": np.asarray(views["area"], np.float32),
            "part_view": np.asarray(parts["view"], np.int64),
            "part": np.asarray(parts["proto"], np.float32).reshape(len(parts["proto"]), dim),
            "part_area": np.asarray(parts["area"], np.float32),
            "feature_encoder": np.asarray(features.encoder_id),
        }

    def reduce(self, shards: Sequence[Path | ShardResult], plan: Plan, seed: int) -> PrototypeBank:
        classes: list[str] = plan.context["classes"]
        data = [load_shard(s) if isinstance(s, Path) else s for s in shards]
        views = sum(len(d["view_class"]) for d in data)
        if views == 0:
            raise ProtosegError(f"no class in {plan.settings['examples']} covers {self.preset.min_pixels}+ "
                                "pixels of any image; nothing to build")
        view_class = np.concatenate([d["view_class"] for d in data])
        views_per_class = np.bincount(view_class, minlength=len(classes))
        vectors: list[np.ndarray] = []
        table: dict[str, list[Any]] = {k: [] for k in ("label", "text", "image_id", "part_id", "level", "area",
                                                       "supply")}

        def add(vec: np.ndarray, *values: Any) -> None:
            vectors.append(vec)
            for key, value in zip(table, values, strict=True):
                table[key].append(value)

        view_id = 0
        for d in data:
            bounds = np.searchsorted(d["part_view"], np.arange(len(d["view_class"]) + 1))  # parts are by view
            for v in range(len(d["view_class"])):
                rows = range(bounds[v], bounds[v + 1])
                label, stem = classes[int(d["view_class"][v])], str(d["view_stem"][v])
                add(d["whole"][v:v + 1], label, stem, view_id, -1, "whole", float(d["whole_area"][v]), 0.0)
                areas = torch.from_numpy(d["part_area"][bounds[v]:bounds[v + 1]])
                supply = supply_units(areas, int(views_per_class[d["view_class"][v]])).numpy()
                for f, r in enumerate(rows):
                    add(d["part"][r:r + 1], label, stem, view_id, f, "part", float(d["part_area"][r]),
                        float(supply[f]))
                view_id += 1
        prototypes = np.concatenate(vectors)
        keys, text_encoder = None, None
        if self.preset.text is not None:
            text_encoder = resolve_weights(self.preset.text, "text")
            clip = ClipModel(text_encoder, device=self.device)
            served = sorted(set(table["label"]))
            class_keys = clip.encode_classes(served).float().cpu().numpy()
            lookup = {name: i for i, name in enumerate(served)}
            keys = class_keys[[lookup[label] for label in table["label"]]]
        settings = {**plan.settings, "pooling": self.preset.pooling, "superpixels": asdict(self.preset.superpixels),
                    "views": view_id, "min_pixels": self.preset.min_pixels}
        return PrototypeBank.create(prototypes, table, method="examples",
                                    feature_encoder=str(data[0]["feature_encoder"]), keys=keys,
                                    text_encoder=text_encoder, dtype=self.preset.bank_dtype, settings=settings)


def bank_from_examples(root: str | Path, preset: str | Preset = "handcrafted", device: str | None = None,
                       dtype: str = "float16") -> PrototypeBank:
    """The bank of an examples folder for segmentation preset ``preset`` (a name or a
    :class:`~protoseg.config.segment.Preset`), built in memory (no work folder, no resume; use
    :func:`protoseg.offline.build_examples_bank` for that)."""
    segment = get_preset(preset) if isinstance(preset, str) else preset
    builder = ExamplesBuilder(examples_preset(segment, bank_dtype=dtype), device)
    plan = builder.plan(ExamplesSource(Path(root)), Path(root), seed=0)
    return builder.reduce([builder.shard(plan.items)], plan, seed=0)
