"""The web demo (``protoseg demo``): drop images, name classes, see the overlay.

Two layers:

- :func:`run_demo_request` — everything a request does, without a browser or gradio: the checks of
  ``protoseg segment`` (same class parsing, same one-line errors, the same rule for the hand-crafted
  presets: :func:`protoseg.batch.check_request`), a :class:`Segmenter` from the :class:`SegmenterCache`
  (loaded once per preset, model folders, bank and device), the outputs written by
  :func:`protoseg.viz.save_segmentation` (label PNG, overlay with the input beside it, sidecar) into a
  folder of the demo's, and each class's share of the pixels;
- :func:`build_demo` — the Gradio page around it (gradio is imported only here, so ``protoseg segment``
  never pays for it). A user error becomes one ``error: …`` line in the page, never a stack trace.
"""

from __future__ import annotations

import html
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import count, tee
from pathlib import Path
from typing import Any

import numpy as np

from protoseg.bank import PrototypeBank
from protoseg.bank.hub import hub_spec
from protoseg.batch import check_request
from protoseg.classes import parse_class_list
from protoseg.config.fields import given
from protoseg.config.segment import PRESETS, Preset
from protoseg.errors import ProtosegError
from protoseg.images import load_image
from protoseg.models import ModelSet
from protoseg.models.base import resolve_device
from protoseg.offline.ondemand import missing_classes
from protoseg.runs import jsonable
from protoseg.segment import Segmenter
from protoseg.viz import class_colours, class_shares, save_segmentation

#: ``progress(fraction, description)``: how a request reports how far it is.
ProgressFn = Callable[[float, str], None]


@dataclass(frozen=True)
class DemoSettings:
    """What the page starts with (from the ``protoseg demo`` options)."""

    bank: str = ""
    preset: str = "freeda-b"
    features: str | None = None
    text: str | None = None
    sam: str | None = None
    device: str = "auto"
    allow_synthetic: bool = False


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
    """What a request produced: one :class:`ImageResult` per image, in input order, and its wall time."""

    images: list[ImageResult] = field(default_factory=list)
    seconds: float = 0.0


