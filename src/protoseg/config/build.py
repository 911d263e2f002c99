"""Named configurations of the offline stage (``protoseg build-bank --preset NAME``).

A build preset is plain data. Model fields are hub ids or local folders; the value ``"tiny"`` means the
tiny random model of that role (:mod:`protoseg.testing.tiny`), created on first use, so the ``*-tiny``
presets run the whole chain on a CPU in minutes without any download (their banks carry no meaning;
they exist to smoke-test an install). Each build preset names the segmentation preset
(:mod:`protoseg.config.segment`) that uses the same feature encoder, for ``protoseg segment --preset``.

What a bank is made from is a *source record*, one per builder (:class:`FreedaSource`,
:class:`DpsmSource`, :class:`ExamplesSource`, :class:`FreedaImportSource`), validated when it is made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from protoseg.classes import validate_classes
from protoseg.config.fields import checked, override, require, to_dict
from protoseg.config.superpixels import SuperpixelParams
from protoseg.errors import ProtosegError


@dataclass(frozen=True)
class BuildPreset:
    """Everything that defines how a bank is built.

    Attributes:
        name, description: identity.
        method: the builder (:data:`protoseg.offline.BUILDERS`): ``"freeda"``, ``"dpsm"`` (Stable
            Diffusion), ``"examples"`` (labelled images, see :func:`examples_preset`) or
            ``"freeda-import"`` (FreeDA's released data).
        segment_preset: the segmentation preset that reads this bank.
        diffusion: Stable Diffusion hub id / folder (``"tiny"``: tiny random pipeline); ``None`` for
            builders that synthesise nothing.
        features: DINOv2 hub id / folder (``"tiny"``).
        text: CLIP hub id / folder for FreeDA's text keys (``"tiny"``); unused by DPSM.
        steps, guidance, height, width, scheduler: synthesis (``scheduler=None`` keeps the pipeline's).
        batch_size: images generated per diffusion batch (``"freeda-import"``: files per work item).
        gamma: foreground threshold of the attention masks (FreeDA 0.45, DPSM 0.4).
        pooling: how masks are resized to the feature grid (``"point"``: bilinear, ``align_corners=True``;
            ``"area"``: area fractions), see :mod:`protoseg.regions`.
        alpha: FreeDA key weight ``k = α·t̂(noun) + (1-α)·ĉ(caption)``.
        nouns: FreeDA noun extractor (``"spacy"`` or ``"lexicon"``).
        index_kind: faiss index of the FreeDA keys (``"flat"`` exact, as the paper; or ``"hnsw"``).
        prompts: DPSM prompt source: ``"llm"`` (K descriptions x 4 attributes per class) or ``"naive"``
            (``"a good photo of a {}"``, the ablation's first row).
        llm: DPSM chat model spec for :func:`protoseg.generate.llm.load_llm`.
        k: DPSM descriptions per attribute (``N = 4K`` images per class; with ``prompts="naive"``,
            ``N = 4K`` copies of the naive prompt).
        kappa: DPSM scale-up factor (``κN`` images per class).
        clustering: ``"coarse-fine"``, ``"plain"`` or ``"none"`` (:mod:`protoseg.offline.clustering`).
        superpixels: Felzenszwalb parameters of the DPSM parts.
        guide: DPSM whole-level feature that drives the coarse clustering: ``"unet"`` (eq. 2: SD-UNet
            decoder features pooled on the foreground) or ``"dinov2"``.
        unet_block, unet_timestep: the eq. 2 feature map is the output of SD-UNet up (decoder) block
            ``unet_block`` at the denoising step whose timestep is closest to ``unet_timestep`` (the
            paper names the UNet only; see :mod:`protoseg.generate.synthesis`).
        bank_dtype: storage dtype of the prototypes.
        scale, crop, stride, min_pixels: how labelled examples are viewed (the test protocol's resize and
            windows) and the pixels a class needs in a window to give prototypes (``"examples"`` only).
    """

    name: str
    description: str
    method: Literal["freeda", "dpsm", "examples", "freeda-import"]
    segment_preset: str
    diffusion: str | None
    features: str
    text: str | None = None
    steps: int = 50
    guidance: float = 7.5
    height: int = 512
    width: int = 512
    scheduler: str | None = None
    batch_size: int = 4
    gamma: float = 0.45
    pooling: Literal["point", "area"] = "point"
    alpha: float = 0.9
    nouns: Literal["spacy", "lexicon"] = "spacy"
    index_kind: Literal["flat", "hnsw"] = "flat"
    prompts: Literal["llm", "naive"] = "llm"
    llm: str | None = None
    k: int = 16
    kappa: int = 8
    clustering: Literal["coarse-fine", "plain", "none"] = "coarse-fine"
    superpixels: SuperpixelParams = field(default_factory=SuperpixelParams)
    guide: Literal["unet", "dinov2"] = "unet"
    unet_block: int = 1
    unet_timestep: int = 261
    bank_dtype: Literal["float16", "float32"] = "float16"
    scale: tuple[int, int] = (2048, 448)
    crop: int = 448
    stride: int = 224
    min_pixels: int = 64

    def __post_init__(self) -> None:
        checked(self, "build setting")
        for name in ("k", "kappa", "batch_size", "steps", "height", "width", "crop", "stride", "min_pixels"):
            require(getattr(self, name) >= 1, "build setting", name, ">= 1", getattr(self, name))
        require(0.0 <= self.alpha <= 1.0, "build setting", "alpha", "in [0, 1]", self.alpha)
        if self.method == "freeda" and not self.text:
            raise ProtosegError("invalid build settings: a FreeDA build needs a CLIP text model (field text)")
        if self.method in ("freeda", "dpsm") and not self.diffusion:
            raise ProtosegError(f"invalid build settings: a {self.method} build needs a diffusion model "
                                "(field diffusion)")

    @property
    def images_per_class(self) -> int:
        """``N = 4K``: support images per class before scaling up (DPSM)."""
        return 4 * self.k

    def settings(self) -> dict[str, Any]:
        """The preset as JSON-ready data (recorded in the bank manifest and the work-dir fingerprint)."""
        return to_dict(self)


_TINY_SYNTHESIS: dict[str, Any] = dict(diffusion="tiny", features="tiny", steps=4, height=64, width=64,
                                       batch_size=4, bank_dtype="float32")

BUILD_PRESETS: dict[str, BuildPreset] = {
    "freeda-b": BuildPreset(
        name="freeda-b", method="freeda", segment_preset="freeda-b",
        description="FreeDA ViT-B bank: SD 2.1-base, 50 steps, gamma 0.45, DINOv2-B, CLIP ViT-B/16 keys, "
                    "alpha 0.9",
        diffusion="stabilityai/stable-diffusion-2-1-base", features="facebook/dinov2-base",
        text="openai/clip-vit-base-patch16", gamma=0.45, pooling="point"),
    "freeda-l": BuildPreset(
        name="freeda-l", method="freeda", segment_preset="freeda-l",
        description="FreeDA ViT-L bank: SD 2.1-base, 50 steps, gamma 0.45, DINOv2-L, CLIP ViT-L/14 keys, "
                    "alpha 0.9",
        diffusion="stabilityai/stable-diffusion-2-1-base", features="facebook/dinov2-large",
        text="openai/clip-vit-large-patch14", gamma=0.45, pooling="point"),
    "dpsm": BuildPreset(
        name="dpsm", method="dpsm", segment_preset="dpsm",
        description="DPSM bank: Llama-3-8B-Instruct descriptions (K=16 x 4 attributes), SD 2-base, 50 steps, "
                    "kappa 8, gamma 0.4, DINOv2-B parts, coarse-fine clustering",
        diffusion="stabilityai/stable-diffusion-2-base", features="facebook/dinov2-base", gamma=0.4,
        pooling="area", prompts="llm", llm="hf:meta-llama/Meta-Llama-3-8B-Instruct", k=16, kappa=8),
    "freeda-tiny": BuildPreset(
        name="freeda-tiny", method="freeda", segment_preset="freeda-tiny",
        description="smoke test: the FreeDA chain with tiny random SD / DINOv2 / CLIP, lexicon nouns, CPU",
        text="tiny", nouns="lexicon", gamma=0.45, pooling="point", **_TINY_SYNTHESIS),
    "dpsm-tiny": BuildPreset(
        name="dpsm-tiny", method="dpsm", segment_preset="dpsm-tiny",
        description="smoke test: the DPSM chain with tiny random SD / DINOv2, naive prompts (no LLM), "
                    "K=1 (N=4), kappa 2, CPU",
        prompts="naive", k=1, kappa=2, gamma=0.4, pooling="area",
        superpixels=SuperpixelParams(scale=100.0, sigma=0.5, min_size=64), **_TINY_SYNTHESIS),
}


#: The build preset of each method when only ``--method`` is given.
_METHOD_PRESETS = {"freeda": "freeda-b", "dpsm": "dpsm"}


def resolve_build_preset(method: str | None, preset: str | None, **overrides: Any) -> BuildPreset:
    """The build preset named ``preset`` (default: that of ``method``), with ``overrides``; ``method``,
    when given with ``preset``, must be the preset's.

    Raises:
        ProtosegError: neither is given, an unknown method or preset, or a preset of another method.
    """
    if preset is None:
        if method is None:
            raise ProtosegError("pass --method freeda|dpsm or --preset NAME")
        preset = _METHOD_PRESETS.get(method)
        if preset is None:
            raise ProtosegError(f"unknown method {method!r}; use freeda or dpsm")
    chosen = get_build_preset(preset, **overrides)
    if method is not None and method != chosen.method:
        raise ProtosegError(f"preset {chosen.name!r} builds a {chosen.method} bank, not {method}")
    return chosen


def get_build_preset(name: str, **overrides: Any) -> BuildPreset:
    """Look up a build preset and replace fields; unknown names and values raise :class:`ProtosegError`."""
    try:
        preset = BUILD_PRESETS[name]
    except KeyError:
        raise ProtosegError(f"unknown build preset {name!r}; choose one of: "
                            f"{', '.join(sorted(BUILD_PRESETS))}") from None
    return override(preset, "build setting", **overrides)


def examples_preset(segment: Any, bank_dtype: str = "float16") -> BuildPreset:
    """The ``"examples"`` build settings that make a bank for segmentation preset ``segment``
    (:class:`protoseg.config.segment.Preset`): its models, superpixels, region pooling and windows."""
    pooling = getattr(segment.matcher_options, "pooling", "area")
    return BuildPreset(
        name=f"examples:{segment.name}", method="examples", segment_preset=segment.name,
        description=f"bank from labelled examples for preset {segment.name}", diffusion=None,
        features=segment.features, text=segment.text, pooling=pooling, superpixels=segment.superpixels,
        scale=segment.scale, crop=segment.crop, stride=segment.stride, bank_dtype=bank_dtype)


# ---------------------------------------------------------------------------------------------- sources
def _missing(record: Any) -> ProtosegError:
    return ProtosegError(f"a {record.method} bank is built from {record.needs}")


@dataclass(frozen=True)
class FreedaSource:
    """What a FreeDA bank is made from: a caption file, or nouns without one.

    Attributes:
        captions: COCO-Captions JSON or a text file, one caption a line.
        nouns: nouns to make prototypes of without a caption source (captions written for them,
            :func:`protoseg.generate.captions.noun_captions`; prototypes made on demand).
        limit: use only the first ``limit`` captions.
    """

    method: ClassVar[str] = "freeda"
    needs: ClassVar[str] = "captions: pass --captions FILE (COCO-Captions JSON or one caption a line)"

    captions: Path | None = None
    nouns: tuple[str, ...] | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.captions is None and self.nouns is None:
            raise _missing(self)
        if self.captions is not None and self.nouns is not None:
            raise ProtosegError("a FreeDA bank is built from captions or from nouns, not both")
        if self.captions is not None:
            object.__setattr__(self, "captions", Path(self.captions))
        if self.nouns is not None:
            object.__setattr__(self, "nouns", tuple(validate_classes(list(self.nouns))))
        if self.limit is not None:
            require(isinstance(self.limit, int) and self.limit >= 1, "freeda source", "limit", ">= 1", self.limit)


@dataclass(frozen=True)
class DpsmSource:
    """What a DPSM bank is made from: class names.

    Attributes:
        classes: the class names.
        llm: chat model spec overriding the preset's.
        descriptions: the editable description cache (default ``OUT.descriptions.json``).
    """

    method: ClassVar[str] = "dpsm"
    needs: ClassVar[str] = 'class names: pass --classes "a, b" or --classes-file F'

    classes: tuple[str, ...] = ()
    llm: str | None = None
    descriptions: Path | None = None

    def __post_init__(self) -> None:
        if not self.classes:
            raise _missing(self)
        object.__setattr__(self, "classes", tuple(validate_classes(list(self.classes))))
        if self.descriptions is not None:
            object.__setattr__(self, "descriptions", Path(self.descriptions))


@dataclass(frozen=True)
class ExamplesSource:
    """What a bank of labelled examples is made from: a folder with ``classes.txt``, ``images/`` and
    ``masks/`` (:mod:`protoseg.offline.examples`)."""

    method: ClassVar[str] = "examples"
    needs: ClassVar[str] = "a labelled examples folder (classes.txt, images/, masks/)"

    examples: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "examples", Path(self.examples))


@dataclass(frozen=True)
class FreedaImportSource:
    """FreeDA's release: its ``prototype_embeddings/`` folder and ``knn.index``."""

    method: ClassVar[str] = "freeda-import"
    needs: ClassVar[str] = "FreeDA's release: its prototype_embeddings/ folder and knn.index"

    embeddings: Path
    index: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "embeddings", Path(self.embeddings))
        object.__setattr__(self, "index", Path(self.index))


#: Any builder's source record.
BuildSource = FreedaSource | DpsmSource | ExamplesSource | FreedaImportSource
