"""Tiny random models for tests; the builders live in :mod:`protoseg.models.tiny` (used by tiny presets)."""

from protoseg.models.tiny import _word_merges, tiny_clip, tiny_dinov2, write_tiny_clip_vocab

__all__ = ["_word_merges", "tiny_clip", "tiny_dinov2", "write_tiny_clip_vocab"]
