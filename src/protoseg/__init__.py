"""protoseg: training-free open-vocabulary semantic segmentation with generated visual prototypes.

The public API::

    from protoseg import Segmenter, load_image
    seg = Segmenter.from_pretrained("freeda-l", device="cuda")
    result = seg.segment(load_image("photo.jpg"), ["road", "car", "tree", "sky"])

Names are imported on first use: ``import protoseg`` takes 0.07 s, the segmenter (torch, transformers) 2 s,
and the command line starts without the latter.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from protoseg.errors import ProtosegError
from protoseg.version import __version__

if TYPE_CHECKING:
    from protoseg.bank import PrototypeBank
    from protoseg.bank_source import open_bank as load_bank
    from protoseg.eval.runner import EvalSettings, run_benchmark
    from protoseg.images import load_image
    from protoseg.offline import build_bank
    from protoseg.segment import Segmentation, Segmenter

#: public name -> (module, attribute). ``load_bank`` reads a folder, an ``hf://`` address or a published
#: bank's name (``freeda-l``, fetched on first use).
_PUBLIC = {
    "Segmenter": ("protoseg.segment", "Segmenter"),
    "Segmentation": ("protoseg.segment", "Segmentation"),
    "PrototypeBank": ("protoseg.bank", "PrototypeBank"),
    "load_bank": ("protoseg.bank_source", "open_bank"),
    "build_bank": ("protoseg.offline", "build_bank"),
    "EvalSettings": ("protoseg.eval.runner", "EvalSettings"),
    "run_benchmark": ("protoseg.eval.runner", "run_benchmark"),
    "load_image": ("protoseg.images", "load_image"),
}

__all__ = ["EvalSettings", "ProtosegError", "PrototypeBank", "Segmentation", "Segmenter", "__version__", "build_bank",
           "load_bank", "load_image", "run_benchmark"]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        module, attribute = _PUBLIC[name]
        return getattr(import_module(module), attribute)
    raise AttributeError(f"module 'protoseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
