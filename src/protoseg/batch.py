"""Segmenting many image files into an output folder (``protoseg segment``).

For each image, :func:`segment_files` writes ``<stem>.png`` (label map), ``<stem>_overlay.jpg`` and the
``<stem>.json`` sidecar (:func:`protoseg.viz.save_segmentation`) into the output folder, and skips the
images whose outputs are up to date: their sidecar records the fingerprint of everything that decides
them — the image file (path, size, modification time), the classes, the background switch, the overlay
layout, every preset field, the bank's files, device, dtype and protoseg's version — and their label map
and overlay exist. protoseg replaces only outputs it wrote itself, and never an input (an image, a bank
file, the class file).

Everything the caller controls is checked before a model loads or an image is read
(:func:`check_request`). The library never prints: progress goes to a callback and the result is a
:class:`BatchSummary`.
"""

from __future__ import annotations

import functools
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from protoseg.atomic import check_not_inputs, check_output_dir
from protoseg.bank import PrototypeBank
from protoseg.bank_preset import check_preset_fits, preset_for_bank
from protoseg.bank_source import open_bank
from protoseg.config.segment import Preset, get_preset
from protoseg.errors import ProtosegError
from protoseg.images import check_image, expand_images, load_image
from protoseg.models import ModelSet
from protoseg.models.base import resolve_device, resolve_dtype
from protoseg.offline.ondemand import missing_classes
from protoseg.ray_shards import run_on_ray
from protoseg.runs import Progress, file_stamp, fingerprint_of, jsonable
from protoseg.segment import Segmenter
from protoseg.version import build_id
from protoseg.viz import MAX_CLASSES, output_paths, read_sidecar, save_segmentation, written_by_protoseg
from protoseg.worlds import check_synthetic_backend

#: ``grown(classes, bank, seconds)``: the bank was grown with ``classes`` (generated in ``seconds``).
Grown = Callable[[list[str], PrototypeBank, float], None]


@dataclass(frozen=True)
class BatchSettings:
    """What :func:`segment_files` does (the options of ``protoseg segment``).

    Attributes:
        classes: the class names; a label is the index of its class here.
        bank: a bank folder, an ``hf://owner/name[@revision]`` id, a published bank's name (``freeda-l``,
            fetched once) or a loaded :class:`PrototypeBank`.
        out: the output folder (created when missing).
        preset: the method preset (:data:`protoseg.config.segment.PRESETS`); ``None``: the bank's own
            (:func:`protoseg.bank_preset.preset_for_bank`). A named preset must fit the bank.
        overrides: preset fields to replace (model weights, ``background_threshold``…).
        background: label pixels matching no class as background (the preset's background rule).
        device: ``cpu``, ``cuda``, ``cuda:1`` or ``auto``; dtype: the models' dtype.
        side_by_side: the overlay file shows the input left of the overlay.
        allow_synthetic: let a hand-crafted (parts-world test) preset segment other images.
        generate_missing: first grow the bank with the classes it lacks (:meth:`Segmenter.ensure_classes`),
            with ``diffusion`` / ``llm`` replacing the recipe's models when given.
        inputs: other input files the outputs must never replace (e.g. the class file).
        workers: processes for the region work (:meth:`Segmenter.segment_many`; default: the cores this
            process may use; 0: none).
        ray, ray_address: segment on Ray workers (:mod:`protoseg.ray_shards`; ``None``: a running connection
            or a local Ray), ``ray_shard_size`` images per shard; the image files and the bank folder must be
            readable at the same paths on every node; the driver writes every output.
    """

    classes: list[str]
    bank: str | Path | PrototypeBank
    out: Path = Path("protoseg-out")
    preset: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    background: bool = False
    device: str = "auto"
    dtype: str = "float32"
    side_by_side: bool = False
    allow_synthetic: bool = False
    generate_missing: bool = False
    diffusion: str | None = None
    llm: str | None = None
    inputs: tuple[Path, ...] = ()
    workers: int | None = None
    ray: bool = False
    ray_address: str | None = None
    ray_shard_size: int = 4


