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

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import tee
from pathlib import Path
from typing import Any

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
    if todo:
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
    """Segment and save each of ``todo`` (images read as the segmenter asks for them); returns the summed
    diagnostics."""
    names = settings.classes
    segmenter.prepare(names)
    totals: Counter[str] = Counter()
    report("segmenting", 0, len(todo))
    images, kept = tee(map(load_image, todo))  # one read per image: for the segmenter and for the overlay
    results = segmenter.segment_many(images, names, background=settings.background)
    for done, (path, image, result) in enumerate(zip(todo, kept, results, strict=True), 1):
        save_segmentation(out, path.stem, image, result.labels, names, meta[path], side_by_side=settings.side_by_side)
        totals.update(result.diagnostics)
        report("segmenting", done, len(todo))
    return dict(totals)
