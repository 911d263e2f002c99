"""Named configurations: which models, which matcher, which protocol settings.

A preset is plain data; ``Segmenter.from_preset(name, **overrides)`` turns it into a working segmenter.
Dataset-specific protocol settings (superpixel parameters, beta, K, background threshold) are applied on
top by :mod:`protoseg.datasets` presets.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from protoseg.config.fields import checked, from_dict, override, require, to_dict
from protoseg.config.matchers import DpsmOptions, FreedaOptions, matcher_options
from protoseg.config.superpixels import SuperpixelParams
from protoseg.errors import ProtosegError

#: Feature backends that are test stand-ins, built for the procedural parts world (:mod:`protoseg.worlds`):
#: their labels mean nothing on other images (:attr:`Preset.synthetic`).
SYNTHETIC_FEATURES = ("handcrafted", "protoseg/handcrafted-v1")

#: Model field value naming the tiny random model of that role (:mod:`protoseg.testing.tiny`), made
#: when the model is first loaded.
TINY = "tiny"


@dataclass(frozen=True)
class Preset:
    """Everything that defines a segmentation method configuration.

    Attributes:
        features: dense feature backend: hub id or local folder of a ``Dinov2Model``, ``"handcrafted"``,
            or ``"tiny"``.
        text: CLIP hub id / folder for text keys and the global term, ``"tiny"``, or ``None`` (no CLIP).
        sam: SAM hub id / folder for proposal-based matchers, or ``None``.
        matcher: registered matcher name (:data:`protoseg.match.MATCHERS`).
        matcher_options: that matcher's typed options (:mod:`protoseg.config.matchers`); a dict of
            overrides of its defaults is accepted and converted.
        superpixels: Felzenszwalb parameters.
        scale: mmcv keep-ratio resize target ``(long_max, short_max)``.
        crop, stride: sliding-window size and stride.
        background_rule: how background is decided when it is requested
            (:meth:`protoseg.segment.Segmenter.segment`): ``"constant"`` — a constant score channel equal to
            ``background_threshold`` before the class scores (FreeDA); ``"probability"`` — a softmax over
            ``logit_scale`` × the scores of every queried name, background where the best class probability is
            below ``background_threshold`` (SCLIP family).
        background_threshold: the constant background score (``constant``) or the minimum best-class
            probability (``probability``, in [0, 1]).
        logit_scale: multiplier of the scores before the softmax of the ``probability`` rule.
        area_threshold: ``probability`` rule only: a class predicted on no more than this fraction of the
            image's non-background pixels is removed (SCLIP's ``area_thd``); ``None``: no such rule.

    The background fields of a benchmark protocol come from
    :meth:`protoseg.eval.protocols.ProtocolSettings.preset_overrides`.
    """

    name: str
    description: str
    features: str
    matcher: str
    text: str | None = None
    sam: str | None = None
    matcher_options: Any = None
    superpixels: SuperpixelParams = SuperpixelParams()
    scale: tuple[int, int] = (2048, 448)
    crop: int = 448
    stride: int = 224
    background_rule: Literal["constant", "probability"] = "constant"
    background_threshold: float = 0.4
    logit_scale: float = 40.0
    area_threshold: float | None = None

    def __post_init__(self) -> None:
        what = "preset field"
        checked(self, what)
        object.__setattr__(self, "matcher_options", matcher_options(self.matcher, self.matcher_options))
        if self.crop < 1 or self.stride < 1:
            raise ProtosegError(f"preset crop and stride must be >= 1; got {self.crop}, {self.stride}")
        require(self.logit_scale > 0, what, "logit_scale", "> 0", self.logit_scale)
        if self.background_rule == "probability":
            require(0.0 <= self.background_threshold <= 1.0, what, "background_threshold",
                    "a probability in [0, 1] with the probability background rule", self.background_threshold)
        require(self.area_threshold is None or self.background_rule == "probability", what, "area_threshold",
                "None unless background_rule is 'probability'", self.area_threshold)
        require(self.area_threshold is None or 0.0 <= self.area_threshold <= 1.0, what, "area_threshold",
                "in [0, 1] or None", self.area_threshold)

    @property
    def synthetic(self) -> bool:
        """Whether the feature backend is a parts-world test stand-in (``features="handcrafted"``): such a
        preset segments real photos only when asked to (``--allow-synthetic-backend``)."""
        return self.features in SYNTHETIC_FEATURES

    def with_options(self, **options: Any) -> Preset:
        """A copy with matcher options updated (validated)."""
        return replace(self, matcher_options=override(self.matcher_options, f"{self.matcher} option", **options))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data; :meth:`from_dict` reads it back."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preset:
        return from_dict(cls, data, "preset field")


_FREEDA = FreedaOptions(k=350, beta=0.8, aggregation="mean", pooling="point", use_superpixels=True,
                        use_global=True)

PRESETS: dict[str, Preset] = {
    "freeda-b": Preset(
        name="freeda-b", description="FreeDA ViT-B: DINOv2-B/14 + CLIP ViT-B/16, superpixels, K=350, beta=0.8",
        features="facebook/dinov2-base", text="openai/clip-vit-base-patch16", matcher="freeda",
        matcher_options=_FREEDA),
    "freeda-l": Preset(
        name="freeda-l", description="FreeDA ViT-L: DINOv2-L/14 + CLIP ViT-L/14, superpixels, K=350, beta=0.8",
        features="facebook/dinov2-large", text="openai/clip-vit-large-patch14", matcher="freeda",
        matcher_options=_FREEDA),
    "handcrafted": Preset(
        name="handcrafted",
        description="FreeDA local matching on hand-crafted colour/texture features, no CLIP (parts world)",
        features="handcrafted", text=None, matcher="freeda",
        # Parts-world classes come in several looks (a car is red, blue, yellow or white): k-means keeps
        # one centroid per look where a single mean would blend them.
        matcher_options=replace(_FREEDA, use_global=False, beta=1.0, pooling="area", aggregation="kmeans",
                                clusters=8),
        superpixels=SuperpixelParams(scale=100.0, sigma=0.5, min_size=20)),
    "dpsm": Preset(
        name="dpsm",
        description="DPSM sub-region matching: SAM ViT-B proposals (32x32 points) x Felzenszwalb "
                    "sub-regions, DINOv2-B part prototypes, log-domain Sinkhorn with a dustbin, no CLIP",
        features="facebook/dinov2-base", text=None, sam="facebook/sam-vit-base", matcher="dpsm",
        matcher_options=DpsmOptions(mode="subregion-ot", proposals="sam", epsilon=0.05, iterations=1000,
                                    stop_thr=1e-4, pooling="area", composition="mean", fallback="superpixels")),
    "handcrafted-dpsm": Preset(
        name="handcrafted-dpsm",
        description="DPSM sub-region transport on hand-crafted colour/texture features (parts worlds), "
                    "coarse superpixel proposals, exact transport, one supply unit per support view, capacity 16",
        features="handcrafted", text=None, sam=None, matcher="dpsm",
        # Chosen on the dev splits of both worlds (benchmarks/dpsm_tune.py; docs/dpsm.md, "The handcrafted-dpsm
        # preset"; held-out tables in docs/ablations).
        matcher_options=DpsmOptions(mode="subregion-ot", proposals="superpixels", emd_solver="exact",
                                    supply="view", capacity=16.0, pooling="area", composition="mean",
                                    fallback="superpixels"),
        superpixels=SuperpixelParams(scale=100.0, sigma=0.5, min_size=20)),
    # Smoke-test presets for banks from `protoseg build-bank --preset freeda-tiny|dpsm-tiny`: the tiny random
    # models (protoseg.testing.tiny, made on first load under $PROTOSEG_CACHE/tiny); results are noise.
    "freeda-tiny": Preset(
        name="freeda-tiny", description="smoke test: FreeDA matching with the tiny random DINOv2 + CLIP",
        features=TINY, text=TINY, matcher="freeda",
        matcher_options=_FREEDA),
    "dpsm-tiny": Preset(
        name="dpsm-tiny",
        description="smoke test: DPSM sub-region OT on a dpsm-tiny bank, tiny random DINOv2, superpixel "
                    "proposals (no SAM)",
        features=TINY, text=None, matcher="dpsm",
        matcher_options=DpsmOptions(mode="subregion-ot", proposals="superpixels", epsilon=0.05,
                                    iterations=1000, stop_thr=1e-4, pooling="area")),
}


def get_preset(name: str, **overrides: Any) -> Preset:
    """Look up a preset and apply field overrides (:func:`protoseg.config.fields.override`'s rule).

    ``matcher_options`` (a dict) is merged into the preset's options; switching ``matcher`` starts from
    that matcher's defaults.
    """
    try:
        preset = PRESETS[name]
    except KeyError:
        raise ProtosegError(f"unknown preset {name!r}; choose one of: {', '.join(sorted(PRESETS))}") from None
    options = overrides.pop("matcher_options", None) or {}
    matcher = overrides.get("matcher")
    if matcher is not None and matcher != preset.matcher:
        overrides["matcher_options"] = matcher_options(matcher)
    preset = override(preset, "preset field", **overrides)
    return preset.with_options(**options) if options else preset
