"""Stable Diffusion loading.

:func:`load_pipeline` loads a real ``StableDiffusionPipeline`` by hub id (e.g.
``stabilityai/stable-diffusion-2-1-base`` for FreeDA, ``stabilityai/stable-diffusion-2-base`` for DPSM)
or local folder (e.g. the tiny random pipeline of :func:`protoseg.testing.tiny_stable_diffusion`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from protoseg.errors import ProtosegError
from protoseg.models.base import resolve_device, resolve_dtype
from protoseg.models.hub import from_pretrained

__all__ = ["SCHEDULERS", "load_pipeline"]

#: Scheduler choices of :func:`load_pipeline` (``None`` keeps the pipeline's own scheduler).
SCHEDULERS = ("ddim", "pndm", "dpm")


def _resolve_pipeline_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None``/``"auto"``: fp16 on CUDA (the usual Stable Diffusion inference precision), fp32 elsewhere."""
    if dtype is None or dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return resolve_dtype(dtype, device)


def _dtype_kwarg(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """``dtype=`` for diffusers versions that renamed ``torch_dtype`` (and warn on the old name)."""
    try:
        from diffusers.utils.deprecation_utils import _TORCH_DTYPE_DEPRECATION_MESSAGE  # noqa: F401
    except ImportError:
        return {"torch_dtype": dtype}
    return {"dtype": dtype}


def _swap_scheduler(pipe: Any, scheduler: str) -> None:
    # import time: diffusers ~2 s, paid when a pipeline loads
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, PNDMScheduler

    classes = {"ddim": DDIMScheduler, "pndm": PNDMScheduler, "dpm": DPMSolverMultistepScheduler}
    if scheduler not in classes:
        raise ProtosegError(f"unknown scheduler {scheduler!r}; choose one of: {', '.join(SCHEDULERS)} "
                            "(or none to keep the pipeline's own)")
    pipe.scheduler = classes[scheduler].from_config(pipe.scheduler.config)


def load_pipeline(name_or_path: str | Path, device: str | torch.device | None = None,
                  dtype: str | torch.dtype | None = None, scheduler: str | None = None) -> Any:
    """A ``diffusers.StableDiffusionPipeline`` from a hub id or a local folder, ready for inference.

    Args:
        name_or_path: hub id (``stabilityai/stable-diffusion-2-1-base``) or folder written by
            ``save_pretrained`` (e.g. by :func:`protoseg.testing.tiny_stable_diffusion`).
        device: ``None``/``"auto"`` = CUDA when available, else CPU.
        dtype: ``None``/``"auto"`` = float16 on CUDA, float32 on CPU; or ``"float32"``/``"float16"``/...
        scheduler: ``None`` keeps the scheduler saved with the pipeline (for the SD 2.x base checkpoints
            that is the checkpoint's default; neither paper states the sampler, only 50 steps);
            ``"ddim"``, ``"pndm"`` or ``"dpm"`` rebuild that scheduler class from the saved config.

    The safety checker is disabled (not loaded): prototypes are built from synthetic images whose
    content is fixed by the captions, and a blacked-out image would silently corrupt a prototype.
    The progress bar of diffusers is switched off (library code never prints).
    """
    from diffusers import StableDiffusionPipeline  # import time: diffusers ~2 s

    device_ = resolve_device(device)
    dtype_ = _resolve_pipeline_dtype(dtype, device_)
    pipe = from_pretrained(StableDiffusionPipeline.from_pretrained, str(name_or_path), **_dtype_kwarg(dtype_),
                           safety_checker=None, requires_safety_checker=False)
    if scheduler is not None:
        _swap_scheduler(pipe, scheduler)
    pipe = pipe.to(device_)
    pipe.set_progress_bar_config(disable=True)
    return pipe
