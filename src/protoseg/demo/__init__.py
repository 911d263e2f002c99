"""The web demo (``protoseg demo``): drop images, name classes, see the overlay — on a page that is safe to
share with the people the operator invites.

- :mod:`~protoseg.demo.request` — one request without a browser (:func:`run_demo_request`);
- :mod:`~protoseg.demo.cache` — the bounded LRU of loaded banks and segmenters (:class:`SegmenterCache`);
- :mod:`~protoseg.demo.limits` — the bounds on every request (:class:`DemoLimits`);
- :mod:`~protoseg.demo.banks` — the operator's banks and the presets that fit them;
- :mod:`~protoseg.demo.generation` — growing a bank off the request path (:class:`GenerationWorker`);
- :mod:`~protoseg.demo.service` — the operator's rules around a request (:class:`DemoService`);
- :mod:`~protoseg.demo.page` — the Gradio page (:func:`build_demo`, :func:`launch`).
"""

from protoseg.demo.banks import DemoBank, operator_banks
from protoseg.demo.cache import SegmenterCache
from protoseg.demo.generation import GenerationLimits, GenerationWorker
from protoseg.demo.limits import DemoLimits
from protoseg.demo.page import build_demo, error_html, launch, legend_html
from protoseg.demo.request import DemoResult, ImageResult, LegendEntry, run_demo_request
from protoseg.demo.service import BANK_REFUSED, DemoService, DemoSettings

__all__ = [
    "BANK_REFUSED", "DemoBank", "DemoLimits", "DemoResult", "DemoService", "DemoSettings", "GenerationLimits",
    "GenerationWorker", "ImageResult", "LegendEntry", "SegmenterCache", "build_demo", "error_html", "launch",
    "legend_html", "operator_banks", "run_demo_request",
]
