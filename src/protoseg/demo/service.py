"""What the page does with a request, under the operator's rules: the limits first, then only the banks and
presets the operator offers, generation only when switched on (and off the request path), and messages
that help the user without telling anything about the server.

:meth:`DemoService.handle` is the page's handler without gradio: it returns a
:class:`~protoseg.demo.request.DemoResult` or raises :class:`ProtosegError` with a message safe to show.
The causes of refused banks and unexpected failures go to the ``protoseg.demo`` logger.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from protoseg.bank import PrototypeBank
from protoseg.bank.hub import hub_spec
from protoseg.config.fields import given
from protoseg.config.segment import PRESETS
from protoseg.demo.banks import DemoBank, fitting_presets
from protoseg.demo.cache import SegmenterCache
from protoseg.demo.generation import GenerationLimits, GenerationWorker
from protoseg.demo.limits import DemoLimits, check_classes_text, check_uploads, short
from protoseg.demo.request import DemoResult, ProgressFn, run_demo_request
from protoseg.errors import ProtosegError
from protoseg.offline.ondemand import missing_classes

log = logging.getLogger("protoseg.demo")

#: The one answer to a bank that cannot be used, whatever the reason (the reason goes to the log).
BANK_REFUSED = "this bank cannot be used; choose one of the banks in the list"

#: The answer to anything unexpected (the traceback goes to the log).
FAILED = "the request failed; the operator can find the cause in the demo's log"

#: Absolute file system paths inside a message (not the ``//`` of ``hf://``).
_PATH = re.compile(r"(?<![\w.:/])(?:~|/)[^\s'\",;()\[\]]*")


@dataclass(frozen=True)
class DemoSettings:
    """What the page offers (the ``protoseg demo`` options).

    Attributes:
        banks: the operator's banks (:func:`protoseg.demo.banks.operator_banks`); the first is selected.
        preset: the preset the page starts with.
        features, text, sam: model weights replacing the presets' (e.g. local folders).
        device: ``cpu``, ``cuda``, ``cuda:1`` or ``auto``.
        allow_synthetic: the hand-crafted backend's switch starts on.
        allow_bank_paths: web users may type a bank folder or ``hf://`` id of their own.
        offline: typed ``hf://`` ids are refused (the process runs with ``HF_HUB_OFFLINE=1``).
        limits: the bounds on every request.
        generation: the caps on growing banks with missing classes; ``None``: generation is off.
    """

    banks: tuple[DemoBank, ...] = ()
    preset: str = "freeda-b"
    features: str | None = None
    text: str | None = None
    sam: str | None = None
    device: str = "auto"
    allow_synthetic: bool = False
    allow_bank_paths: bool = False
    offline: bool = False
    limits: DemoLimits = field(default_factory=DemoLimits)
    generation: GenerationLimits | None = None

    @property
    def overrides(self) -> dict[str, str]:
        return given(features=self.features, text=self.text, sam=self.sam)

    def presets(self) -> list[str]:
        """The presets the page offers: those fitting any bank (all of them without banks), ``preset`` first."""
        fits = sorted({name for bank in self.banks for name in bank.presets} if self.banks else PRESETS)
        return [self.preset, *(name for name in fits if name != self.preset)]


def scrub(message: str, known: dict[str, str]) -> str:
    """``message`` fit for a web user: each of ``known``'s server strings (upload paths, bank folders) by its
    shown name, any other absolute path as ``…``, on one line of at most 400 characters."""
    for secret, name in sorted(known.items(), key=lambda item: -len(item[0])):
        message = message.replace(secret, name)
    return short(_PATH.sub("…", message), 400)


class DemoService:
    """The page's request handler (see the module docstring); ``out_dir`` receives the outputs."""

    def __init__(self, settings: DemoSettings, out_dir: str | Path, cache: SegmenterCache | None = None,
                 worker: GenerationWorker | None = None) -> None:
        self.settings = settings
        self.out_dir = Path(out_dir)
        self.cache = cache or SegmenterCache(settings.limits.cache_size)
        if worker is None and settings.generation is not None:
            worker = GenerationWorker(settings.generation, settings.device, settings.features, settings.text)
        self.worker = worker

    def handle(self, files: Sequence[str | Path] | None, classes_text: str | None, preset: str, bank: str,
               allow_synthetic: bool = False, generate: bool = False,
               progress: ProgressFn | None = None) -> DemoResult:
        """Check the request against the limits and the operator's choices, then segment (or start a
        generation and say so).

        Raises:
            ProtosegError: with a message fit for a web user.
        """
        paths = [Path(p) for p in files or []]
        known = {str(p): p.name for p in paths}
        try:
            return self._handle(paths, classes_text or "", preset, bank, allow_synthetic, generate, progress, known)
        except ProtosegError as exc:
            raise ProtosegError(scrub(str(exc), known)) from None
        except OSError as exc:
            log.warning("request refused: %s", exc)
            raise ProtosegError("cannot read one of the uploaded files") from None
        except Exception:
            log.exception("request failed")
            raise ProtosegError(FAILED) from None

    def _handle(self, paths: list[Path], classes_text: str, preset: str, bank: str, allow_synthetic: bool,
                generate: bool, progress: ProgressFn | None, known: dict[str, str]) -> DemoResult:
        limits = self.settings.limits
        if not paths:
            raise ProtosegError("drop one or more images to segment")
        check_uploads(paths, limits)
        if not classes_text.strip():
            raise ProtosegError('type the classes, comma-separated, e.g. "sky, grass, car"')
        names = check_classes_text(classes_text, limits)
        chosen = self._bank(bank)
        known[chosen.source] = chosen.name
        loaded = self._load(chosen)
        known.update({str(loaded.path): chosen.name} if loaded.path is not None else {})
        presets = chosen.presets or fitting_presets(loaded, self.settings.overrides)
        if not presets:
            log.warning("bank %.200r refused: no preset uses its feature encoder", chosen.source)
            raise ProtosegError(BANK_REFUSED)
        if preset not in presets:
            raise ProtosegError(f"preset {short(str(preset))!r} does not fit bank {chosen.name}; choose one of "
                                f"{', '.join(presets)}")
        notice = self.worker.status(chosen.source) if self.worker is not None else None
        missing = missing_classes(loaded, names) if generate or notice else []
        if generate and missing:
            return DemoResult(notice=self._generate(chosen, missing))
        if notice and missing:
            return DemoResult(notice=notice)
        s = self.settings
        result = run_demo_request(paths, classes_text, preset, chosen.source, self.out_dir, self.cache,
                                  features=s.features, text=s.text, sam=s.sam, device=s.device,
                                  allow_synthetic=allow_synthetic, progress=progress, time_limit_s=limits.time_limit_s)
        result.notice = notice or ""
        return result

    def _bank(self, name: str) -> DemoBank:
        """The operator's bank shown as ``name``, or — when typed paths are allowed — a typed folder or
        ``hf://`` id (checked when loaded).

        Raises:
            ProtosegError: :data:`BANK_REFUSED`.
        """
        name = (name or "").strip()
        for bank in self.settings.banks:
            if bank.name == name:
                return bank
        hub = bool(name) and name.startswith("hf:")
        if self.settings.allow_bank_paths and name and not (hub and self.settings.offline):
            return DemoBank(short(name, 80), name, ())
        log.info("bank refused (not offered): %.200r", name)
        raise ProtosegError(BANK_REFUSED)

    def _load(self, bank: DemoBank) -> PrototypeBank:
        try:
            return self.cache.bank(bank.source)
        except (ProtosegError, OSError, ValueError) as exc:
            log.warning("bank %.200r refused: %s", bank.source, exc)
            raise ProtosegError(BANK_REFUSED) from None

    def _generate(self, bank: DemoBank, missing: list[str]) -> str:
        if self.worker is None:
            raise ProtosegError(f"{', '.join(map(repr, missing[:5]))}{' …' if len(missing) > 5 else ''} "
                                f"{'is' if len(missing) == 1 else 'are'} not in bank {bank.name}, and generating "
                                "missing classes is off on this demo")
        if hub_spec(bank.source) is not None:
            raise ProtosegError(f"bank {bank.name} is a Hub download and cannot grow")
        return self.worker.submit(bank.source, bank.name, missing)

    def close(self) -> None:
        """Stop a running generation and close every loaded bank."""
        if self.worker is not None:
            self.worker.stop()
        self.cache.clear()
