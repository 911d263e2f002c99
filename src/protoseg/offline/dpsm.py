"""DPSM's diverse prototype construction: class names in, part-level prototypes with supplies out.

Plan (driver): ``N = 4K`` prompts per class, either K LLM descriptions for each of the four attributes
(state, feature, co-occurrence object, location; cached, editable JSON) or ``N`` copies of the naive
prompt ``"a good photo of a {}"`` (ablation). Each prompt is synthesised ``κ`` times (``κN`` images per
class); image ``i = j·κ + r`` of class ``c`` (prompt ``j``, repeat ``r``) gets the seed
``derive_seed(seed, c, i)``, so a class's images do not depend on the other classes or on sharding.

Shard (worker): per image the Stable Diffusion attribution of the class name gives the foreground
``M_fg`` (``minmax to [0, 1] > γ``, eq. 1); the whole-level *guide* feature ``ω`` is the SD-UNet decoder
feature map (output of up block ``unet_block`` at the last denoising step, as captured by
:func:`protoseg.generate.synthesis.synthesize`) mask-average-pooled on ``M_fg`` (eq. 2); DINOv2 gives the
whole-level prototype (pooled on ``M_fg``) and the part prototypes with eq. 7 supplies
(:func:`protoseg.offline.parts.image_prototypes`). Images with an empty foreground are dropped.

Reduce: per class, the κN images are fused back with the preset's clustering
(:func:`protoseg.offline.clustering.fuse_class`). When some images were dropped, supplies are rescaled by
``κN / valid`` first so that each class still carries one unit of supply (eq. 12 exactly otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from protoseg.atomic import check_output_file
from protoseg.bank import PrototypeBank
from protoseg.config.build import BuildPreset, DpsmSource
from protoseg.errors import ProtosegError
from protoseg.generate.llm import load_llm
from protoseg.generate.masks import dpsm_mask
from protoseg.generate.prompts import (
    ATTRIBUTES,
    describe_classes,
    dpsm_prompts,
    naive_descriptions,
    read_description_cache,
)
from protoseg.generate.synthesis import synthesize
from protoseg.offline.base import Plan, ReducingBuilder
from protoseg.offline.clustering import ClassSupport, fuse_class
from protoseg.offline.common import image_features, load_synthesis_models, str_array
from protoseg.offline.parts import image_prototypes, supply_units
from protoseg.regions import mask_weights, pool_features
from protoseg.runs import Progress, ShardResult, derive_seed, load_shard


@dataclass(frozen=True)
class DpsmItem:
    """One support image to synthesise: class, position ``index`` in the class's ``κN`` images,
    attribute and prompt it comes from, and its seed."""

    class_name: str
    index: int
    attribute: str
    prompt: str
    seed: int


def class_prompts(classes: list[str], preset: BuildPreset, llm_spec: str | None = None,
                  cache_path: str | Path | None = None, seed: int = 0, device: str | None = None,
                  progress: Any = None) -> list[tuple[str, str, str]]:
    """``[(class, attribute, prompt)]`` with ``N = 4K`` rows per class (module docstring)."""
    n = preset.images_per_class
    if preset.prompts == "naive":
        return dpsm_prompts(naive_descriptions(classes, n))
    spec = llm_spec or preset.llm
    llm = None
    cache = Path(cache_path) if cache_path is not None else None
    needs_llm = True
    if cache is not None and cache.is_file():
        cached = read_description_cache(cache)
        needs_llm = any(a not in cached.get(c, {}) for c in classes for a in ATTRIBUTES)
    if needs_llm:
        if not spec:
            raise ProtosegError("DPSM descriptions need an LLM: pass --llm SPEC (smollm2, hf:<id or folder>, "
                                "gguf:<file>, openai:<url>#<model>) or use --prompts naive")
        llm = load_llm(spec, device=device)
    descriptions = describe_classes(classes, llm, k=preset.k, cache_path=cache, seed=seed, progress=progress)
    return dpsm_prompts(descriptions)


def plan_dpsm(prompts: list[tuple[str, str, str]], preset: BuildPreset, seed: int) -> list[DpsmItem]:
    """``κ`` items per prompt, numbered per class."""
    items: list[DpsmItem] = []
    position: dict[str, int] = {}
    for class_name, attribute, prompt in prompts:
        j = position.get(class_name, 0)
        position[class_name] = j + 1
        for r in range(preset.kappa):
            index = j * preset.kappa + r
            items.append(DpsmItem(class_name, index, attribute, prompt, derive_seed(seed, class_name, index)))
    return items


def dpsm_shard(preset: BuildPreset, device: str | None, dtype: str | None,
               items: list[DpsmItem]) -> dict[str, np.ndarray]:
    """Whole-level guides and prototypes, part prototypes and supplies of one shard of images.

    Returns per kept image ``img_class``/``img_attribute``/``img_prompt`` (str), ``img_index`` (int64),
    ``img_area`` (fg pixels), ``img_guide [m, Cg]``, ``img_whole [m, D]``; per part ``part_image`` (row in
    the image arrays), ``part_proto [p, D]``, ``part_area``, ``part_supply``; ``dropped_class`` /
    ``dropped_index`` for images with no usable foreground; 0-d ``feature_encoder``.
    """
    pipe, features = load_synthesis_models(preset, device, dtype)
    use_unet = preset.guide == "unet"
    synths = synthesize(pipe, [it.prompt for it in items], [[it.class_name] for it in items],
                        [it.seed for it in items], steps=preset.steps, guidance=preset.guidance,
                        height=preset.height, width=preset.width, batch_size=preset.batch_size,
                        unet_feature_block=preset.unet_block if use_unet else None,
                        unet_feature_timestep=preset.unet_timestep)
    feats = image_features(features, [s.image for s in synths], preset.batch_size)
    n = preset.images_per_class
    kept: dict[str, list[Any]] = {k: [] for k in ("class", "attribute", "prompt", "index", "area", "guide",
                                                  "whole")}
    parts: dict[str, list[Any]] = {k: [] for k in ("image", "proto", "area", "supply")}
    dropped_class, dropped_index = [], []
    for item, synth, f in zip(items, synths, feats, strict=True):
        fg = np.asarray(dpsm_mask(np.asarray(synth.attributions[item.class_name], np.float32), preset.gamma))
        protos = image_prototypes(f.float(), synth.image, fg, preset.superpixels, preset.pooling)
        if protos is None or len(protos.parts) == 0:
            dropped_class.append(item.class_name)
            dropped_index.append(item.index)
            continue
        if use_unet:
            unet = synth.unet_features.float()
            w = mask_weights(torch.from_numpy(fg)[None].to(unet.device), tuple(unet.shape[-2:]),
                             preset.pooling)
            pooled, mass = pool_features(unet, w)
            guide = pooled[0].cpu().numpy() if float(mass[0]) > 0 else unet.mean((1, 2)).cpu().numpy()
        else:
            guide = protos.whole.cpu().numpy()
        row = len(kept["index"])
        for key, value in (("class", item.class_name), ("attribute", item.attribute), ("prompt", item.prompt),
                           ("index", item.index), ("area", protos.whole_area), ("guide", guide),
                           ("whole", protos.whole.cpu().numpy())):
            kept[key].append(value)
        parts["image"].extend([row] * len(protos.parts))
        parts["proto"].extend(protos.parts.cpu().numpy())
        parts["area"].extend(protos.part_areas.cpu().numpy())
        parts["supply"].extend(supply_units(protos.part_areas, n).cpu().numpy())
    dim = int(features.dim)
    guide_dim = len(kept["guide"][0]) if kept["guide"] else 0
    return {
        "img_class": str_array(kept["class"]), "img_attribute": str_array(kept["attribute"]),
        "img_prompt": str_array(kept["prompt"]), "img_index": np.asarray(kept["index"], np.int64),
        "img_area": np.asarray(kept["area"], np.float32),
        "img_guide": np.asarray(kept["guide"], np.float32).reshape(len(kept["guide"]), guide_dim),
        "img_whole": np.asarray(kept["whole"], np.float32).reshape(len(kept["whole"]), dim),
        "part_image": np.asarray(parts["image"], np.int64),
        "part_proto": np.asarray(parts["proto"], np.float32).reshape(len(parts["proto"]), dim),
        "part_area": np.asarray(parts["area"], np.float32),
        "part_supply": np.asarray(parts["supply"], np.float32),
        "dropped_class": str_array(dropped_class), "dropped_index": np.asarray(dropped_index, np.int64),
        "feature_encoder": np.asarray(features.encoder_id),
    }


def _gather(shards: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate shard arrays, turning shard-local ``part_image`` rows into global image rows."""
    out: dict[str, list[np.ndarray]] = {}
    offset = 0
    for s in shards:
        for key, value in s.items():
            if key in ("feature_encoder",):
                continue
            if key == "part_image":
                value = value + offset
            if key in ("img_guide",) and value.shape[0] == 0:
                continue
            out.setdefault(key, []).append(value)
        offset += len(s["img_index"])
    return {k: np.concatenate(v) for k, v in out.items()}


