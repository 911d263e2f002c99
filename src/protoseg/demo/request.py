"""One request of the web demo, without a browser or gradio: the checks of ``protoseg segment`` (same
class parsing, same one-line errors, the same rule for the hand-crafted presets:
:func:`protoseg.batch.check_request`), a :class:`Segmenter` from the :class:`SegmenterCache` (loaded once
per preset, model folders, bank and device), the outputs written by :func:`protoseg.viz.save_segmentation`
(label PNG, overlay with the input beside it, sidecar) into a folder of the demo's, and each class's share
of the pixels.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

from protoseg.batch import check_request
from protoseg.classes import parse_class_list
from protoseg.config.fields import given
from protoseg.demo.cache import SegmenterCache
from protoseg.errors import ProtosegError
from protoseg.images import load_image
from protoseg.models.base import resolve_device
from protoseg.offline.ondemand import missing_classes
from protoseg.segment import Segmenter
from protoseg.viz import class_colours, class_shares, save_segmentation

#: ``progress(fraction, description)``: how a request reports how far it is.
ProgressFn = Callable[[float, str], None]


@dataclass(frozen=True)
class LegendEntry:
    """One class in an image's legend: its colour (as drawn) and its share of the image's pixels."""

    name: str
    colour: tuple[int, int, int]
    share: float

    @property
    def hex(self) -> str:
        return "#{:02x}{:02x}{:02x}".format(*self.colour)


@dataclass(frozen=True)
class ImageResult:
    """One segmented image: its name, the files written and its legend (largest share first)."""

    name: str
    overlay: Path
    labels: Path
    sidecar: Path
    legend: list[LegendEntry]


@dataclass
class DemoResult:
    """What a request produced: one :class:`ImageResult` per image, in input order, its wall time, and a
    line for the user besides (e.g. a generation started in the background)."""

    images: list[ImageResult] = field(default_factory=list)
    seconds: float = 0.0
    notice: str = ""


_request_ids = count(1)


def _unique_stems(paths: Sequence[Path]) -> list[str]:
    """File stems, with ``-2``, ``-3``… added to repeats (two uploads may share a name)."""
    seen: dict[str, int] = {}
    stems = []
    for path in paths:
        n = seen[path.stem] = seen.get(path.stem, 0) + 1
        stems.append(path.stem if n == 1 else f"{path.stem}-{n}")
    return stems


def run_demo_request(images: Sequence[str | Path] | None, classes_text: str | None, preset: str,
                     bank: str | Path | None, out_dir: str | Path, cache: SegmenterCache, *,
                     features: str | None = None, text: str | None = None, sam: str | None = None,
                     device: str = "auto", allow_synthetic: bool = False, generate_missing: bool = False,
                     progress: ProgressFn | None = None, time_limit_s: float | None = None) -> DemoResult:
    """Segment ``images`` into the classes typed in ``classes_text`` (``"sky, grass, car"``, parsed as
    ``protoseg segment --classes``) with ``preset`` and the bank in folder ``bank``.

    Writes, per image, ``<stem>.png`` (label map), ``<stem>_overlay.jpg`` (input | overlay) and
    ``<stem>.json`` into a new folder under ``out_dir``. With ``generate_missing`` the classes the bank
    lacks are first generated with the bank's build recipe and added to it
    (:meth:`Segmenter.ensure_classes`, as ``protoseg segment --generate-missing``; the page runs generation
    in :class:`~protoseg.demo.generation.GenerationWorker` instead). Other requests on the same segmenter
    take turns image by image. With ``time_limit_s`` the request stops before an image once that many
    seconds have passed.

    Raises:
        ProtosegError: anything the user can fix — no images, bad classes, an unknown preset, a bad bank or
            a class it lacks, an unreadable image, a hand-crafted preset on a photo — before a model loads;
            a request past its time limit.
    """
    started = time.perf_counter()
    report = progress or (lambda fraction, description: None)
    if not classes_text or not classes_text.strip():
        raise ProtosegError('type the classes, comma-separated, e.g. "sky, grass, car"')
    names = parse_class_list(classes_text)
    paths = [Path(p) for p in images or []]
    if not paths:
        raise ProtosegError("drop one or more images to segment")
    if bank is None or not str(bank).strip():
        raise ProtosegError("give the folder of a prototype bank (protoseg bank from-examples … --out BANK)")
    folder = str(bank).strip()
    resolved = str(resolve_device(device))
    report(0.0, "checking the request")
    chosen, loaded = check_request(paths, names, preset, given(features=features, text=text, sam=sam),
                                   cache.bank(folder), allow_synthetic)
    if generate_missing and missing_classes(loaded, names):
        segmenter = cache.segmenter(chosen, loaded, resolved, on_load=lambda: report(0.05, "loading the models"))
        segmenter.ensure_classes(names, progress=lambda stage, done, total: report(
            0.05 + 0.05 * done / max(total, 1), f"generating prototypes: {stage}"))
        cache.grown(folder, chosen, resolved, segmenter)
        loaded = segmenter.bank
    loaded.check_classes(names)
    with cache.using(chosen, loaded, resolved, on_load=lambda: report(0.05, "loading the models")) as (segmenter,
                                                                                                      lock):
        with lock:
            segmenter.prepare(names)
        meta = {"preset": preset, "bank": str(bank), "bank_id": loaded.manifest.bank_id}
        result = _segment_files(paths, names, segmenter, lock, Path(out_dir), meta, report,
                                None if time_limit_s is None else started + time_limit_s)
    report(1.0, "done")
    result.seconds = time.perf_counter() - started
    return result


def _segment_files(paths: list[Path], names: list[str], segmenter: Segmenter, lock: threading.Lock, out_dir: Path,
                   meta: dict[str, str], report: ProgressFn, deadline: float | None) -> DemoResult:
    """Read, segment (holding ``lock``) and write each image in turn, with ``meta`` in each sidecar; stops
    before an image past ``deadline`` (``time.perf_counter()`` seconds)."""
    out = out_dir / f"request-{next(_request_ids)}"
    colours = class_colours(names)
    result = DemoResult()
    for k, (path, stem) in enumerate(zip(paths, _unique_stems(paths), strict=True)):
        if deadline is not None and time.perf_counter() > deadline:
            raise ProtosegError(f"the request was stopped after {k} of {len(paths)} images: it reached this "
                                "demo's time limit; send fewer or smaller images")
        report(0.1 + 0.9 * k / len(paths), f"segmenting {path.name} ({k + 1} of {len(paths)})")
        image = load_image(path)
        with lock:
            segmentation = segmenter.segment(image, names)
        files = save_segmentation(out, stem, image, segmentation.labels, names, {"image": path.name, **meta},
                                  side_by_side=True)
        shares = class_shares(segmentation.labels, len(names))
        legend = sorted((LegendEntry(name, tuple(int(v) for v in colours[i]), float(shares[i]))
                         for i, name in enumerate(names)), key=lambda e: -e.share)
        result.images.append(ImageResult(path.name, files["overlay"], files["labels"], files["sidecar"], legend))
    return result
