"""Per-benchmark method settings (FreeDA's superpixels, beta, K, background), applied on top of a model preset.

Values follow the FreeDA fact sheet (section 1.2) and the paper:

- Felzenszwalb ``scale / sigma / min_size`` from the released ``freeda_<ds>.yml``. No settings were
  released for ``voc``, ``context60`` and ``coco-object``; they reuse the setting of the same images
  without/with background (``voc20``, ``context59``, ``coco-stuff``).
- ``beta``: the paper's value (0.7 for Pascal VOC, 0.8 otherwise). The released code uses 0.8 everywhere;
  pass ``beta_source="code"`` (CLI ``--beta-source code``) for that.
- ``k = 350``; background threshold 0.4 (the only value in the released code); templates: the 7
  "sub-ImageNet" templates (the FreeDA matcher's text encoder default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protoseg.config.segment import Preset, get_preset
from protoseg.config.superpixels import SuperpixelParams
from protoseg.errors import ProtosegError
from protoseg.eval.protocols import WITH_BACKGROUND


@dataclass(frozen=True)
class DatasetPreset:
    """Protocol settings of one benchmark.

    Attributes:
        dataset: the protoseg dataset name these settings belong to.
        superpixels: Felzenszwalb parameters.
        beta: paper weight of the local term; ``beta_code`` the released code's value.
        k: retrieved prototypes per class.
        background_threshold: constant background score (used when the dataset has a background class).
        templates: prompt-template set name (informational; the matcher's default).
        model_preset: model preset used when ``--preset`` is not given.
    """

    dataset: str
    superpixels: SuperpixelParams
    beta: float
    beta_code: float = 0.8
    k: int = 350
    background_threshold: float = 0.4
    templates: str = "sub_imagenet"
    model_preset: str = "freeda-l"
    notes: str = ""

    @property
    def background(self) -> bool:
        """Whether the benchmark has a background class (:data:`~protoseg.eval.protocols.WITH_BACKGROUND`;
        ``False`` for a folder whose class list is on disk, ``examples``)."""
        return self.dataset in WITH_BACKGROUND

    def apply(self, preset_name: str, beta_source: str = "paper", **overrides: Any) -> Preset:
        """The model preset ``preset_name`` with this benchmark's settings (``overrides`` win)."""
        if beta_source not in ("paper", "code"):
            raise ProtosegError(f"beta source must be 'paper' or 'code', got {beta_source!r}")
        base = get_preset(preset_name)
        options: dict[str, Any] = {}
        if base.matcher == "freeda":
            options = {"k": self.k, "beta": self.beta if beta_source == "paper" else self.beta_code}
            if not base.matcher_options.use_global:
                options.pop("beta")  # no global term: beta has no meaning for this preset
        options.update(overrides.pop("matcher_options", {}) or {})
        fields: dict[str, Any] = {
            "superpixels": self.superpixels,
            "background_threshold": self.background_threshold,
        }
        fields.update(overrides)
        return get_preset(preset_name, matcher_options=options, **fields)


_SP_DEFAULT = SuperpixelParams(scale=100.0, sigma=1.0, min_size=20)
_SP_VOC = SuperpixelParams(scale=100.0, sigma=0.7, min_size=20)
_SP_STUFF = SuperpixelParams(scale=100.0, sigma=1.0, min_size=100)
_SP_CITY = SuperpixelParams(scale=20.0, sigma=0.5, min_size=50)

DATASET_PRESETS: dict[str, DatasetPreset] = {
    "voc20": DatasetPreset("voc20", _SP_VOC, beta=0.7),
    "voc": DatasetPreset("voc", _SP_VOC, beta=0.7, notes="superpixels: voc20's (none released)"),
    "context59": DatasetPreset("context59", _SP_DEFAULT, beta=0.8),
    "context60": DatasetPreset(
        "context60", _SP_DEFAULT, beta=0.8, notes="superpixels: context59's (none released)"
    ),
    "coco-stuff": DatasetPreset("coco-stuff", _SP_STUFF, beta=0.8),
    "coco-object": DatasetPreset(
        "coco-object", _SP_STUFF, beta=0.8, notes="superpixels: coco-stuff's (none released)"
    ),
    "cityscapes": DatasetPreset("cityscapes", _SP_CITY, beta=0.8),
    "ade20k": DatasetPreset("ade20k", _SP_DEFAULT, beta=0.8),
    "examples": DatasetPreset(
        "examples", _SP_DEFAULT, beta=0.8, notes="generic folder: FreeDA defaults; pick --preset"
    ),
    "parts-world": DatasetPreset(
        "parts-world", SuperpixelParams(scale=100.0, sigma=0.5, min_size=20),
        beta=1.0,
        beta_code=1.0,
        model_preset="handcrafted",
        notes="procedural benchmark; hand-crafted features, no CLIP",
    ),
    "recombined-world": DatasetPreset(
        "recombined-world", SuperpixelParams(scale=100.0, sigma=0.5, min_size=20),
        beta=0.8,  # unused: the handcrafted presets have no global (CLIP) term
        model_preset="handcrafted",
        notes="procedural benchmark (looks, recombined parts, look-alike parts); hand-crafted features, no CLIP",
    ),
}


def dataset_preset(name: str) -> DatasetPreset:
    """The method settings of dataset ``name`` (a key of :data:`DATASET_PRESETS`).

    Raises:
        ProtosegError: a dataset without settings.
    """
    try:
        return DATASET_PRESETS[name]
    except KeyError:
        raise ProtosegError(
            f"no protocol preset for dataset {name!r}; known: {', '.join(DATASET_PRESETS)}"
        ) from None
