"""The Gradio page of the web demo (gradio is imported only here, so ``protoseg segment`` never pays for
it): drop images, name classes, pick one of the operator's banks and a preset that fits it, see each input
beside its overlay with a legend. A user error becomes one ``error: …`` line in the page, never a stack
trace; requests wait in a bounded queue and run a bounded number at a time.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from protoseg.demo.cache import SegmenterCache
from protoseg.demo.request import DemoResult
from protoseg.demo.service import DemoService, DemoSettings
from protoseg.errors import ProtosegError


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


def notice_html(message: str) -> str:
    """A one-line status message (``message`` escaped)."""
    return f'<div class="protoseg-status">{html.escape(" ".join(message.split()))}</div>'


def _status(result: DemoResult) -> str:
    lines = [f"segmented {len(result.images)} image(s) in {result.seconds:.1f} s"] if result.images else []
    return "".join(notice_html(line) for line in [*lines, *([result.notice] if result.notice else [])])


def build_demo(settings: DemoSettings, out_dir: str | Path, cache: SegmenterCache | None = None) -> Any:
    """The Gradio page (a ``gr.Blocks``, queued: at most ``limits.queue_size`` waiting,
    ``limits.concurrency`` at a time) serving :meth:`DemoService.handle`; outputs go under ``out_dir``.
    ``app.protoseg_service`` is the service (``close()`` it when the page stops)."""
    import gradio as gr  # import time (seconds): only the page needs it, never `protoseg segment`

    service = DemoService(settings, out_dir, cache)
    limits = settings.limits

    def segment(files: list[str] | None, classes_text: str, preset: str, bank: str, allow: bool, generate: bool,
                progress: gr.Progress = gr.Progress()) -> tuple[Any, str, Any, str]:  # noqa: B008 (gradio)
        try:
            result = service.handle(files, classes_text, preset, bank, allow, generate,
                                    progress=lambda f, d: progress(f, desc=d))
        except ProtosegError as exc:
            return None, "", None, error_html(str(exc))
        if not result.images:
            return None, "", None, _status(result)
        gallery = [(str(item.overlay), item.name) for item in result.images]
        downloads = [str(item.labels) for item in result.images]
        return gr.Gallery(value=gallery, selected_index=0), legend_html(result), downloads, _status(result)

    banks = [bank.name for bank in settings.banks]
    with gr.Blocks(title="protoseg demo", analytics_enabled=False) as app:
        gr.Markdown("## protoseg — open-vocabulary segmentation with prototype banks\n"
                    "Drop images, name the classes, press **Segment**: every pixel gets one of the classes.  \n"
                    f"<small>Limits: {html.escape(limits.describe())}.</small>")
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(label="Images", file_count="multiple", file_types=["image"], elem_id="images")
                classes = gr.Textbox(label="Classes (comma-separated)", placeholder="sky, grass, road, car",
                                     elem_id="classes", max_length=limits.max_classes * (limits.max_class_chars + 2))
                bank = gr.Dropdown(choices=banks, value=banks[0] if banks else None, label="Bank", elem_id="bank",
                                   allow_custom_value=settings.allow_bank_paths)
                preset = gr.Dropdown(choices=settings.presets(), value=settings.preset, label="Preset",
                                     elem_id="preset")
                allow = gr.Checkbox(label="Allow the hand-crafted (parts-world) backend on other images",
                                    value=settings.allow_synthetic, elem_id="allow")
                generate = gr.Checkbox(label=f"Generate missing classes with the bank's recipe (at most "
                                             f"{settings.generation.max_classes} per request, in the background)"
                                       if settings.generation else "Generate missing classes", value=False,
                                       elem_id="generate", visible=settings.generation is not None)
                run = gr.Button("Segment", variant="primary", elem_id="segment")
            with gr.Column(scale=2):
                status = gr.HTML(elem_id="status")
                gallery = gr.Gallery(label="Input | overlay", preview=True, height=520, object_fit="contain",
                                     elem_id="overlays")
                legend = gr.HTML(elem_id="legend")
                downloads = gr.File(label="Label maps (PNG: pixel = class index)", file_count="multiple",
                                    elem_id="downloads")
        run.click(segment, [files, classes, preset, bank, allow, generate], [gallery, legend, downloads, status],
                  concurrency_limit=limits.concurrency)
    app.queue(max_size=limits.queue_size, default_concurrency_limit=limits.concurrency)
    app.protoseg_css = _CSS
    app.protoseg_service = service
    app.protoseg_limits = limits
    return app


def launch(app: Any, host: str, port: int, out_dir: str | Path, auth: list[tuple[str, str]] | None = None,
           block: bool = True) -> None:
    """Serve ``app`` on ``host:port`` (with password ``auth`` when given; uploads above the demo's file size
    refused by Gradio); blocks until interrupted unless ``block`` is false."""
    limits = app.protoseg_limits
    app.launch(server_name=host, server_port=port, show_error=False, quiet=True, css=app.protoseg_css,
               allowed_paths=[str(out_dir)], footer_links=[], auth=auth or None,
               max_file_size=int(limits.max_file_mb * 1e6), prevent_thread_lock=not block)