class SegmenterCache:
    """Loaded banks and segmenters, so that a second request loads nothing.

    A bank is keyed by its resolved folder and its manifest's size and modification time (a bank rebuilt in
    place is loaded again); a segmenter by its preset (every field, model folders included), bank and
    device. Thread-safe. ``loads`` counts the segmenters built.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._banks: dict[tuple, Any] = {}
        self._segmenters: dict[tuple, Any] = {}
        self.loads = 0

    def bank(self, folder: str | Path) -> PrototypeBank:
        """The bank in ``folder`` or at an ``hf://owner/name[@revision]`` id (validated when first loaded;
        a folder whose manifest changed, e.g. grown by ``generate_missing``, is loaded again)."""
        key, path, hub = self._bank_key(folder)
        with self._lock:
            if key not in self._banks or (key[1] is None and not hub):  # no manifest: load to report why
                self._banks[key] = PrototypeBank.load(path)
            return self._banks[key]

    def segmenter(self, preset: Preset, bank: PrototypeBank, device: str,
                  on_load: Callable[[], None] | None = None) -> Segmenter:
        """A :class:`~protoseg.segment.Segmenter` for ``preset`` on ``bank`` (built on first use)."""
        key = self._segmenter_key(preset, bank, device)
        with self._lock:
            if key not in self._segmenters:
                if on_load is not None:
                    on_load()
                models = ModelSet.for_preset(preset, device=device)
                self._segmenters[key] = Segmenter(preset, bank, models)
                self.loads += 1
            return self._segmenters[key]

    def grown(self, folder: str | Path, preset: Preset, device: str, segmenter: Segmenter) -> None:
        """Keep ``segmenter``, whose bank grew (:meth:`Segmenter.ensure_classes`), as the segmenter of the
        bank now in ``folder``, so that the next request loads neither again."""
        key, _, _ = self._bank_key(folder)
        with self._lock:
            self._banks[key] = segmenter.bank
            self._segmenters[self._segmenter_key(preset, segmenter.bank, device)] = segmenter

    @staticmethod
    def _bank_key(folder: str | Path) -> tuple[tuple[str, tuple[int, int] | None], str | Path, bool]:
        """``(key, path to load, on the Hub)`` of a bank: its resolved folder and its manifest's size and
        modification time (a Hub revision's files never change once fetched)."""
        hub = hub_spec(folder) is not None
        path = str(folder) if hub else Path(folder).expanduser()
        manifest = None if hub else Path(path) / "manifest.json"
        stamp = (manifest.stat().st_size, manifest.stat().st_mtime_ns) if manifest and manifest.is_file() else None
        return (str(folder) if hub else str(Path(path).resolve()), stamp), path, hub

    @staticmethod
    def _segmenter_key(preset: Preset, bank: PrototypeBank, device: str) -> tuple:
        return json.dumps(jsonable(preset), sort_keys=True), id(bank), bank.manifest.bank_id, device


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
                     progress: ProgressFn | None = None) -> DemoResult:
    """Segment ``images`` into the classes typed in ``classes_text`` (``"sky, grass, car"``, parsed as
    ``protoseg segment --classes``) with ``preset`` and the bank in folder ``bank``.

    Writes, per image, ``<stem>.png`` (label map), ``<stem>_overlay.jpg`` (input | overlay) and
    ``<stem>.json`` into a new folder under ``out_dir``. With ``generate_missing`` the classes the bank
    lacks are first generated with the bank's build recipe and added to it
    (:meth:`Segmenter.ensure_classes`, as ``protoseg segment --generate-missing``).

    Raises:
        ProtosegError: anything the user can fix — no images, bad classes, an unknown preset, a bad bank or
            a class it lacks, an unreadable image, a hand-crafted preset on a photo — before a model loads.
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

    def load(found: PrototypeBank) -> Segmenter:
        return cache.segmenter(chosen, found, resolved, on_load=lambda: report(0.05, "loading the models"))

    segmenter = None
    if generate_missing and missing_classes(loaded, names):
        segmenter = load(loaded)
        segmenter.ensure_classes(names, progress=lambda stage, done, total: report(
            0.05 + 0.05 * done / max(total, 1), f"generating prototypes: {stage}"))
        cache.grown(folder, chosen, resolved, segmenter)
        loaded = segmenter.bank
    loaded.check_classes(names)
    segmenter = segmenter or load(loaded)
    segmenter.prepare(names)
    out = Path(out_dir) / f"request-{next(_request_ids)}"
    colours = class_colours(names)

    def read() -> Iterator[np.ndarray]:
        for k, path in enumerate(paths):
            report(0.1 + 0.9 * k / len(paths), f"segmenting {path.name} ({k + 1} of {len(paths)})")
            yield load_image(path)

    images, kept = tee(read())  # one read per image: for the segmenter and for the overlay
    result = DemoResult()
    for path, stem, image, segmentation in zip(paths, _unique_stems(paths), kept,
                                               segmenter.segment_many(images, names), strict=True):
        meta = {"image": path.name, "preset": preset, "bank": str(bank), "bank_id": loaded.manifest.bank_id}
        files = save_segmentation(out, stem, image, segmentation.labels, names, meta, side_by_side=True)
        shares = class_shares(segmentation.labels, len(names))
        legend = sorted((LegendEntry(name, tuple(int(v) for v in colours[i]), float(shares[i]))
                         for i, name in enumerate(names)), key=lambda e: -e.share)
        result.images.append(ImageResult(path.name, files["overlay"], files["labels"], files["sidecar"], legend))
    report(1.0, "done")
    result.seconds = time.perf_counter() - started
    return result


def legend_html(result: DemoResult) -> str:
    """The legends of a result as HTML: per image, each class's swatch (its overlay colour), name and share."""
    parts = []
    for item in result.images:
        rows = "".join(
            f'<tr class="protoseg-legend-row"><td><span class="protoseg-swatch" style="background:{e.hex}"></span>'
            f'</td><td class="protoseg-class">{html.escape(e.name)}</td>'
            f'<td class="protoseg-share">{100 * e.share:.1f} %</td></tr>' for e in item.legend)
        parts.append(f'<div class="protoseg-legend"><b>{html.escape(item.name)}</b>'
                     f'<table><tr><th></th><th>class</th><th>pixels</th></tr>{rows}</table></div>')
    return "".join(parts)


def error_html(message: str) -> str:
    """A one-line ``error: …`` message box."""
    return f'<div class="protoseg-error">error: {html.escape(" ".join(message.split()))}</div>'


