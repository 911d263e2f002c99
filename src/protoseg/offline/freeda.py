"""FreeDA's offline stage (Sec. 3.1 of the paper): captions in, a bank with text keys out.

Plan (driver): read captions, extract nouns, drop captions without nouns; caption ``n`` of the source
gets the synthesis seed ``derive_seed(seed, n)``. Without a caption source, given nouns (prototypes made on
demand for new classes) get the captions :func:`~protoseg.generate.captions.noun_captions`, caption ``j`` of
noun ``w`` the seed ``derive_seed(seed, w, j)``, so a noun's prototypes do not depend on the other nouns.
Shard (worker): one Stable Diffusion image per caption with cross-attention attributions of its nouns;
per noun the FreeDA mask (``sigmoid(minmax to [-1, 1]) > γ``); DINOv2 features pooled on the mask
(eq. 2, the mask resized to the feature grid with the preset's ``pooling``); the text key
``k = α·t̂(noun) + (1-α)·ĉ(caption)`` (eq. 3). Nouns whose mask is empty (or pools to no feature
cell) give no prototype.
Reduce: concatenate the shards in order; prototypes, table and keys become a :class:`PrototypeBank`
whose faiss index is built over the keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from protoseg.bank import PrototypeBank
from protoseg.config.build import BuildPreset, FreedaSource
from protoseg.errors import ProtosegError
from protoseg.generate.captions import noun_captions, read_captions
from protoseg.generate.keys import text_keys
from protoseg.generate.masks import freeda_mask
from protoseg.generate.nouns import get_noun_extractor
from protoseg.generate.synthesis import synthesize
from protoseg.models.clip import ClipModel
from protoseg.models.hub import resolve_weights
from protoseg.offline.base import Plan, ReducingBuilder
from protoseg.offline.common import cached_model, image_features, load_synthesis_models, str_array
from protoseg.regions import mask_weights, pool_features
from protoseg.runs import Progress, ShardResult, derive_seed, file_stamp, load_shard


@dataclass(frozen=True)
class FreedaItem:
    """One caption to synthesise: ``index`` (position in the source, the bank's ``image_id``),
    ``image_id`` (the source image the caption describes), ``caption``, its ``nouns`` (singular lemmas,
    the bank labels), the ``words`` that mention them in the caption (attribution targets), ``seed``."""

    index: int
    image_id: int
    caption: str
    nouns: tuple[str, ...]
    words: tuple[str, ...]
    seed: int


def plan_freeda(captions: list[Any], extractor: Any, seed: int) -> list[FreedaItem]:
    """Work items of the captions (``Caption`` records) that mention at least one noun."""
    items = []
    for n, caption in enumerate(captions):
        mentions: dict[str, str] = {}
        for mention in extractor.extract(caption.text):
            mentions.setdefault(mention.noun, mention.text)
        if mentions:
            items.append(FreedaItem(index=n, image_id=int(caption.image_id), caption=caption.text,
                                    nouns=tuple(mentions), words=tuple(mentions.values()),
                                    seed=derive_seed(seed, n)))
    if not items:
        raise ProtosegError("no caption mentions a noun the extractor knows; check the caption file or use "
                            "another noun extractor (--nouns spacy)")
    return items


def plan_nouns(nouns: list[str], seed: int) -> list[FreedaItem]:
    """Work items for ``nouns`` without a caption source: their :func:`noun_captions`, one image each."""
    items = []
    for noun in nouns:
        for j, caption in enumerate(noun_captions(noun)):
            items.append(FreedaItem(index=len(items), image_id=-1, caption=caption, nouns=(noun,), words=(noun,),
                                    seed=derive_seed(seed, noun, j)))
    return items


def freeda_shard(preset: BuildPreset, device: str | None, dtype: str | None,
                 items: list[FreedaItem]) -> dict[str, np.ndarray]:
    """Prototypes and keys of one shard of captions (module docstring).

    Returns arrays ``prototypes [n, D]``, ``keys [n, Dk]`` (float32), ``label``/``text`` (str ``[n]``),
    ``image_id`` (int64 ``[n]``, the caption's index), ``source_image`` (int64), ``area`` (float32 mask
    pixels), and 0-d ``feature_encoder`` / ``text_encoder`` ids.
    """
    pipe, features = load_synthesis_models(preset, device, dtype)
    text = resolve_weights(preset.text, "text")
    clip = cached_model(("clip", text, device), lambda: ClipModel(text, device=device))
    synths = synthesize(pipe, [it.caption for it in items], [list(it.words) for it in items],
                        [it.seed for it in items], steps=preset.steps, guidance=preset.guidance,
                        height=preset.height, width=preset.width, batch_size=preset.batch_size,
                        unet_feature_block=None)
    feats = image_features(features, [s.image for s in synths], preset.batch_size)
    protos, labels, texts, image_ids, sources, areas = [], [], [], [], [], []
    for item, synth, f in zip(items, synths, feats, strict=True):
        for noun, word in zip(item.nouns, item.words, strict=True):
            mask = np.asarray(freeda_mask(np.asarray(synth.attributions[word], np.float32), preset.gamma))
            if not mask.any():
                continue
            w = mask_weights(torch.from_numpy(mask)[None].to(f.device), tuple(f.shape[-2:]), preset.pooling)
            pooled, mass = pool_features(f.float(), w)
            if float(mass[0]) <= 0:
                continue
            protos.append(pooled[0].cpu().numpy())
            labels.append(noun)
            texts.append(item.caption)
            image_ids.append(item.index)
            sources.append(item.image_id)
            areas.append(float(mask.sum()))
    dim = int(features.dim)
    keys = (text_keys(clip, labels, texts, alpha=preset.alpha) if labels
            else np.zeros((0, int(clip.encode_text(["a"]).shape[-1])), np.float32))
    return {
        "prototypes": np.asarray(protos, np.float32).reshape(len(protos), dim),
        "keys": np.asarray(keys, np.float32),
        "label": str_array(labels), "text": str_array(texts),
        "image_id": np.asarray(image_ids, np.int64), "source_image": np.asarray(sources, np.int64),
        "area": np.asarray(areas, np.float32),
        "feature_encoder": np.asarray(features.encoder_id), "text_encoder": np.asarray(str(text)),
    }


def reduce_freeda(shards: Sequence[Path | dict[str, np.ndarray]], preset: BuildPreset,
                  settings: dict[str, Any]) -> PrototypeBank:
    """One bank from the shard results (or files), in shard order."""
    shards = [load_shard(s) if isinstance(s, Path) else s for s in shards]
    if not shards:
        raise ProtosegError("nothing was built: no shard results")
    cat = {k: np.concatenate([s[k] for s in shards]) for k in
           ("prototypes", "keys", "label", "text", "image_id", "area")}
    if len(cat["prototypes"]) == 0:
        raise ProtosegError("no prototype was produced: every noun mask was empty; check the captions, the "
                            "diffusion model and the threshold gamma")
    table = {"label": cat["label"].astype(object), "text": cat["text"].astype(object),
             "image_id": cat["image_id"], "part_id": np.full(len(cat["label"]), -1, np.int32),
             "level": np.full(len(cat["label"]), "whole", dtype=object), "area": cat["area"]}
    return PrototypeBank.create(
        cat["prototypes"], table, method="freeda", feature_encoder=str(shards[0]["feature_encoder"]),
        keys=cat["keys"], text_encoder=str(shards[0]["text_encoder"]), dtype=preset.bank_dtype,
        index_kind=preset.index_kind, settings=settings)


class FreedaBuilder(ReducingBuilder):
    """FreeDA's offline stage as plan -> shard -> reduce (module docstring), from a :class:`FreedaSource`."""

    def plan(self, source: FreedaSource, out: Path, seed: int, progress: Progress | None = None) -> Plan:
        if source.nouns is not None:
            nouns = list(source.nouns)
            return Plan(plan_nouns(nouns, seed), {"nouns": nouns, "captions": "noun_captions"})
        if not source.captions.is_file():
            raise ProtosegError(f"captions file not found: {source.captions}")
        captions = read_captions(source.captions)
        if source.limit is not None:
            captions = captions[:source.limit]
        items = plan_freeda(captions, get_noun_extractor(self.preset.nouns), seed)
        return Plan(items, {"captions": str(source.captions), "captions_used": len(captions),
                            "captions_with_nouns": len(items)}, {"captions": file_stamp(source.captions)})

    def shard(self, items: list[FreedaItem]) -> ShardResult:
        return freeda_shard(self.preset, self.device, self.dtype, items)

    def reduce(self, shards: Sequence[Path | ShardResult], plan: Plan, seed: int) -> PrototypeBank:
        return reduce_freeda(shards, self.preset, plan.settings)