def _shard_classes(shard: Path | dict[str, np.ndarray]) -> set[str]:
    """Classes with images in a shard (reads only the class arrays of a shard file)."""
    if isinstance(shard, dict):
        return set(shard["img_class"].tolist()) | set(shard["dropped_class"].tolist())
    with np.load(shard, allow_pickle=False) as data:
        return set(data["img_class"].tolist()) | set(data["dropped_class"].tolist())


def reduce_dpsm(shards: Sequence[Path | dict[str, np.ndarray]], classes: list[str], preset: BuildPreset,
                seed: int, settings: dict[str, Any]) -> PrototypeBank:
    """Fuse every class's images (``preset.clustering``) and assemble the bank: per class its whole-level
    rows (``level="whole"``) then its part rows (``level="part"``) with supplies.

    ``shards``: shard files (or their loaded arrays). Files are read one class at a time, so memory holds
    one class's scaled-up prototypes, not the whole build's.
    """
    if not shards:
        raise ProtosegError("nothing was built: no shard results")
    members = [_shard_classes(s) for s in shards]
    first = shards[0] if isinstance(shards[0], dict) else load_shard(shards[0])
    n, kappa = preset.images_per_class, preset.kappa
    total = n * kappa
    rows: dict[str, list[Any]] = {k: [] for k in ("proto", "label", "text", "image_id", "part_id", "level",
                                                  "area", "supply", "coarse", "fine")}
    dropped: dict[str, int] = {}
    for ci, name in enumerate(classes):
        data = _gather([s if isinstance(s, dict) else load_shard(s)
                        for s, m in zip(shards, members, strict=True) if name in m])
        data.setdefault("img_class", np.zeros(0, "<U1"))  # no shard holds the class
        images = np.flatnonzero(data["img_class"] == name)
        images = images[np.argsort(data["img_index"][images], kind="stable")]
        dropped[name] = total - len(images)
        if len(images) == 0:
            raise ProtosegError(f"no support image of {name!r} has a foreground (all {total} attention masks "
                                f"were empty at gamma={preset.gamma}); lower --gamma or check the prompts")
        local = np.full(len(data["img_index"]), -1, np.int64)
        local[images] = np.arange(len(images))
        part_rows = np.flatnonzero(local[data["part_image"]] >= 0)
        scale = total / len(images)
        support = ClassSupport(
            guides=data["img_guide"][images], wholes=data["img_whole"][images],
            parts=data["part_proto"][part_rows], part_image=local[data["part_image"][part_rows]],
            supplies=data["part_supply"][part_rows].astype(np.float64) * scale,
            part_areas=data["part_area"][part_rows])
        fused = fuse_class(support, coarse_clusters=n, kappa=kappa, mode=preset.clustering,
                           seed=derive_seed(seed, name))
        base_id = ci * total
        img_index = data["img_index"][images]
        whole_area = np.bincount(fused.image_whole, weights=data["img_area"][images],
                                 minlength=len(fused.wholes))
        for w in range(len(fused.wholes)):
            src = int(fused.whole_image[w])
            rows["proto"].append(fused.wholes[w])
            rows["label"].append(name)
            rows["text"].append(str(data["img_prompt"][images[src]]) if src >= 0 else "")
            rows["image_id"].append(base_id + int(img_index[src]) if src >= 0 else -1)
            rows["part_id"].append(-1)
            rows["level"].append("whole")
            rows["area"].append(float(whole_area[w]))
            rows["supply"].append(float(fused.whole_supplies[w]))
            rows["coarse"].append(int(fused.whole_coarse[w]))
            rows["fine"].append(-1)
        for q in range(len(fused.parts)):
            src = int(fused.part_image[q])
            rows["proto"].append(fused.parts[q])
            rows["label"].append(name)
            rows["text"].append(str(data["img_prompt"][images[src]]) if src >= 0 else "")
            rows["image_id"].append(base_id + int(img_index[src]) if src >= 0 else -1)
            rows["part_id"].append(q)
            rows["level"].append("part")
            rows["area"].append(float(fused.areas[q]))
            rows["supply"].append(float(fused.supplies[q]))
            rows["coarse"].append(int(fused.coarse[q]))
            rows["fine"].append(int(fused.fine[q]))
    table = {"label": np.asarray(rows["label"], dtype=object), "text": np.asarray(rows["text"], dtype=object),
             "image_id": np.asarray(rows["image_id"], np.int64),
             "part_id": np.asarray(rows["part_id"], np.int32),
             "level": np.asarray(rows["level"], dtype=object), "area": np.asarray(rows["area"], np.float32),
             "supply": np.asarray(rows["supply"], np.float32),
             "coarse_cluster": np.asarray(rows["coarse"], np.int32),
             "fine_cluster": np.asarray(rows["fine"], np.int32)}
    settings = {**settings, "dropped_images": dropped}
    return PrototypeBank.create(np.stack(rows["proto"]), table, method="dpsm",
                                feature_encoder=str(first["feature_encoder"]), dtype=preset.bank_dtype,
                                settings=settings)


