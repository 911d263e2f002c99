"""Evaluation protocols of the field, per benchmark, as typed data.

Two families of papers report training-free open-vocabulary segmentation on the same eight MMSeg
benchmarks, but under different test-time settings, so their numbers are only comparable within a family:

- ``tcl`` — the TCL / GroupViT protocol that FreeDA, DPSM, CLIP-DINOiser, Talk2DINO and LPOSS follow (and
  what protoseg does by default): keep-ratio resize to short side 448 (mmcv ``scale=(2048, 448)``),
  448×448 sliding windows with stride 224, MMSeg class names, and — on benchmarks with a background class —
  a constant background score (0.4, the only value in FreeDA's released code) prepended to the class scores.
- ``sclip`` — the SCLIP protocol (mmseg 1.x configs ``configs/cfg_<dataset>.py``) that NACLIP, ProxyCLIP,
  Trident, CASS and CorrCLIP inherit: per-dataset short side (336 / 448 / 560), 224×224 windows with stride
  112, renamed class lists with synonyms (``configs/cls_<dataset>.txt``, see
  :mod:`protoseg.datasets.variants`), and background *queried as a class* (with synonyms such as
  "sky, wall, tree…") whose pixels are also given to every pixel whose best class probability — a softmax
  over ``logit_scale × cosine`` of all queried names, max over a class's synonyms — is below ``threshold``.

The later members of the SCLIP family changed the per-dataset numbers; their settings are here too, each
under its own protocol name, with ``family = "sclip"`` (e.g. ``proxyclip``: 336×336 windows, stride 112).
Each entry cites the config it was read from (repository @ commit : path).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from protoseg.config.fields import checked, require
from protoseg.datasets import DATASET_NAMES, dataset_classes, has_background
from protoseg.errors import ProtosegError

#: The eight MMSeg benchmarks (protoseg dataset names), in the order papers usually list them.
BENCHMARKS: tuple[str, ...] = (
    "voc20", "voc", "context59", "context60", "coco-stuff", "coco-object", "cityscapes", "ade20k",
)

#: Benchmarks with a background class (:func:`protoseg.datasets.has_background` of their class lists).
WITH_BACKGROUND: frozenset[str] = frozenset(d for d in BENCHMARKS if has_background(dataset_classes(d)))

#: Protocol families: numbers are comparable within a family only.
FAMILIES: tuple[str, ...] = ("tcl", "sclip")

#: Class-name variants (:func:`protoseg.datasets.variants.class_names`).
NAME_VARIANTS: tuple[str, ...] = ("mmseg", "sclip", "proxyclip", "corrclip")


@dataclass(frozen=True)
class ProtocolSettings:
    """Test-time settings of one benchmark under one protocol.

    Attributes:
        name: protocol name (a key of :data:`PROTOCOLS`).
        family: ``"tcl"`` or ``"sclip"`` (which published numbers this protocol is comparable with).
        dataset: protoseg dataset name (one of :data:`BENCHMARKS`, or a dataset outside the tables with the
            protocol's defaults: :func:`protocol_settings`).
        scale: mmcv keep-ratio resize target ``(long_max, short_max)``; :attr:`short_side` is the second.
        crop: sliding-window side in pixels of the resized image; ``None``: the whole image in one pass.
        stride: window stride (``None`` when ``crop`` is ``None``).
        background: ``"none"`` (no background class), ``"constant"`` (a constant score channel equal to
            ``threshold`` before the class scores, FreeDA) or ``"probability"`` (background is class 0 of the
            name list and also takes pixels whose best class probability is below ``threshold``, SCLIP).
        threshold: the constant background score, or the minimum class probability; ``None`` without
            background.
        logit_scale: multiplier of the cosine logits before the softmax (``probability`` background);
            ``None`` where scores are not turned into probabilities before the decision.
        area_threshold: SCLIP's VOC rule: a class predicted on less than this fraction of the image's
            non-background pixels is removed; ``None``: no such rule.
        names: class-name variant (:data:`NAME_VARIANTS`; ``mmseg`` also stands for the own class list of a
            dataset outside the tables).
        source: where the values come from (repository @ commit : path, or protoseg's defaults).
    """

    name: str
    family: Literal["tcl", "sclip"]
    dataset: str
    scale: tuple[int, int]
    crop: int | None
    stride: int | None
    background: Literal["none", "constant", "probability"]
    threshold: float | None
    logit_scale: float | None
    area_threshold: float | None
    names: Literal["mmseg", "sclip", "proxyclip", "corrclip"]
    source: str

    def __post_init__(self) -> None:
        what = "protocol setting"
        checked(self, what)
        require(self.dataset in DATASET_NAMES, what, "dataset", "one of " + ", ".join(DATASET_NAMES), self.dataset)
        require(min(self.scale) >= 1, what, "scale", "two positive sizes", self.scale)
        require((self.crop is None) == (self.stride is None), what, "stride", "given exactly when crop is",
                self.stride)
        if self.crop is not None and self.stride is not None:
            require(self.crop >= 1, what, "crop", ">= 1 or None", self.crop)
            require(1 <= self.stride <= self.crop, what, "stride", f"in [1, crop={self.crop}]", self.stride)
        if self.dataset in BENCHMARKS:
            has_bg = self.dataset in WITH_BACKGROUND
            require((self.background != "none") == has_bg, what, "background",
                    "'none' exactly for benchmarks without a background class", self.background)
        require((self.threshold is None) == (self.background == "none"), what, "threshold",
                "given exactly when there is a background rule", self.threshold)
        if self.background == "probability":
            require(self.logit_scale is not None and self.logit_scale > 0, what, "logit_scale",
                    "> 0 with probability background", self.logit_scale)
            require(self.threshold is not None and 0.0 <= self.threshold <= 1.0, what, "threshold",
                    "a probability in [0, 1]", self.threshold)
        require(self.logit_scale is None or self.logit_scale > 0, what, "logit_scale", "> 0 or None",
                self.logit_scale)
        require(self.area_threshold is None or 0.0 <= self.area_threshold <= 1.0, what, "area_threshold",
                "in [0, 1] or None", self.area_threshold)
        require(self.area_threshold is None or self.background != "none", what, "area_threshold",
                "None without background", self.area_threshold)
        require(self.family == "sclip" or self.names == "mmseg", what, "names",
                "'mmseg' in the tcl family", self.names)
        require(bool(self.source.strip()), what, "source", "a citation", self.source)

    @property
    def short_side(self) -> int:
        """Target of the image's shorter side (mmcv: unless the longer side would exceed ``max(scale)``)."""
        return min(self.scale)

    @property
    def sliding(self) -> bool:
        """Whether inference runs on sliding windows (else on the whole resized image)."""
        return self.crop is not None

    def preset_overrides(self) -> dict[str, Any]:
        """The :class:`~protoseg.config.segment.Preset` fields these settings fix — the one place a protocol
        becomes segmenter settings: ``scale``, ``crop``, ``stride`` and, on a dataset with background, the
        background rule: ``background_rule``, ``background_threshold`` and, for ``probability``,
        ``logit_scale`` and ``area_threshold``.

        "Whole image" (``crop`` ``None``) becomes one window of ``max(scale)`` pixels, which covers every
        image the resize produces. Without background the softmax of the probability rule is monotone, so
        the argmax over classes is the one of the scores and nothing else is needed. The class-name variant
        is not a preset field (:func:`protoseg.eval.query.benchmark_query` applies it).
        """
        side = max(self.scale)
        fields: dict[str, Any] = {
            "scale": self.scale,
            "crop": self.crop if self.crop is not None else side,
            "stride": self.stride if self.stride is not None else side,
        }
        if self.background != "none":
            fields["background_rule"] = self.background
            fields["background_threshold"] = self.threshold
        if self.background == "probability":
            fields["logit_scale"] = self.logit_scale
            fields["area_threshold"] = self.area_threshold
        return fields


def _tcl(dataset: str, bg: bool | None = None) -> ProtocolSettings:
    """protoseg's defaults (``Preset``: scale (2048, 448), crop 448, stride 224; ``DatasetPreset``: constant
    background 0.4): FreeDA's released evaluation (fact sheet 1.1, 1.4) and the TCL protocol."""
    bg = dataset in WITH_BACKGROUND if bg is None else bg
    return ProtocolSettings(
        name="tcl", family="tcl", dataset=dataset, scale=(2048, 448), crop=448, stride=224,
        background="constant" if bg else "none", threshold=0.4 if bg else None, logit_scale=None,
        area_threshold=None, names="mmseg",
        source="protoseg defaults = aimagelab/freeda@bf25f68 src/segmentation/configs/_base_/datasets/*.py "
               "(img_scale (2048, 448), slide 448/224) and bg_thresh 0.4",
    )


_SCLIP_REPO = "wangf3014/SCLIP@b56bd30"
_NACLIP_REPO = "sinahmr/NACLIP@0cac3a6"
_PROXYCLIP_REPO = "mc-lan/ProxyCLIP@e7b767f"
_CORRCLIP_REPO = "zdk258/CorrCLIP@103bc18"

#: mmseg-1.x config file of each benchmark in the SCLIP-family repositories.
CONFIG_FILES: dict[str, str] = {
    "voc20": "cfg_voc20.py", "voc": "cfg_voc21.py", "context59": "cfg_context59.py",
    "context60": "cfg_context60.py", "coco-stuff": "cfg_coco_stuff164k.py", "coco-object": "cfg_coco_object.py",
    "cityscapes": "cfg_city_scapes.py", "ade20k": "cfg_ade20k.py",
}


def _family(name: str, repo: str, folder: str, names: str, rows: dict[str, tuple]) -> dict[str, ProtocolSettings]:
    """Settings of one SCLIP-family repository from ``dataset: (short side, crop, stride, threshold,
    logit_scale, area_threshold)`` rows (``threshold`` ``None`` = no background)."""
    out = {}
    for dataset, (short, crop, stride, threshold, logit_scale, area) in rows.items():
        out[dataset] = ProtocolSettings(
            name=name, family="sclip", dataset=dataset, scale=(2048, short), crop=crop, stride=stride,
            background="none" if threshold is None else "probability", threshold=threshold,
            logit_scale=logit_scale, area_threshold=area, names=names,
            source=f"{repo}:{folder}/{CONFIG_FILES[dataset]}",
        )
    return out


# Model defaults of each repository (the configs override them per dataset):
#   SCLIP     clip_segmentor.py     CLIPForSegmentation: prob_thd 0.0, logit_scale 40, slide_crop 224, slide_stride 112
#   NACLIP    naclip.py             NACLIP:              prob_thd 0.0, logit_scale 40, slide_crop 224, slide_stride 112
#                                                        (and pamr_steps 10: PAMR on by default, a method choice)
#   ProxyCLIP proxyclip_segmentor.py                     prob_thd 0.0, logit_scale 40, slide_crop 336, slide_stride 112
#   CorrCLIP  CorrCLIPv1/corrclip_segmentor.py           prob_thd 0.0, logit_scale 40, slide_crop 336, slide_stride 112
# Rows: dataset: (short side of Resize scale, slide_crop, slide_stride, prob_thd, logit_scale, area_thd).
_SCLIP = _family("sclip", _SCLIP_REPO, "configs", "sclip", {
    "voc20": (336, 224, 112, None, 40.0, None),        # configs/cfg_voc20.py
    "voc": (336, 224, 112, 0.1, 65.0, 0.1),            # configs/cfg_voc21.py: logit 65, prob_thd 0.1, area_thd 0.1
    "context59": (336, 224, 112, None, 40.0, None),    # configs/cfg_context59.py
    "context60": (336, 224, 112, 0.1, 50.0, None),     # configs/cfg_context60.py: logit_scale 50, prob_thd 0.1
    "coco-stuff": (448, 224, 112, None, 40.0, None),   # configs/cfg_coco_stuff164k.py: Resize (2048, 448)
    "coco-object": (336, 224, 112, 0.1, 50.0, None),   # configs/cfg_coco_object.py: logit_scale 50, prob_thd 0.1
    "cityscapes": (560, 224, 112, None, 40.0, None),   # configs/cfg_city_scapes.py: Resize (2048, 560)
    "ade20k": (336, 224, 112, None, 40.0, None),       # configs/cfg_ade20k.py
})
_NACLIP = _family("naclip", _NACLIP_REPO, "configs", "sclip", {
    "voc20": (336, None, None, None, 40.0, None),      # configs/cfg_voc20.py: slide_crop=0 (whole image)
    "voc": (336, None, None, 0.1, 40.0, None),         # configs/cfg_voc21.py: prob_thd 0.1, slide_crop=0
    "context59": (336, 224, 112, None, 40.0, None),    # configs/cfg_context59.py
    "context60": (336, 224, 112, 0.1, 40.0, None),     # configs/cfg_context60.py: prob_thd 0.1
    "coco-stuff": (336, 224, 112, None, 40.0, None),   # configs/cfg_coco_stuff164k.py: Resize (2048, 336)
    "coco-object": (336, 224, 112, 0.1, 40.0, None),   # configs/cfg_coco_object.py: prob_thd 0.1
    "cityscapes": (560, 224, 112, None, 40.0, None),   # configs/cfg_city_scapes.py: Resize (2048, 560)
    "ade20k": (336, 224, 112, None, 40.0, None),       # configs/cfg_ade20k.py
})
_PROXYCLIP = _family("proxyclip", _PROXYCLIP_REPO, "configs", "proxyclip", {
    "voc20": (336, 336, 112, None, 40.0, None),        # configs/cfg_voc20.py
    "voc": (336, 336, 112, 0.2, 40.0, None),           # configs/cfg_voc21.py: prob_thd 0.2
    "context59": (336, 336, 112, None, 40.0, None),    # configs/cfg_context59.py
    "context60": (336, 336, 112, 0.15, 40.0, None),    # configs/cfg_context60.py: prob_thd 0.15
    "coco-stuff": (336, 336, 112, None, 40.0, None),   # configs/cfg_coco_stuff164k.py
    "coco-object": (336, 336, 112, 0.25, 40.0, None),  # configs/cfg_coco_object.py: prob_thd 0.25
    "cityscapes": (448, 224, 112, None, 40.0, None),   # configs/cfg_city_scapes.py: Resize (2048, 448), slide 224/112
    "ade20k": (448, 336, 112, None, 40.0, None),       # configs/cfg_ade20k.py: Resize (2048, 448)
})
_CORRCLIP = _family("corrclip", _CORRCLIP_REPO, "CorrCLIPv1/configs", "corrclip", {
    "voc20": (336, 336, 112, None, 40.0, None),        # CorrCLIPv1/configs/cfg_voc20.py
    "voc": (336, 336, 112, 0.2, 40.0, None),           # CorrCLIPv1/configs/cfg_voc21.py: prob_thd 0.2
    "context59": (336, 336, 112, None, 40.0, None),    # CorrCLIPv1/configs/cfg_context59.py
    "context60": (336, 336, 112, 0.15, 40.0, None),    # CorrCLIPv1/configs/cfg_context60.py: prob_thd 0.15
    "coco-stuff": (336, 336, 112, None, 40.0, None),   # CorrCLIPv1/configs/cfg_coco_stuff164k.py
    "coco-object": (336, 336, 112, 0.25, 40.0, None),  # CorrCLIPv1/configs/cfg_coco_object.py: prob_thd 0.25
    "cityscapes": (448, 224, 112, None, 40.0, None),   # CorrCLIPv1/configs/cfg_city_scapes.py: (2048, 448), 224/112
    "ade20k": (448, 336, 112, None, 40.0, None),       # CorrCLIPv1/configs/cfg_ade20k.py: Resize (2048, 448)
})

#: protocol name -> dataset -> settings. ``tcl`` and ``sclip`` are the two families' reference protocols.
PROTOCOLS: dict[str, dict[str, ProtocolSettings]] = {
    "tcl": {d: _tcl(d) for d in BENCHMARKS},
    "sclip": _SCLIP,
    "naclip": _NACLIP,
    "proxyclip": _PROXYCLIP,
    "corrclip": _CORRCLIP,
}


#: Each protocol's settings for a dataset outside its table (the parts world, an examples folder): the
#: repository's model defaults — ``(short side, crop, stride, prob_thd, logit_scale, source)`` — and the
#: Resize most of its configs use. ``tcl`` uses protoseg's defaults (:func:`_tcl`).
_MODEL_DEFAULTS: dict[str, tuple[int, int, int, float, float, str]] = {
    "sclip": (336, 224, 112, 0.0, 40.0, f"{_SCLIP_REPO}:clip_segmentor.py CLIPForSegmentation defaults "
                                        "(prob_thd 0.0, logit_scale 40, slide 224/112); Resize (2048, 336) of "
                                        "most configs"),
    "naclip": (336, 224, 112, 0.0, 40.0, f"{_NACLIP_REPO}:naclip.py NACLIP defaults (prob_thd 0.0, "
                                          "logit_scale 40, slide 224/112); Resize (2048, 336) of most configs"),
    "proxyclip": (336, 336, 112, 0.0, 40.0, f"{_PROXYCLIP_REPO}:proxyclip_segmentor.py defaults (prob_thd 0.0, "
                                             "logit_scale 40, slide 336/112); Resize (2048, 336) of most configs"),
    "corrclip": (336, 336, 112, 0.0, 40.0, f"{_CORRCLIP_REPO}:CorrCLIPv1/corrclip_segmentor.py defaults "
                                           "(prob_thd 0.0, logit_scale 40, slide 336/112); Resize (2048, 336) "
                                           "of most configs"),
}


def protocol_settings(protocol: str, dataset: str, has_background: bool | None = None) -> ProtocolSettings:
    """The settings of ``dataset`` under ``protocol`` (a key of :data:`PROTOCOLS`).

    For a dataset outside the protocol's table (``parts-world``, ``examples``), give ``has_background``
    (whether its class 0 is background) to get the protocol's defaults: protoseg's for ``tcl``, the
    repository's model defaults for the SCLIP family (background by probability with threshold 0.0, i.e.
    only where a background name wins; the dataset's own class names).
    """
    try:
        table = PROTOCOLS[protocol]
    except KeyError:
        raise ProtosegError(f"unknown protocol {protocol!r}; choose one of: {', '.join(PROTOCOLS)}") from None
    if dataset in table:
        return table[dataset]
    if has_background is None or dataset in BENCHMARKS or dataset not in DATASET_NAMES:
        raise ProtosegError(
            f"protocol {protocol!r} has no settings for dataset {dataset!r}; it covers: {', '.join(table)}"
        )
    if protocol == "tcl":
        return _tcl(dataset, has_background)
    short, crop, stride, threshold, logit_scale, source = _MODEL_DEFAULTS[protocol]
    return ProtocolSettings(
        name=protocol, family="sclip", dataset=dataset, scale=(2048, short), crop=crop, stride=stride,
        background="probability" if has_background else "none", threshold=threshold if has_background else None,
        logit_scale=logit_scale, area_threshold=None, names="mmseg", source=source,
    )


def protocol_family(protocol: str) -> str:
    """``"tcl"`` or ``"sclip"``: the family a protocol name (or a family name) belongs to."""
    if protocol in FAMILIES:
        return protocol
    try:
        return next(iter(PROTOCOLS[protocol].values())).family
    except KeyError:
        raise ProtosegError(
            f"unknown protocol {protocol!r}; choose one of: {', '.join(PROTOCOLS)}"
        ) from None
