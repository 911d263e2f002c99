"""Growing a demo bank with missing classes, off the request path: one generation at a time, in a separate
process, with a cap on new classes per request and on its running time.

A request that asks for classes the bank lacks only *starts* the work (:meth:`GenerationWorker.submit`)
and gets its answer at once; the bank folder is replaced atomically when the work ends, and the next
request loads the grown bank (the :class:`~protoseg.demo.cache.SegmenterCache` sees the new manifest and
closes the old bank). A generation past its time limit is killed and its work folder
(``BANK.generate.partial``) removed; so is the folder of one that failed.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from protoseg.errors import ProtosegError
from protoseg.offline.ondemand import generate_missing, generate_work_dir
from protoseg.runs import remove_work_dir

log = logging.getLogger("protoseg.demo")

#: ``target(folder, classes, device, features, text)``: the work a generation process runs.
GenerateFn = Callable[[str, list[str], str, "str | None", "str | None"], object]


@dataclass(frozen=True)
class GenerationLimits:
    """``max_classes`` new classes per request; ``max_seconds`` for one generation (then it is killed)."""

    max_classes: int = 5
    max_seconds: float = 900.0

    def __post_init__(self) -> None:
        if self.max_classes < 1 or self.max_seconds <= 0:
            raise ProtosegError("--generate-max-classes and --generate-max-seconds must be positive")


def grow_bank(folder: str, classes: list[str], device: str, features: str | None, text: str | None) -> None:
    """Generate ``classes`` into the bank folder with its own recipe (the demo's generation process)."""
    generate_missing(folder, classes, device=device, features=features, text=text)


@dataclass
class _Job:
    folder: str
    classes: list[str]
    process: multiprocessing.process.BaseProcess
    started: float


class GenerationWorker:
    """Runs at most one generation at a time in a child process (``spawn``: its memory is returned when it
    ends); :meth:`status` tells a request what happened to its bank's last one."""

    def __init__(self, limits: GenerationLimits, device: str = "cpu", features: str | None = None,
                 text: str | None = None, target: GenerateFn = grow_bank) -> None:
        self.limits = limits
        self._args = (device, features, text)
        self._target = target
        self._lock = threading.Lock()
        self._job: _Job | None = None
        self._outcomes: dict[str, str] = {}

    def submit(self, folder: str, shown: str, classes: Sequence[str]) -> str:
        """Start generating ``classes`` into bank ``folder`` (called ``shown`` on the page); returns the line
        to show.

        Raises:
            ProtosegError: more classes than allowed per request, or another generation still running.
        """
        classes = list(classes)
        if len(classes) > self.limits.max_classes:
            raise ProtosegError(f"{len(classes)} classes are missing from bank {shown}; this demo generates at "
                                f"most {self.limits.max_classes} per request")
        with self._lock:
            job = self._job
            if job is not None:
                if job.folder == folder:
                    return self._running_line(job, shown)
                raise ProtosegError("the demo is generating classes for another request; try again in a few "
                                    "minutes")
            process = multiprocessing.get_context("spawn").Process(
                target=self._target, args=(folder, classes, *self._args), daemon=True)
            process.start()
            job = self._job = _Job(folder, classes, process, time.monotonic())
            self._outcomes.pop(folder, None)
        threading.Thread(target=self._watch, args=(job, shown), daemon=True, name="protoseg-generate").start()
        log.info("generating %s into %s (pid %s)", classes, folder, process.pid)
        return self._running_line(job, shown)

    def status(self, folder: str) -> str | None:
        """A line about bank ``folder``'s generation: running, or how the last one ended (said once)."""
        with self._lock:
            if self._job is not None and self._job.folder == folder:
                return self._running_line(self._job, "")
            return self._outcomes.pop(folder, None)

    def busy(self) -> bool:
        with self._lock:
            return self._job is not None

    def stop(self) -> None:
        """Kill a running generation and remove its work folder (the bank folder keeps the old bank)."""
        with self._lock:
            job = self._job
        if job is not None:
            try:
                job.process.kill()
                job.process.join(10)
            except ValueError:  # it ended and was closed meanwhile
                return
            remove_work_dir(generate_work_dir(job.folder))

    def _running_line(self, job: _Job, shown: str) -> str:
        left = max(0.0, self.limits.max_seconds - (time.monotonic() - job.started))
        bank = f" for bank {shown}" if shown else ""
        return (f"generating {', '.join(map(repr, job.classes))}{bank} in the background (stopped if not done "
                f"within {left:.0f} s); press Segment again when it is done")

    def _watch(self, job: _Job, shown: str) -> None:
        job.process.join(self.limits.max_seconds)
        if job.process.is_alive():
            job.process.kill()
            job.process.join()
            outcome = (f"generating {', '.join(map(repr, job.classes))} was stopped: it took longer than "
                       f"{self.limits.max_seconds:g} s")
        elif job.process.exitcode == 0:
            outcome = f"generated {', '.join(map(repr, job.classes))} for bank {shown}"
        else:
            outcome = f"generating {', '.join(map(repr, job.classes))} failed; the operator can see why in the log"
        if job.process.exitcode != 0:
            log.warning("generation of %s into %s ended with exit code %s", job.classes, job.folder,
                        job.process.exitcode)
            remove_work_dir(generate_work_dir(job.folder))
        job.process.close()
        with self._lock:
            self._job = None
            self._outcomes[job.folder] = outcome
