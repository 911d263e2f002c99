"""Label maps on disk: predictions written as PNGs, and a folder of them scored as a predictor.

A pixel holds the index of a class in the dataset's class list (0-based; index 0 = background where the
dataset has one), what ``protoseg eval --list-classes`` prints.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from protoseg.atomic import write_bytes
from protoseg.datasets.base import SegDataset, label_size, read_label_png
from protoseg.errors import ProtosegError
from protoseg.runs import files_digest
from protoseg.viz import png_info


def save_label_png(labels: np.ndarray, path: Path, classes: list[str] | tuple[str, ...] | None = None) -> None:
    """Write class indices ``[H, W]`` as an 8-bit (or 16-bit, above 255) PNG, atomically; ``classes`` are
    recorded in the PNG's ``protoseg`` text chunk."""
    dtype = np.uint8 if labels.max(initial=0) <= 255 else np.uint16
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(labels.astype(dtype))).save(
        buf, format="PNG", pnginfo=png_info(list(classes or []), None))
    write_bytes(path, buf.getvalue())


class PredictionFolder:
    """Label-map PNGs ``folder/<stem>.png`` written by any method.

    A pixel holds the index of a class in ``dataset.classes`` (what ``--list-classes`` prints). Values
    outside ``0..C-1`` count as "no class" (they never match, like MMSeg's histogram range).
    """

    needs_image = False
    in_loader = True

    def __init__(self, folder: str | Path, dataset: SegDataset):
        self.folder = Path(folder).expanduser()
        self.dataset = dataset
        if not self.folder.is_dir():
            raise ProtosegError(f"predictions folder {self.folder} does not exist")
        present = {p.name for p in self.folder.iterdir()}
        self.paths: list[Path] = []
        missing = []
        for sample in dataset.samples:
            name = self._find(sample.stem, sample.label.name, present)
            if name is None:
                missing.append(sample.stem)
            else:
                self.paths.append(self.folder / name)
        if missing:
            raise ProtosegError(
                f"{len(missing)} of {len(dataset)} predictions are missing in {self.folder} (e.g. "
                f"{', '.join(m + '.png' for m in missing[:3])}); expected one <image stem>.png per image, "
                f"pixel = class index as `protoseg eval --dataset {dataset.name} --list-classes` prints it"
            )

    def check_sizes(self) -> None:
        """Check every prediction against its ground truth from the file headers (readable, single-channel,
        same size), so a bad file stops the run before it starts.

        Raises:
            ProtosegError: naming the first bad prediction.
        """
        for sample, path in zip(self.dataset.samples, self.paths, strict=True):
            pw, ph = label_size(path)
            gw, gh = label_size(sample.label)
            if (pw, ph) != (gw, gh):
                raise ProtosegError(f"{sample.stem}: prediction is {pw}x{ph} but the ground truth is {gw}x{gh}; "
                                    "predict at the original size")

    @staticmethod
    def _find(stem: str, label_name: str, present: set[str]) -> str | None:
        candidates = [stem + ".png"]
        for suffix in ("_leftImg8bit",):  # Cityscapes: also accept MMSeg's short name
            if stem.endswith(suffix):
                candidates.append(stem.removesuffix(suffix) + ".png")
        return next((c for c in candidates if c in present), None)

    def describe(self) -> dict[str, Any]:
        return {"kind": "predictions", "folder": str(self.folder.resolve())}

    def inputs(self) -> dict[str, Any]:
        return {"predictions": files_digest(self.paths)}

    def __call__(self, index: int, image: np.ndarray | None) -> np.ndarray:
        return read_label_png(self.paths[index]).astype(np.int64)

