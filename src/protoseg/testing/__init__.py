"""Test scaffolding that ships with the package: tiny random models of the real classes (smoke presets, tests)."""

from protoseg.testing.tiny import (
    TINY_NAMES,
    ensure_tiny_models,
    tiny_clip,
    tiny_dinov2,
    tiny_dir,
    tiny_model_path,
    tiny_sam,
    tiny_stable_diffusion,
)
from protoseg.testing.tokenizer import TINY_WORDS, clip_bpe_vocab, clip_tokenizer, write_clip_bpe_vocab

__all__ = ["TINY_NAMES", "TINY_WORDS", "clip_bpe_vocab", "clip_tokenizer", "ensure_tiny_models", "tiny_clip",
           "tiny_dinov2", "tiny_dir", "tiny_model_path", "tiny_sam", "tiny_stable_diffusion",
           "write_clip_bpe_vocab"]