@dataclass(frozen=True)
class BatchSummary:
    """What :func:`segment_files` did.

    Attributes:
        out: the output folder.
        written: the images segmented (their outputs written), in input order.
        skipped: the images whose outputs were already up to date.
        generated: the classes generated and added to the bank first (``generate_missing``).
        diagnostics: the matchers' counts summed over the images written (e.g. DPSM's
            ``transport_problems`` / ``transport_not_converged``).
    """

    out: Path
    written: list[Path]
    skipped: list[Path]
    generated: list[str] = field(default_factory=list)
    diagnostics: dict[str, int] = field(default_factory=dict)


def check_request(paths: Sequence[Path], classes: Sequence[str], preset: str | None, overrides: Mapping[str, Any],
                  bank: str | Path | PrototypeBank, allow_synthetic: bool = False) -> tuple[Preset, PrototypeBank]:
    """What segmenting image files checks before a model loads, in this order: the number of classes, every
    image (readable), a named preset (with ``overrides``), the bank (a folder, an ``hf://`` id, a published
    bank's name, or a loaded one), the preset against the bank (``None``: the bank's own preset, with
    ``overrides``; a named one must fit it, :func:`protoseg.bank_preset.check_preset_fits`), and the
    hand-crafted backend only on parts-world scenes unless ``allow_synthetic``.

    Returns:
        ``(preset, bank)``.

    Raises:
        ProtosegError: the first of these that fails.
    """
    if len(classes) > MAX_CLASSES:
        raise ProtosegError(f"{len(classes)} classes; a label map holds at most {MAX_CLASSES}")
    for path in paths:
        check_image(path)
    named = get_preset(preset, **overrides) if preset is not None else None
    if named is not None:
        check_synthetic_backend(named, list(paths), allow_synthetic)
    loaded = open_bank(bank)
    chosen = named or get_preset(preset_for_bank(loaded.manifest), **overrides)
    check_preset_fits(chosen, loaded.manifest, loaded.source or "in memory")
    if named is None:
        check_synthetic_backend(chosen, list(paths), allow_synthetic)
    return chosen, loaded


def segment_files(images: Sequence[str | Path], settings: BatchSettings, progress: Progress | None = None,
                  grown: Grown | None = None) -> BatchSummary:
    """Segment the image files ``images`` (folders stand for the images in them) as ``settings`` says into
    ``settings.out``, skipping images whose outputs are up to date (module docstring).

    ``progress(stage, done, total)`` reports ``"generating: <stage>"`` while the bank grows and
    ``"segmenting"`` per image written; ``grown(classes, bank, seconds)`` is called once the bank grew.

    Raises:
        ProtosegError: anything the caller can fix (bad device, image, class list, preset, bank, a class
            the bank lacks, outputs that would replace an input or a file protoseg did not write) — raised
            before a model loads, except what only the grown bank can tell.
    """
    report = progress or _ignore
    resolved = resolve_device(settings.device)
    resolve_dtype(settings.dtype, resolved)
    paths = expand_images(list(images))
    stems = [p.stem for p in paths]
    if len(set(stems)) != len(stems):
        raise ProtosegError("two input images share a file stem; their outputs would overwrite each other")
    out = check_output_dir(settings.out)
    preset, bank = check_request(paths, settings.classes, settings.preset, settings.overrides, settings.bank,
                                 settings.allow_synthetic)
    segmenter, generated = None, []
    if settings.generate_missing and missing_classes(bank, settings.classes):
        segmenter = _load(preset, bank, settings)
        started = time.perf_counter()
        generated = segmenter.ensure_classes(settings.classes, diffusion=settings.diffusion, llm=settings.llm,
                                             progress=lambda stage, done, total: report(f"generating: {stage}",
                                                                                        done, total))
        bank = segmenter.bank
        if grown is not None:
            grown(generated, bank, time.perf_counter() - started)
    bank.check_classes(settings.classes)
    planned = _check_outputs(out, paths, bank, settings.inputs)
    request = {"classes": settings.classes, "background": settings.background,
               "side_by_side": settings.side_by_side, "preset": jsonable(preset), "bank": bank.fingerprint(),
               "device": str(resolved), "dtype": settings.dtype, "protoseg": build_id()}
    meta = {path: {"image": str(path), "preset": preset.name, "bank": bank.source,
                   "bank_id": bank.manifest.bank_id,
                   "fingerprint": fingerprint_of({**request, "image": file_stamp(path)})} for path in paths}
    todo = [path for path in paths if not _up_to_date(planned[path], meta[path]["fingerprint"])]
    diagnostics: dict[str, int] = {}
    if todo and settings.ray:
        diagnostics = _write_from_ray(preset, bank, todo, out, meta, settings, report)
    elif todo:
        segmenter = segmenter or _load(preset, bank, settings)
        diagnostics = _write(segmenter, todo, out, meta, settings, report)
    written = set(todo)
    return BatchSummary(out=out, written=todo, skipped=[p for p in paths if p not in written], generated=generated,
                        diagnostics=diagnostics)


