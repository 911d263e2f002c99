"""The narrow interface every dense feature backend implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from protoseg.errors import ProtosegError


@runtime_checkable
class DenseFeatureExtractor(Protocol):
    """Maps RGB images to a grid of patch features.

    Attributes:
        encoder_id: identity of the weights (hub id, folder name or backend name); stored in banks
            so that a bank is never matched against features of another encoder.
        dim: feature dimension ``D``.
        grid: output grid ``(h, w)``, e.g. ``(37, 37)`` for DINOv2 at 518x518.
        device: where the forward pass runs.
    """

    encoder_id: str
    dim: int
    grid: tuple[int, int]
    device: torch.device

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``images``: float ``[B, 3, H, W]`` RGB in 0-255 (any ``H, W``) -> features ``[B, D, h, w]``."""
        ...


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"`` picks CUDA when available, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` and
    ``"mps"`` are checked against this machine.

    Raises:
        ProtosegError: an unknown device name, or a device this machine (or this torch build) lacks.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ProtosegError(f"unknown device {device!r}; use cpu, cuda, cuda:N, mps or auto") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA support" if not torch.backends.cuda.is_built() else "no GPU is visible"
            raise ProtosegError(f"device {device!r} asked for CUDA but {why} on this machine; use --device cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ProtosegError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                                f"(cuda:0..cuda:{torch.cuda.device_count() - 1}); use one of them or --device cpu")
    elif resolved.type == "mps":
        if not torch.backends.mps.is_available():
            raise ProtosegError(f"device {device!r} (Apple MPS) is not available on this machine; use --device cpu")
    elif resolved.type != "cpu":
        raise ProtosegError(f"unsupported device {device!r}; use cpu, cuda, cuda:N, mps or auto")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None``/``"auto"``: fp32 (the papers' inference precision); strings like ``"float16"`` allowed."""
    if dtype is None or dtype == "auto":
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
                    raise ProtosegError(f"unsupported dtype {dtype}; use float32, float16 or bfloat16")
        return dtype
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
                "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}[dtype]
    except KeyError:
            raise ProtosegError(f"unknown dtype {dtype!r}; use float32, float16 or bfloat16") from None
