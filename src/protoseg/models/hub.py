"""Loading Hugging Face weights by hub id or local folder, with one clear error when they are missing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from protoseg.errors import ProtosegError

T = TypeVar("T")


def resolve_weights(name: str | None, role: str) -> str | None:
    """``name`` unchanged, except ``"tiny"``: the folder of the tiny random model of ``role`` (``"features"``,
    ``"text"``, ``"diffusion"``; :mod:`protoseg.testing.tiny`), made on first use."""
    if name != "tiny":
        return name
    from protoseg.testing.tiny import ensure_tiny_models

    return str(ensure_tiny_models((role,))[role])


def from_pretrained(loader: Callable[..., T], name_or_path: str, **kwargs: Any) -> T:
    """``loader(name_or_path, **kwargs)`` (a ``from_pretrained``), turning "weights not found / offline"
    into a :class:`ProtosegError` that says how to provide them."""
    try:
        return loader(name_or_path, **kwargs)
    except (OSError, ValueError) as exc:
        where = "local folder" if Path(name_or_path).exists() else "hub id"
        raise ProtosegError(
            f"cannot load model weights from {where} {name_or_path!r} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); on an offline machine download them elsewhere "
            "with `huggingface-cli download <id> --local-dir DIR` and pass DIR instead "
            "(CLI: --features, --text or --sam)"
        ) from exc