def _ignore(stage: str, done: int, total: int) -> None:
    """The progress callback when none is given."""


def _load(preset: Preset, bank: PrototypeBank, settings: BatchSettings) -> Segmenter:
    return Segmenter(preset, bank, ModelSet.for_preset(preset, device=settings.device, dtype=settings.dtype))


def _check_outputs(out: Path, paths: list[Path], bank: PrototypeBank,
                   inputs: Sequence[Path]) -> dict[Path, dict[str, Path]]:
    """Each image's output files (:func:`protoseg.viz.output_paths`), checked to replace no input and only
    files protoseg wrote."""
    planned = {path: output_paths(out, path.stem) for path in paths}
    bank_files = [p for p in bank.path.rglob("*") if p.is_file()] if bank.path is not None else []
    check_not_inputs([f for files in planned.values() for f in files.values()], [*paths, *bank_files, *inputs])
    for files in planned.values():
        for file in files.values():
            if file.exists() and not written_by_protoseg(file):
                raise ProtosegError(f"{file} exists and was not written by protoseg; protoseg replaces only its "
                                    "own outputs: move it away or choose another --out")
    return planned


def _up_to_date(files: dict[str, Path], fingerprint: str) -> bool:
    """The sidecar records ``fingerprint`` and the label map and overlay exist."""
    sidecar = read_sidecar(files["sidecar"])
    return (sidecar is not None and sidecar.get("fingerprint") == fingerprint
            and files["labels"].is_file() and files["overlay"].is_file())


def _write(segmenter: Segmenter, todo: list[Path], out: Path, meta: dict[Path, dict[str, Any]],
           settings: BatchSettings, report: Progress) -> dict[str, int]:
    """Segment and save each of ``todo`` (read on the pipeline's prefetch thread, written on a writer thread);
    returns the summed diagnostics. Images segmented before an interruption are written before it is raised."""
    names = settings.classes
    segmenter.prepare(names)
    kept: deque[np.ndarray] = deque()  # each image read once: for the segmenter and for the overlay

    def read() -> Iterator[np.ndarray]:
        for path in todo:
            kept.append(load_image(path))
            yield kept[-1]

    results = segmenter.segment_many(read(), names, background=settings.background, workers=settings.workers)
    with Writer(out, meta, settings, report, len(todo)) as writer:
        for path, result in zip(todo, results, strict=True):
            writer.put(path, kept.popleft(), result.labels, result.diagnostics)
    return writer.totals


