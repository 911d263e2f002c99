"""Many images through a matcher with the accelerator kept busy: the window pipeline of
:meth:`protoseg.segment.Segmenter.segment_many`.

Stages, overlapped:

1. **prefetch** (:class:`Prefetch`): a background thread reads the input iterables (decoding, when they
   load files) and resizes each image (and its given proposals) to the protocol's size, a bounded queue
   ahead of the models;
2. **regions**: the matcher's CPU-only region work (:meth:`protoseg.match.Matcher.window_regions`:
   superpixels, region weights, DPSM's sub-regions) of upcoming windows runs in a pool of worker
   processes while the models run;
3. **forwards**: windows of one size, of one image or several, ``batch_size`` at a time through
   :meth:`~protoseg.match.Matcher.forward_windows` (one model forward per batch);
4. the rest of each window (:meth:`~protoseg.match.Matcher.finish_window`) and overlap averaging, in
   window order, so every image's scores are those :func:`protoseg.windows.slide_batches` gives.

Scores equal the one-image path wherever the models' outputs of a window do not depend on the other
windows of its batch (exactly so for the hand-crafted features; batched matrix products of real models
may differ in float rounding).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from protoseg.errors import ProtosegError
from protoseg.match import Matcher
from protoseg.windows import crop_pixels, rescale_size, resize_image, window_grid

_END = object()  # the end of an iterator, for ``next(iterator, _END)``


def default_workers() -> int:
    """The cores this process may use (``os.sched_getaffinity``; ``os.cpu_count`` where it is missing)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass
class Prepared:
    """One image ready for its windows: ``shape (H, W)`` of the original, ``resized`` float ``[3, h, w]``
    and its proposals ``masks`` bool ``[N, h, w]`` (given ones, resized like the image) or ``None``."""

    shape: tuple[int, int]
    resized: torch.Tensor
    masks: torch.Tensor | None


def prepare_image(image: np.ndarray, proposals: Any, scale: tuple[int, int]) -> Prepared:
    """``image`` uint8 ``[H, W, 3]`` (and its given proposals bool ``[N, H, W]`` or ``None``) -> :class:`Prepared`
    at the protocol's size (:func:`protoseg.windows.rescale_size`, :func:`~protoseg.windows.resize_image`;
    proposals nearest)."""
    resized = resize_image(image, rescale_size(*image.shape[:2], scale))
    masks = None
    if proposals is not None:
        masks = torch.as_tensor(np.asarray(proposals)).bool()
        if masks.ndim != 3 or tuple(masks.shape[1:]) != tuple(image.shape[:2]):
            raise ProtosegError(f"proposals must be bool [N, H, W] masks of the {image.shape[1]}x"
                                f"{image.shape[0]} image; got shape {tuple(masks.shape)}")
        masks = F.interpolate(masks[None].float(), size=tuple(resized.shape[-2:]), mode="nearest")[0] > 0.5
    return Prepared(tuple(image.shape[:2]), resized, masks)


class Prefetch:
    """Reads ``images`` (and one ``proposals`` item per image) on a background thread and prepares up to
    ``depth`` images ahead (:func:`prepare_image`); iterate to get them in order. An error in reading or
    preparing is raised by the iteration; :meth:`close` stops the thread."""

    def __init__(self, images: Iterable[np.ndarray], proposals: Iterable[Any] | None, scale: tuple[int, int],
                 depth: int = 4):
        self._queue: queue.Queue = queue.Queue(max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(images, proposals, scale), daemon=True,
                                        name="protoseg-prefetch")
        self._thread.start()

    def _produce(self, images: Iterable[np.ndarray], proposals: Iterable[Any] | None,
                 scale: tuple[int, int]) -> None:
        try:
            masks = repeat(None) if proposals is None else iter(proposals)
            for image in images:
                given = next(masks, _END)
                if given is _END:
                    raise ProtosegError("segment_many got fewer proposals than images; give one item (masks or "
                                        "None) per image")
                if not self._put(prepare_image(image, given, scale)):
                    return
            if proposals is not None and next(masks, _END) is not _END:
                raise ProtosegError("segment_many got more proposals than images; give one item (masks or "
                                    "None) per image")
            self._put(_END)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[Prepared]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class _Inline(Executor):
    """An executor that runs each job when submitted (``workers=0``)."""

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        job: Future = Future()
        try:
            job.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            job.set_exception(exc)
        return job


def _one_thread() -> None:
    """Worker process start: one torch thread (the pool's processes are the parallelism)."""
    torch.set_num_threads(1)


def region_pool(workers: int) -> Executor:
    """``workers`` processes for the region work, started now, or inline for 0.

    Forked where the platform can (as PyTorch's data loader does: no re-import of the caller's main module,
    one torch thread per worker), before the pipeline's own threads start.
    """
    if workers == 0:
        return _Inline()
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method), initializer=_one_thread)
    for job in [pool.submit(_one_thread) for _ in range(workers)]:
        job.result()
    return pool


@dataclass
class _Image:
    """An image in flight (original ``shape``, resized ``size``): its windows' sum and overlap count at the
    resized size, the windows ``left`` to score, and the matcher's counts for it."""

    index: int
    shape: tuple[int, int]
    size: tuple[int, int]
    left: int
    total: torch.Tensor | None = None
    count: torch.Tensor | None = None
    stats: dict[str, int] = field(default_factory=dict)


