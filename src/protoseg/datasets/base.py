"""The dataset abstraction the evaluation harness scores against.

A :class:`SegDataset` is a list of ``(stem, image file, ground-truth file)`` plus the rule that turns a
ground-truth file into indices of the scored class list (``classes``). Ground truth is read as
MMSegmentation reads it (PIL, original resolution, palette PNGs give their indices) and then:

- ``reduce_zero_label``: ``0 -> 255`` (ignored), every other value ``v -> v - 1``, ``255`` stays
  ``255`` (MMSeg's ``LoadAnnotations`` / ``intersect_and_union``);
- ``label_lut``: an optional 256-entry lookup applied to the raw values first.

``255`` is the ignore index everywhere. A dataset has a background class when its class 0 is named
:data:`BACKGROUND` (:func:`has_background`, the one rule every part of protoseg asks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from protoseg.errors import ProtosegError
from protoseg.eval.metrics import IGNORE_INDEX
from protoseg.images import check_image, load_image

#: Name of the background class: label 0 of the datasets that have one (scored, never queried by name).
BACKGROUND = "background"


def has_background(classes: Sequence[str]) -> bool:
    """Whether a dataset with the class list ``classes`` (label order) has a background class: its class 0
    is :data:`BACKGROUND`. Its pixels are label 0 and the other classes follow."""
    return len(classes) > 0 and classes[0] == BACKGROUND


@dataclass(frozen=True)
class Sample:
    """One evaluation image: ``stem`` names it (predictions are ``<stem>.png``)."""

    stem: str
    image: Path
    label: Path


def read_label_png(path: Path) -> np.ndarray:
    """A label map as stored: palette/grayscale PNG -> integer ``[H, W]`` (uint8 or uint16 values)."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
                raise ProtosegError(
                    f"label map {path} has mode {im.mode}; expected a single-channel PNG "
                    "(palette or grayscale) holding class indices"
                )
            return np.asarray(im).copy()
    except FileNotFoundError:
        raise ProtosegError(f"label map not found: {path}") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ProtosegError(f"cannot read label map {path}: {exc}") from exc


def label_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of a label map from its header (nothing decoded).

    Raises:
        ProtosegError: missing or unreadable file, or not a single-channel image.
    """
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
                raise ProtosegError(f"label map {path} has mode {im.mode}; expected a single-channel PNG "
                                    "(palette or grayscale) holding class indices")
            return im.size
    except FileNotFoundError:
        raise ProtosegError(f"label map not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ProtosegError(f"cannot read label map {path}: {exc}") from exc


def reduce_zero_label(raw: np.ndarray) -> np.ndarray:
    """MMSeg's rule: ``0 -> 255``, ``v -> v - 1`` otherwise, ``255`` stays ``255``.

    uint8 input gives uint8 output (one table lookup); other integer input gives int64.
    """
    if raw.dtype == np.uint8:
        return _REDUCE_LUT[raw]
    out = raw.astype(np.int64) - 1
    out[raw == 0] = IGNORE_INDEX
    out[raw == IGNORE_INDEX] = IGNORE_INDEX
    return out


_REDUCE_LUT = (np.arange(256) - 1).clip(0).astype(np.uint8)
_REDUCE_LUT[0] = IGNORE_INDEX
_REDUCE_LUT[IGNORE_INDEX] = IGNORE_INDEX


@dataclass
class SegDataset:
    """A labelled evaluation set.

    Attributes:
        name: dataset key (``"ade20k"``, ...).
        classes: scored class names, index = label value after the ground-truth rule. When
            :func:`has_background` the dataset has a background class (never queried).
        samples: the images, in evaluation order.
        reduce_zero_label: apply MMSeg's reduce-zero-label rule to the raw ground truth.
        label_lut: optional ``[256]`` lookup applied to raw values before anything else.
    """

    name: str
    classes: tuple[str, ...]
    samples: list[Sample]
    reduce_zero_label: bool = False
    label_lut: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def stems(self) -> list[str]:
        return [s.stem for s in self.samples]

    @property
    def has_background(self) -> bool:
        """:func:`has_background` of :attr:`classes`."""
        return has_background(self.classes)

    @property
    def query_classes(self) -> list[str]:
        """Names to query a segmenter with (background removed)."""
        return list(self.classes[1:] if self.has_background else self.classes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def convert_label(self, raw: np.ndarray) -> np.ndarray:
        """Raw stored label values -> scored-class indices (255 = ignore); uint8 stays uint8, else int64."""
        if self.label_lut is not None:
            if raw.max(initial=0) > 255:
                raise ProtosegError(
                    f"{self.name}: label values above 255 in a dataset with a 256-entry lookup"
                )
            raw = self.label_lut[raw]
        if self.reduce_zero_label:
            return reduce_zero_label(raw)
        return raw if raw.dtype == np.uint8 else raw.astype(np.int64)

    def load_image(self, i: int) -> np.ndarray:
        """uint8 ``[H, W, 3]`` RGB."""
        return load_image(self.samples[i].image)

    def load_label(self, i: int) -> np.ndarray:
        """Integer ``[H, W]`` ground truth in scored-class indices, 255 = ignore (uint8 for 8-bit PNGs)."""
        return self.convert_label(read_label_png(self.samples[i].label))

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(image uint8 [H, W, 3], gt integer [H, W])``; raises if the two sizes differ."""
        image, gt = self.load_image(i), self.load_label(i)
        if image.shape[:2] != gt.shape:
            raise ProtosegError(
                f"{self.samples[i].image} is {image.shape[1]}x{image.shape[0]} but its label "
                f"map {self.samples[i].label} is {gt.shape[1]}x{gt.shape[0]}"
            )
        return image, gt

    def check_files(self, images: bool = True) -> None:
        """Read every sample's headers (nothing decoded): images readable, ground truth a single-channel
        label map of the image's size. Lets a run fail before any work instead of midway.

        Raises:
            ProtosegError: naming the first bad file.
        """
        for sample in self.samples:
            size = label_size(sample.label)
            if images:
                width, height = check_image(sample.image)
                if (width, height) != size:
                    raise ProtosegError(f"{sample.image} is {width}x{height} but its label map {sample.label} "
                                        f"is {size[0]}x{size[1]}")

    def limit(self, n: int | None) -> SegDataset:
        """The first ``n`` samples (all when ``n`` is None)."""
        if n is None:
            return self
        if n <= 0:
            raise ProtosegError(f"--limit must be positive, got {n}")
        return SegDataset(self.name, self.classes, self.samples[:n], self.reduce_zero_label, self.label_lut)