_CSS = """
.protoseg-error {color: #b00020; background: #fdecea; border: 1px solid #f5c2c0; padding: 8px 12px;
                 border-radius: 6px; font-family: monospace;}
.protoseg-status {color: #2e7d32; font-family: monospace;}
.protoseg-legend {display: inline-block; vertical-align: top; margin: 0 24px 12px 0;}
.protoseg-legend td, .protoseg-legend th {padding: 2px 8px; text-align: left;}
.protoseg-share {text-align: right !important; font-variant-numeric: tabular-nums;}
.protoseg-swatch {display: inline-block; width: 18px; height: 18px; border: 1px solid #0003;
                  vertical-align: middle;}
"""


def build_demo(settings: DemoSettings, out_dir: str | Path, cache: SegmenterCache | None = None) -> Any:
    """The Gradio page (a ``gr.Blocks``) serving :func:`run_demo_request`; outputs go under ``out_dir``."""
    import gradio as gr  # import time (seconds): only the page needs it, never `protoseg segment`

    cache = cache or SegmenterCache()
    presets = sorted(PRESETS)
    if settings.preset not in presets:
        presets.append(settings.preset)

    def segment(files: list[str] | None, classes_text: str, preset: str, bank: str, allow: bool, generate: bool,
                progress: gr.Progress = gr.Progress()) -> tuple[Any, str, Any, str]:  # noqa: B008 (gradio)
        try:
            result = run_demo_request(files, classes_text, preset, bank, out_dir, cache, features=settings.features,
                                      text=settings.text, sam=settings.sam, device=settings.device,
                                      allow_synthetic=allow, generate_missing=generate,
                                      progress=lambda f, d: progress(f, desc=d))
        except ProtosegError as exc:
            return None, "", None, error_html(str(exc))
        except OSError as exc:  # the system refused a file, as the CLI reports it
            where = f" {exc.filename}" if exc.filename else ""
            return None, "", None, error_html(f"cannot access{where}: {exc.strerror or exc}")
        gallery = [(str(item.overlay), item.name) for item in result.images]
        downloads = [str(item.labels) for item in result.images]
        status = (f'<div class="protoseg-status">segmented {len(result.images)} image(s) in '
                  f"{result.seconds:.1f} s</div>")
        return gr.Gallery(value=gallery, selected_index=0), legend_html(result), downloads, status

    with gr.Blocks(title="protoseg demo", analytics_enabled=False) as app:
        gr.Markdown("## protoseg — open-vocabulary segmentation with prototype banks\n"
                    "Drop images, name the classes, press **Segment**: every pixel gets one of the classes.")
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(label="Images", file_count="multiple", file_types=["image"], elem_id="images")
                classes = gr.Textbox(label="Classes (comma-separated)", placeholder="sky, grass, road, car",
                                     elem_id="classes")
                preset = gr.Dropdown(choices=presets, value=settings.preset, label="Preset", elem_id="preset")
                bank = gr.Textbox(label="Bank folder or hf://owner/name", value=settings.bank, elem_id="bank")
                allow = gr.Checkbox(label="Allow the hand-crafted (parts-world) backend on other images",
                                    value=settings.allow_synthetic, elem_id="allow")
                generate = gr.Checkbox(label="Generate missing classes with the bank's recipe (Stable Diffusion; "
                                             "added to the bank)", value=False, elem_id="generate")
                run = gr.Button("Segment", variant="primary", elem_id="segment")
            with gr.Column(scale=2):
                status = gr.HTML(elem_id="status")
                gallery = gr.Gallery(label="Input | overlay", preview=True, height=520, object_fit="contain",
                                     elem_id="overlays")
                legend = gr.HTML(elem_id="legend")
                downloads = gr.File(label="Label maps (PNG: pixel = class index)", file_count="multiple",
                                    elem_id="downloads")
        run.click(segment, [files, classes, preset, bank, allow, generate], [gallery, legend, downloads, status])
    app.protoseg_css = _CSS
    return app


def launch(app: Any, host: str, port: int, out_dir: str | Path) -> None:
    """Serve ``app`` on ``host:port`` until interrupted (blocking)."""
    app.launch(server_name=host, server_port=port, show_error=False, quiet=True, css=app.protoseg_css,
               allowed_paths=[str(out_dir)], footer_links=[])
