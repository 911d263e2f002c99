"""Tiny random models for tests: the builders of :mod:`protoseg.testing` (also behind the tiny presets)."""

from protoseg.testing import tiny_clip, tiny_dinov2, tiny_sam, tiny_stable_diffusion

__all__ = ["tiny_clip", "tiny_dinov2", "tiny_sam", "tiny_stable_diffusion"]
