"""protoseg: training-free open-vocabulary semantic segmentation with generated visual prototypes."""

from protoseg.errors import ProtosegError

__all__ = ["ProtosegError", "Segmenter", "PrototypeBank"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy imports keep `import protoseg` (and the CLI's start-up) light.
    if name == "Segmenter":
        from protoseg.segment import Segmenter

        return Segmenter
    if name == "PrototypeBank":
        from protoseg.bank import PrototypeBank

        return PrototypeBank
    raise AttributeError(name)
