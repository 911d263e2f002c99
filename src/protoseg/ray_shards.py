"""Shards on a Ray cluster: one long-lived worker (a Ray actor) per GPU, or per ``threads`` CPUs where the
cluster has no GPUs; each builds its work function once (models loaded once) and runs shard after shard.

- Workers import protoseg from their own installation. The first call on every worker returns its
  :func:`protoseg.version.build_id`; one that differs from the driver's stops the run with one error
  naming both.
- Results come back to the driver (``finished(index, result)``, once per shard, on the driver), which
  writes every file, so workers need no shared file system for their outputs.
- A worker lost with its node (or killed) leaves the run; its shard runs again on the others (on a new
  worker when none is left), a bounded number of times; a shard's result is delivered once however often
  it ran.
- An address that does not answer is reported within :data:`CONNECT_TIMEOUT_S` seconds.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from protoseg.errors import ProtosegError
from protoseg.version import build_id

T = TypeVar("T")

#: Seconds an unreachable ``--ray-address`` may take, per step (a TCP connection; Ray's handshake), before
#: the run stops with an error.
CONNECT_TIMEOUT_S = 8.0

#: Times a shard is run again after its worker was lost.
RETRIES = 3

#: Seconds between checks for lost workers while waiting for results.
WAIT_S = 1.0

#: Seconds a new worker may take to start (models are loaded later, on its first shard).
START_TIMEOUT_S = 300.0

log = logging.getLogger("protoseg")


class ShardWorker:
    """The body of a Ray actor: ``make()`` builds the work function once, on first use."""

    def __init__(self, make: Callable[[], Callable[[Any], Any]], threads: int | None):
        if threads is not None:
            import torch  # imported on use: this module stays free of torch for the bank reader's users

            torch.set_num_threads(threads)
        self._make = make
        self._work: Callable[[Any], Any] | None = None

    def build(self) -> tuple[str, str]:
        """``(protoseg build id, node id)`` of this worker."""
        import ray  # optional dependency (protoseg[ray]); present on every worker

        return build_id(), ray.get_runtime_context().get_node_id()

    def run(self, items: Any) -> Any:
        if self._work is None:
            self._work = self._make()
        return self._work(items)


def connect(address: str | None, init_kwargs: dict[str, Any]) -> bool:
    """Connect to Ray at ``address`` (``None``: a running connection, or a local Ray on 127.0.0.1); returns
    whether this call started the connection (then the caller shuts it down).

    Raises:
        ProtosegError: Ray is not installed, or ``address`` does not answer within :data:`CONNECT_TIMEOUT_S`.
    """
    try:
        import ray  # optional dependency (protoseg[ray])
    except ImportError:
        raise ProtosegError("--ray needs Ray: pip install 'protoseg[ray]'") from None
    if ray.is_initialized():
        return False
    kwargs = dict(init_kwargs)
    if address is None and "RAY_ADDRESS" not in os.environ:
        kwargs.setdefault("_node_ip_address", "127.0.0.1")  # a local Ray listens on loopback only
    remote = address not in (None, "auto", "local")
    if remote:
        _check_reachable(address)
    failure = _bounded(lambda: ray.init(address=address, include_dashboard=False, log_to_driver=False, **kwargs),
                       CONNECT_TIMEOUT_S if remote else None)
    if isinstance(failure, (ConnectionError, RuntimeError, ValueError, TimeoutError)):
        raise ProtosegError(f"cannot start or reach Ray at {address or 'a local cluster'}: {failure}") from failure
    if failure is not None:
        raise failure
    return True


def _bounded(call: Callable[[], Any], seconds: float | None) -> BaseException | None:
    """Run ``call`` (on a daemon thread when ``seconds`` bounds it); its exception or ``None``. A call still
    running after ``seconds`` is left behind and reported as a :class:`TimeoutError`."""
    if seconds is None:
        try:
            call()
        except BaseException as exc:
            return exc
        return None
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # handed to the caller
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True, name="protoseg-ray-connect")
    thread.start()
    thread.join(seconds)
    if not outcome:
        return TimeoutError(f"no Ray cluster answered within {seconds:.0f} s")
    return outcome[0]


def _check_reachable(address: str) -> None:
    """Open (and close) a TCP connection to ``host:port`` of ``address`` (``ray://`` or plain)."""
    where = address.removeprefix("ray://")
    host, _, port = where.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError) as exc:
        raise ProtosegError(f"cannot reach Ray at {address}: {exc or 'timed out'}; check --ray-address "
                            "(host:port of the cluster's head)") from None