class Writer:
    """Draws and writes outputs (:func:`protoseg.viz.save_segmentation`) on one background thread, at most
    ``depth`` images behind, reporting ``"segmenting"`` progress as each is written; leaving the ``with``
    block waits for every image handed over, also when it is left by an error."""

    def __init__(self, out: Path, meta: dict[Path, dict[str, Any]], settings: BatchSettings, report: Progress,
                 total: int, depth: int = 4):
        self.out, self.meta, self.settings, self.report = out, meta, settings, report
        self.total, self.depth, self.done = total, depth, 0
        self.totals: Counter[str] = Counter()
        self._pending: deque[tuple[Future, dict[str, int]]] = deque()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="protoseg-writer")

    def __enter__(self) -> Writer:
        self.report("segmenting", 0, self.total)
        return self

    def put(self, path: Path, image: np.ndarray, labels: np.ndarray, diagnostics: dict[str, int]) -> None:
        """Hand over one image's result to be written."""
        job = self._pool.submit(save_segmentation, self.out, path.stem, image, labels, self.settings.classes,
                                self.meta[path], side_by_side=self.settings.side_by_side)
        self._pending.append((job, diagnostics))
        while self._pending and (self._pending[0][0].done() or len(self._pending) > self.depth):
            self._collect()

    def _collect(self) -> None:
        job, diagnostics = self._pending.popleft()
        job.result()
        self.totals.update(diagnostics)
        self.done += 1
        self.report("segmenting", self.done, self.total)

    def __exit__(self, *exc: object) -> None:
        try:
            while self._pending:
                self._collect()
        finally:
            self._pool.shutdown(wait=True)


@dataclass(frozen=True)
class _RemoteSegmenter:
    """Builds, on a Ray worker, the function that segments a shard of image files (models loaded once)."""

    preset: Preset
    bank: str
    device: str
    dtype: str
    classes: list[str]
    background: bool
    workers: int | None

    def __call__(self) -> Callable[[list[str]], list[tuple[np.ndarray, dict[str, int]]]]:
        segmenter = Segmenter(self.preset, PrototypeBank.load(self.bank),
                              ModelSet.for_preset(self.preset, device=self.device, dtype=self.dtype))
        segmenter.prepare(self.classes)
        # A CPU worker holds one core of its node (one such worker per core): its region work stays in it.
        workers = self.workers if self.workers is not None else (None if segmenter.device.type == "cuda" else 0)
        return functools.partial(_segment_shard, segmenter, self.classes, self.background, workers)


def _segment_shard(segmenter: Segmenter, classes: list[str], background: bool, workers: int | None,
                   paths: list[str]) -> list[tuple[np.ndarray, dict[str, int]]]:
    """Labels ``[H, W]`` and diagnostics of each image file of a shard."""
    images = (load_image(path) for path in paths)
    return [(r.labels, r.diagnostics) for r in segmenter.segment_many(images, classes, background=background,
                                                                      workers=workers)]


def _write_from_ray(preset: Preset, bank: PrototypeBank, todo: list[Path], out: Path,
                    meta: dict[Path, dict[str, Any]], settings: BatchSettings, report: Progress) -> dict[str, int]:
    """Segment ``todo`` in shards on Ray workers; the driver writes each image's outputs as its shard returns."""
    if bank.path is None:
        raise ProtosegError("segmenting on Ray needs a bank folder (the workers load it from its path)")
    size = max(1, settings.ray_shard_size)
    shards = [[str(p) for p in todo[i:i + size]] for i in range(0, len(todo), size)]
    make = _RemoteSegmenter(preset, str(bank.path), settings.device, settings.dtype, settings.classes,
                            settings.background, settings.workers)
    with Writer(out, meta, settings, report, len(todo)) as writer:
        def finished(index: int, results: list[tuple[np.ndarray, dict[str, int]]]) -> None:
            for name, (labels, diagnostics) in zip(shards[index], results, strict=True):
                writer.put(Path(name), load_image(name), labels, diagnostics)

        run_on_ray(shards, make, finished, address=settings.ray_address)
    return writer.totals