@dataclass
class _Window:
    """One window: its image, span ``(y1, y2, x1, x2)``, crop ``[3, h, w]``, proposals and region job."""

    image: _Image
    span: tuple[int, int, int, int]
    crop: torch.Tensor
    proposals: torch.Tensor | None
    regions: Future | None


class _Ahead:
    """Windows taken ``depth`` ahead of the one being scored (so their region jobs run early). An error in
    producing them (reading, preparing an image) is kept until the windows already taken are scored."""

    def __init__(self, windows: Iterator[_Window], depth: int):
        self.queue: deque[_Window] = deque()
        self._windows, self._depth = windows, depth
        self._failure: BaseException | None = None

    def fill(self) -> bool:
        """Take windows up to ``depth``; whether any is waiting."""
        while self._failure is None and len(self.queue) < self._depth:
            try:
                window = next(self._windows, None)
            except BaseException as exc:  # raised by raise_failure once the windows before it are scored
                self._failure = exc
                break
            if window is None:
                break
            self.queue.append(window)
        return bool(self.queue)

    def raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure


@dataclass
class WindowPipeline:
    """Scores of many images' windows through one matcher (module docstring).

    Attributes:
        matcher: the prepared matcher.
        crop, stride, scale: the sliding-window protocol (:class:`protoseg.config.segment.Preset`).
        device: where the images go for the models.
        batch_size: windows per model forward, counted across images.
        workers: processes for the region work (0: in this thread).
        prefetch: images prepared ahead.
    """

    matcher: Matcher
    crop: int
    stride: int
    scale: tuple[int, int]
    device: torch.device
    batch_size: int = 1
    workers: int = 0
    prefetch: int = 4

    def run(self, images: Iterable[np.ndarray], proposals: Iterable[Any] | None, channels: int,
            constant: float | None) -> Iterator[tuple[tuple[int, int], torch.Tensor, dict[str, int]]]:
        """Per image, in order: ``(original (H, W), scores [channels, h, w] at the resized size, the
        matcher's counts for it)``; ``constant``: a background channel of this score goes first."""
        if self.batch_size < 1:
            raise ProtosegError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.workers < 0:
            raise ProtosegError(f"workers must be >= 0, got {self.workers}")
        self.matcher.reset_stats()
        pool = region_pool(self.workers)
        source = Prefetch(images, proposals, self.scale, self.prefetch)
        try:
            windows = _Ahead(self._windows(source, pool), 2 * self.batch_size + 2 * self.workers)
            while windows.fill():
                batch = [windows.queue.popleft()]
                while (windows.queue and len(batch) < self.batch_size
                       and windows.queue[0].crop.shape == batch[0].crop.shape):
                    batch.append(windows.queue.popleft())
                windows.fill()  # region jobs of the next windows run during this forward
                for window, forwarded in zip(batch, self._forward(batch), strict=True):
                    if self._finish(window, forwarded, channels, constant):
                        image = window.image
                        yield image.shape, image.total / image.count, image.stats
            windows.raise_failure()
        finally:
            source.close()
            pool.shutdown(wait=True, cancel_futures=True)

    def _forward(self, batch: list[_Window]) -> list[Any]:
        return self.matcher.forward_windows(torch.stack([window.crop for window in batch]))

    def _windows(self, source: Prefetch, pool: Executor) -> Iterator[_Window]:
        """The windows of every image in mmseg's order, each with its region job submitted."""
        regions = self.matcher.window_regions()
        for index, prepared in enumerate(source):
            self.matcher.check_proposals(prepared.masks is not None)
            resized = prepared.resized.to(self.device)
            masks = prepared.masks
            if masks is None:  # a matcher that proposes regions once per image, or None
                masks = self.matcher.image_proposals(resized)
            masks = None if masks is None else masks.to(self.device).bool()
            H, W = resized.shape[-2:]
            grid = window_grid(H, W, self.crop, self.stride)
            image = _Image(index, prepared.shape, (H, W), len(grid), stats={k: 0 for k in self.matcher.stats})
            for y1, y2, x1, x2 in grid:
                crop = resized[:, y1:y2, x1:x2]
                job = pool.submit(regions, crop_pixels(crop)) if regions is not None else None
                yield _Window(image, (y1, y2, x1, x2), crop, None if masks is None else masks[:, y1:y2, x1:x2], job)

    def _finish(self, window: _Window, forwarded: Any, channels: int, constant: float | None) -> bool:
        """Score ``window`` into its image's sums; whether that completed the image."""
        before = dict(self.matcher.stats)
        regions = window.regions.result() if window.regions is not None else None
        scores = self.matcher.finish_window(window.crop, forwarded, regions, window.proposals)
        for key, value in self.matcher.stats.items():
            window.image.stats[key] = window.image.stats.get(key, 0) + value - before.get(key, 0)
        if constant is not None:
            scores = torch.cat([torch.full_like(scores[:1], constant), scores])
        image = window.image
        if image.total is None:
            image.total = torch.zeros(channels, *image.size, device=scores.device)
            image.count = torch.zeros(1, *image.size, device=scores.device)
        y1, y2, x1, x2 = window.span
        image.total[:, y1:y2, x1:x2] += scores.float()
        image.count[:, y1:y2, x1:x2] += 1
        image.left -= 1
        return image.left == 0