class DpsmBuilder(ReducingBuilder):
    """DPSM's diverse prototype construction as plan -> shard -> reduce (module docstring), from a
    :class:`DpsmSource`."""

    def plan(self, source: DpsmSource, out: Path, seed: int, progress: Progress | None = None) -> Plan:
        """Descriptions (LLM or naive; cached in ``source.descriptions``, default ``OUT.descriptions.json``)
        and the ``κN`` items of every class."""
        if source.descriptions is not None:
            check_output_file(source.descriptions, "--descriptions")
        classes = list(source.classes)
        llm = self.preset.prompts == "llm"
        cache = source.descriptions or out.with_name(out.name + ".descriptions.json")
        prompts = class_prompts(classes, self.preset, source.llm, cache if llm else None, seed, self.device,
                                progress)
        settings = {"classes": classes, "prompts": self.preset.prompts,
                    "descriptions": str(cache) if llm else None,
                    "llm": (source.llm or self.preset.llm) if llm else None}
        return Plan(plan_dpsm(prompts, self.preset, seed), settings, context={"classes": classes})

    def shard(self, items: list[DpsmItem]) -> ShardResult:
        return dpsm_shard(self.preset, self.device, self.dtype, items)

    def reduce(self, shards: Sequence[Path | ShardResult], plan: Plan, seed: int) -> PrototypeBank:
        return reduce_dpsm(list(shards), plan.context["classes"], self.preset, seed, plan.settings)
