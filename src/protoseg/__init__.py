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
    from protoseg.bank import PrototypeBank, load_bank
    from protoseg.eval.runner import EvalSettings, run_benchmark
    from protoseg.images import load_image
    from protoseg.offline import build_bank
    from protoseg.segment import Segmentation, Segmenter

#: public name -> the module that defines it.
_PUBLIC = {
    "Segmenter": "protoseg.segment",
    "Segmentation": "protoseg.segment",
    "PrototypeBank": "protoseg.bank",
    "load_bank": "protoseg.bank",
    "build_bank": "protoseg.offline",
    "EvalSettings": "protoseg.eval.runner",
    "run_benchmark": "protoseg.eval.runner",
    "load_image": "protoseg.images",
}

__all__ = ["EvalSettings", "ProtosegError", "PrototypeBank", "Segmentation", "Segmenter", "__version__", "build_bank",
           "load_bank", "load_image", "run_benchmark"]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'protoseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
