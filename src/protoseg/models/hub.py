"""Loading Hugging Face weights by hub id or local folder, with one clear error when they are missing.

A hub id is first looked up in the local cache only (no network round trip when the weights are there).
When they are not, protoseg fails at once — without waiting for the hub client's retries — if the machine
is offline: ``HF_HUB_OFFLINE`` is set, or the hub's host does not answer within a few seconds. Only then
is the download attempted.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from protoseg.errors import ProtosegError

T = TypeVar("T")

#: Seconds to wait for the hub's host before calling the machine offline.
PROBE_TIMEOUT = 3.0

_TRUE = {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """Whether the user asked for offline mode (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``)."""
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_reachable(timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether a TCP connection to the hub endpoint (``HF_ENDPOINT``, or the HTTPS proxy when one is set)
    opens within ``timeout`` seconds."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlparse(proxy or os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    if not host:
        return True  # cannot tell: let the download try
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _advice(name: str) -> str:
    hub_id = name if _looks_like_hub_id(name) else "<hub id>"
    return (f"download them on a connected machine with `hf download {hub_id} --local-dir DIR` (the CLI of "
            "huggingface-hub), copy DIR here and pass it instead (CLI: --features, --text or --sam)")


def _looks_like_hub_id(name: str) -> bool:
    """``org/name`` or ``name``: no leading ``/``, ``.`` or ``~`` and at most one slash."""
    return bool(name) and name[0] not in "/.~" and name.count("/") <= 1 and "\\" not in name


def resolve_weights(name: str | None, role: str) -> str | None:
    """``name`` unchanged, except ``"tiny"``: the folder of the tiny random model of ``role`` (``"features"``,
    ``"text"``, ``"diffusion"``; :mod:`protoseg.testing.tiny`), made on first use."""
    if name != "tiny":
        return name
    from protoseg.testing.tiny import ensure_tiny_models  # import time: diffusers + transformers, tests only

    return str(ensure_tiny_models((role,))[role])


def from_pretrained(loader: Callable[..., T], name_or_path: str, **kwargs: Any) -> T:
    """``loader(name_or_path, **kwargs)`` (a ``from_pretrained``), turning "weights not found / offline"
    into a :class:`ProtosegError` that says how to provide them."""
    if Path(name_or_path).exists():
        try:
            return loader(name_or_path, **kwargs)
        except (OSError, ValueError) as exc:
            raise ProtosegError(f"cannot load model weights from local folder {name_or_path!r} "
                                f"({type(exc).__name__}: {_first_line(exc)}); {_advice(name_or_path)}") from exc
    if not _looks_like_hub_id(name_or_path):
        raise ProtosegError(f"cannot load model weights from {name_or_path!r}: no such folder; "
                            f"{_advice(name_or_path)}")
    try:
        return loader(name_or_path, **{**kwargs, "local_files_only": True})  # cached: no network at all
    except (OSError, ValueError) as exc:
        cached_error = exc
    if hub_offline():
        raise ProtosegError(f"cannot load model weights {name_or_path!r}: no such local folder, not in the local "
                            f"Hugging Face cache, and HF_HUB_OFFLINE is set; {_advice(name_or_path)}") from cached_error
    if not hub_reachable():
        raise ProtosegError(f"cannot load model weights {name_or_path!r}: no such local folder, not in the local "
                            f"Hugging Face cache, and the hub cannot be reached (offline?); {_advice(name_or_path)}"
                            ) from cached_error
    try:
        return loader(name_or_path, **kwargs)
    except (OSError, ValueError) as exc:
        raise ProtosegError(f"cannot load model weights from hub id {name_or_path!r} ({type(exc).__name__}: "
                            f"{_first_line(exc)}); check the id, or {_advice(name_or_path)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""