def run_on_ray(shards: Sequence[T], make: Callable[[], Callable[[T], Any]],
               finished: Callable[[int, Any], None], *, address: str | None = None,
               init_kwargs: dict[str, Any] | None = None, threads: int | None = None,
               todo: Sequence[int] | None = None) -> None:
    """Run ``make()(shards[i])`` for each ``i`` of ``todo`` (default: all) on Ray workers and call
    ``finished(i, result)`` on the driver as results arrive (module docstring).

    Args:
        make: a picklable factory of the work function (called once per worker).
        threads: CPUs reserved by each CPU worker and torch threads it uses (default 1).

    Raises:
        ProtosegError: Ray missing or unreachable, a worker running another protoseg build, or a shard whose
            workers were lost more than :data:`RETRIES` times.
    """
    import ray  # optional dependency (protoseg[ray]); connect() said so if it is missing

    started = connect(address, init_kwargs or {})
    try:
        _dispatch(ray, list(range(len(shards))) if todo is None else list(todo), shards, make, finished, threads)
    finally:
        if started:
            ray.shutdown()


def _dispatch(ray: Any, todo: list[int], shards: Sequence[T], make: Callable[[], Callable[[T], Any]],
              finished: Callable[[int, Any], None], threads: int | None) -> None:
    if not todo:
        return
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    count = min(len(todo), gpus if gpus >= 1 else max(1, int(resources.get("CPU", 1) // (threads or 1))))
    actor = ray.remote(num_cpus=0 if gpus else threads or 1, num_gpus=1 if gpus else 0)(ShardWorker)
    queue, tries, done = deque(todo), dict.fromkeys(todo, 0), set()
    workers: list[Any] = [actor.remote(make, threads) for _ in range(count)]
    for worker in workers:
        _check_build(ray, worker)
    running: dict[Any, tuple[int, int]] = {}  # result ref -> (worker slot, shard index)
    while queue or running:
        if not running and not any(w is not None for w in workers):  # every worker lost: start one anew
            workers[0] = actor.remote(make, threads)
            _check_build(ray, workers[0])
        busy = {slot for slot, _ in running.values()}
        for slot, worker in enumerate(workers):
            if queue and worker is not None and slot not in busy:
                index = queue.popleft()
                running[worker.run.remote(shards[index])] = (slot, index)
        ready, _ = ray.wait(list(running), num_returns=1, timeout=WAIT_S)
        for ref in ready:
            slot, index = running.pop(ref)
            try:
                result = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
                tries[index] += 1
                if tries[index] > RETRIES:
                    raise ProtosegError(f"shard {index} lost its Ray worker {tries[index]} times: {exc}") from None
                log.warning("a Ray worker was lost (%s); its shard %d runs again", type(exc).__name__, index)
                queue.appendleft(index)
                workers[slot] = None
                continue
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, ProtosegError):
                    raise ProtosegError(str(cause)) from None
                raise
            if index not in done:
                done.add(index)
                finished(index, result)


def _check_build(ray: Any, worker: Any) -> None:
    """Wait (at most :data:`START_TIMEOUT_S`) for ``worker`` to start; its protoseg build must be the driver's."""
    deadline = time.monotonic() + START_TIMEOUT_S
    ref = worker.build.remote()
    while not ray.wait([ref], timeout=WAIT_S)[0]:
        if time.monotonic() > deadline:
            raise ProtosegError(f"a Ray worker did not start within {START_TIMEOUT_S:.0f} s; check the cluster's "
                                "free CPUs / GPUs")
    theirs, node = ray.get(ref)
    if theirs != build_id():
        raise ProtosegError(f"the Ray worker on node {node} runs protoseg {theirs} but this driver runs "
                            f"{build_id()}; install the same protoseg on every node")
    log.info("Ray worker started on node %s", node)
