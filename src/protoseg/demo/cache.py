"""Loaded banks and segmenters of the web demo: a bounded, thread-safe LRU that closes what it drops."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from protoseg.bank import PrototypeBank
from protoseg.bank.hub import hub_spec
from protoseg.config.segment import Preset
from protoseg.models import ModelSet
from protoseg.runs import jsonable
from protoseg.segment import Segmenter

#: ``(resolved folder or hf:// id, manifest (size, mtime) or None)``
BankKey = tuple[str, tuple[int, int] | None]


class SegmenterCache:
    """Loaded banks and segmenters, so that a second request loads nothing — at most ``size`` of each.

    A bank is keyed by its resolved folder and its manifest's size and modification time: a bank rebuilt or
    grown in place is loaded again and the old one is closed (:meth:`PrototypeBank.close`). A segmenter is
    keyed by its preset (every field, model folders included), bank and device. When more than ``size``
    banks or segmenters are loaded, the least recently used are dropped — a bank's segmenters with it —
    and the banks closed, except those a request is using (:meth:`using`), dropped once it ends.

    Thread-safe. ``loads`` counts the segmenters built, ``closed`` the banks closed.
    """

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._lock = threading.RLock()
        self._banks: OrderedDict[str, tuple[BankKey, PrototypeBank]] = OrderedDict()
        self._segmenters: OrderedDict[tuple, tuple[Segmenter, threading.Lock]] = OrderedDict()
        self._in_use: dict[int, int] = {}
        self._retired: list[PrototypeBank] = []
        self.loads = 0
        self.closed = 0

    def bank(self, folder: str | Path) -> PrototypeBank:
        """The bank in ``folder`` or at an ``hf://owner/name[@revision]`` id (validated when first loaded;
        a folder whose manifest changed, e.g. grown by generation, is loaded again)."""
        key, path = self._bank_key(folder)
        with self._lock:
            held = self._banks.get(key[0])
            if held is not None and held[0] == key and (key[1] is not None or hub_spec(path) is not None):
                self._banks.move_to_end(key[0])
                return held[1]
            loaded = PrototypeBank.load(path)  # no manifest: raises, saying why
            if held is not None:
                self._retire(held[1])
            self._banks[key[0]] = (key, loaded)
            self._trim()
            return loaded

    def segmenter(self, preset: Preset, bank: PrototypeBank, device: str,
                  on_load: Callable[[], None] | None = None) -> Segmenter:
        """A :class:`~protoseg.segment.Segmenter` for ``preset`` on ``bank`` (built on first use)."""
        return self._entry(preset, bank, device, on_load)[0]

    @contextmanager
    def using(self, preset: Preset, bank: PrototypeBank, device: str,
              on_load: Callable[[], None] | None = None) -> Iterator[tuple[Segmenter, threading.Lock]]:
        """:meth:`segmenter` with its lock (hold it around each call that prepares or segments), kept open
        while the block runs even if the cache drops it meanwhile."""
        with self._lock:
            segmenter, lock = self._entry(preset, bank, device, on_load)
            self._in_use[id(bank)] = self._in_use.get(id(bank), 0) + 1
        try:
            yield segmenter, lock
        finally:
            with self._lock:
                self._in_use[id(bank)] -= 1
                if not self._in_use[id(bank)]:
                    del self._in_use[id(bank)]
                self._close_retired()

    def grown(self, folder: str | Path, preset: Preset, device: str, segmenter: Segmenter) -> None:
        """Keep ``segmenter``, whose bank grew (:meth:`Segmenter.ensure_classes`), as the segmenter of the
        bank now in ``folder``, so that the next request loads neither again."""
        key, _ = self._bank_key(folder)
        with self._lock:
            held = self._banks.get(key[0])
            if held is not None and held[1] is not segmenter.bank:
                self._retire(held[1])
            self._banks[key[0]] = (key, segmenter.bank)
            self._segmenters[self._segmenter_key(preset, segmenter.bank, device)] = (segmenter, threading.Lock())
            self._trim()

    def clear(self) -> None:
        """Drop and close everything (requests still running keep theirs until they end)."""
        with self._lock:
            for _, bank in list(self._banks.values()):
                self._retire(bank)
            self._banks.clear()
            self._close_retired()

    def _entry(self, preset: Preset, bank: PrototypeBank, device: str,
               on_load: Callable[[], None] | None) -> tuple[Segmenter, threading.Lock]:
        key = self._segmenter_key(preset, bank, device)
        with self._lock:
            if key not in self._segmenters:
                if on_load is not None:
                    on_load()
                models = ModelSet.for_preset(preset, device=device)
                self._segmenters[key] = (Segmenter(preset, bank, models), threading.Lock())
                self.loads += 1
                self._trim()
            self._segmenters.move_to_end(key)
            return self._segmenters[key]

    def _retire(self, bank: PrototypeBank) -> None:
        """Forget ``bank`` and its segmenters; close it now or, when a request uses it, when that ends."""
        for key in [k for k, (s, _) in self._segmenters.items() if s.bank is bank]:
            del self._segmenters[key]
        if not any(b is bank for b in self._retired):
            self._retired.append(bank)
        self._close_retired()

    def _close_retired(self) -> None:
        kept = []
        for bank in self._retired:
            if id(bank) in self._in_use:
                kept.append(bank)
            else:
                bank.close()
                self.closed += 1
        self._retired = kept

    def _trim(self) -> None:
        while len(self._banks) > self.size:
            _, (_, oldest) = self._banks.popitem(last=False)
            self._retire(oldest)
        while len(self._segmenters) > self.size:
            self._segmenters.popitem(last=False)

    @staticmethod
    def _bank_key(folder: str | Path) -> tuple[BankKey, str | Path]:
        """``(key, path to load)`` of a bank: its resolved folder and its manifest's size and modification
        time (a Hub revision's files never change once fetched)."""
        if hub_spec(folder) is not None:
            return (str(folder), None), str(folder)
        path = Path(folder).expanduser()
        manifest = path / "manifest.json"
        stamp = (manifest.stat().st_size, manifest.stat().st_mtime_ns) if manifest.is_file() else None
        return (str(path.resolve()), stamp), path

    @staticmethod
    def _segmenter_key(preset: Preset, bank: PrototypeBank, device: str) -> tuple:
        return json.dumps(jsonable(preset), sort_keys=True), id(bank), bank.manifest.bank_id, device
