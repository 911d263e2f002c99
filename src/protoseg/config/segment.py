"""Named configurations: which models, which matcher, which protocol settings.

A preset is plain data; ``Segmenter.from_preset(name, **overrides)`` turns it into a working segmenter.
Dataset-specific protocol settings (superpixel parameters, beta, K, background threshold) are applied on
top by :mod:`protoseg.datasets` presets.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from protoseg.errors import ProtosegError
from protoseg.regions import SuperpixelParams
from protoseg.testing.tiny import tiny_model_path


@dataclass(frozen=True)
class Preset:
    """Everything that defines a segmentation method configuration.

    Attributes:
        features: dense feature backend: hub id or local folder of a ``Dinov2Model``, or ``"handcrafted"``.
        text: CLIP hub id / folder for text keys and the global term, or ``None`` (no CLIP).
        sam: SAM hub id / folder for proposal-based matchers, or ``None``.
        matcher: registered matcher name (:data:`protoseg.match.MATCHERS`).
        matcher_options: keyword options of that matcher.
        superpixels: Felzenszwalb parameters.
        scale: mmcv keep-ratio resize target ``(long_max, short_max)``.
        crop, stride: sliding-window size and stride.
        background_threshold: constant background score used when background is requested.
    """

    name: str
    description: str
    features: str
    matcher: str
    text: str | None = None
    sam: str | None = None
    matcher_options: dict[str, Any] = field(default_factory=dict)
    superpixels: SuperpixelParams = SuperpixelParams()
    scale: tuple[int, int] = (2048, 448)
    crop: int = 448
    stride: int = 224
    background_threshold: float = 0.4

    def with_options(self, **options: Any) -> Preset:
        """A copy with matcher options updated."""
        return replace(self, matcher_options={**self.matcher_options, **options})


_FREEDA_OPTIONS: dict[str, Any] = {"k": 350, "beta": 0.8, "aggregation": "mean", "pooling": "point",
                                   "use_superpixels": True, "use_global": True}

PRESETS: dict[str, Preset] = {
    "freeda-b": Preset(
        name="freeda-b", description="FreeDA ViT-B: DINOv2-B/14 + CLIP ViT-B/16, superpixels, K=350, beta=0.8",
        features="facebook/dinov2-base", text="openai/clip-vit-base-patch16", matcher="freeda",
        matcher_options=dict(_FREEDA_OPTIONS)),
    "freeda-l": Preset(
        name="freeda-l", description="FreeDA ViT-L: DINOv2-L/14 + CLIP ViT-L/14, superpixels, K=350, beta=0.8",
        features="facebook/dinov2-large", text="openai/clip-vit-large-patch14", matcher="freeda",
        matcher_options=dict(_FREEDA_OPTIONS)),
    "handcrafted": Preset(
        name="handcrafted",
        description="FreeDA local matching on hand-crafted colour/texture features, no CLIP (parts world)",
        features="handcrafted", text=None, matcher="freeda",
        # Parts-world classes come in several looks (a car is red, blue, yellow or white): k-means keeps
        # one centroid per look where a single mean would blend them.
        matcher_options={**_FREEDA_OPTIONS, "use_global": False, "beta": 1.0, "pooling": "area",
                         "aggregation": "kmeans", "clusters": 8},
        superpixels=SuperpixelParams(scale=100.0, sigma=0.5, min_size=20)),
    "dpsm": Preset(
        name="dpsm",
        description="DPSM sub-region matching: SAM ViT-B proposals (32x32 points) x Felzenszwalb "
                    "sub-regions, DINOv2-B part prototypes, log-domain Sinkhorn with a dustbin, no CLIP",
        features="facebook/dinov2-base", text=None, sam="facebook/sam-vit-base", matcher="dpsm",
        matcher_options={"mode": "subregion-ot", "proposals": "sam", "epsilon": 0.05, "iterations": 1000,
                         "stop_thr": 1e-4, "pooling": "area", "composition": "mean",
                         "fallback": "superpixels"}),
    # Smoke-test presets for banks from `protoseg build-bank --preset freeda-tiny|dpsm-tiny`: the tiny random
    # models (protoseg.testing.tiny, created by that command under $PROTOSEG_CACHE/tiny); results are noise.
    "freeda-tiny": Preset(
        name="freeda-tiny", description="smoke test: FreeDA matching with the tiny random DINOv2 + CLIP",
        features=str(tiny_model_path("features")), text=str(tiny_model_path("text")), matcher="freeda",
        matcher_options=dict(_FREEDA_OPTIONS)),
    "dpsm-tiny": Preset(
        name="dpsm-tiny",
        description="smoke test: DPSM sub-region OT on a dpsm-tiny bank, tiny random DINOv2, superpixel "
                    "proposals (no SAM)",
        features=str(tiny_model_path("features")), text=None, matcher="dpsm",
        matcher_options={"mode": "subregion-ot", "proposals": "superpixels", "epsilon": 0.05,
                         "iterations": 1000, "stop_thr": 1e-4, "pooling": "area"}),
}


def get_preset(name: str, **overrides: Any) -> Preset:
    """Look up a preset and apply field overrides (``matcher_options`` entries are merged)."""
    try:
        preset = PRESETS[name]
    except KeyError:
        raise ProtosegError(f"unknown preset {name!r}; choose one of: {', '.join(sorted(PRESETS))}") from None
    options = overrides.pop("matcher_options", None)
    if overrides:
        preset = replace(preset, **overrides)
    if options:
        preset = preset.with_options(**options)
    return preset
