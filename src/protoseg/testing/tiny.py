"""Tiny random models of the real Hugging Face classes, saved to folders the adapters load.

They share the architecture code and the loading path of the real checkpoints (``facebook/dinov2-*``,
``openai/clip-vit-*``, ``stabilityai/stable-diffusion-2-*``); only the sizes and the (random, seeded)
weights differ. The ``*-tiny`` presets use them so that an install can be smoke-tested end to end on a
CPU without any download; their outputs carry no meaning.

:func:`ensure_tiny_models` writes them once into ``tiny_dir()`` (``$PROTOSEG_CACHE/tiny``, default
``~/.cache/protoseg/tiny``) and returns the folders.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from protoseg.atomic import atomic_dir, mark_generated

#: Words the tiny CLIP tokenizer merges into single tokens (everything else is split into byte tokens).
_MERGES = [("t", "h"), ("th", "e</w>"), ("o", "f</w>"), ("p", "h"), ("ph", "o"), ("pho", "t"),
           ("phot", "o</w>"), ("a", "r"), ("ar", "t</w>")]

#: Folder names of the tiny models inside :func:`tiny_dir` (also their encoder ids in banks).
TINY_NAMES = {"features": "tiny-dinov2", "text": "tiny-clip", "diffusion": "tiny-sd"}


def tiny_dir() -> Path:
    """Where the tiny models live: ``$PROTOSEG_CACHE/tiny`` (default ``~/.cache/protoseg/tiny``)."""
    root = os.environ.get("PROTOSEG_CACHE") or str(Path.home() / ".cache" / "protoseg")
    return Path(root) / "tiny"


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for the bytes 0..255, in byte order."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    symbols = {}
    extra = 0
    for b in range(256):
        if b in printable:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def _word_merges(words: list[str]) -> list[tuple[str, str]]:
    """Merges that make each (lower-case ASCII) word one token, as CLIP's vocabulary does for common words."""
    merges: list[tuple[str, str]] = []
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        left = pieces[0]
        for piece in pieces[1:]:
            if (left, piece) not in merges:
                merges.append((left, piece))
            left += piece
    return merges


def write_tiny_clip_vocab(folder: str | Path, words: list[str] | tuple[str, ...] = ()) -> Path:
    """Write ``vocab.json`` + ``merges.txt`` of a small byte-level BPE vocabulary laid out like CLIP's
    (bytes, bytes + ``</w>``, merges, then ``<|startoftext|>``, ``<|endoftext|>``). Any lower-case
    English text tokenises with it; each of ``words`` becomes a single token."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    symbols = _byte_symbols()
    merges = list(_MERGES) + [m for m in _word_merges(list(words)) if m not in _MERGES]
    tokens = symbols + [s + "</w>" for s in symbols]
    for pair in merges:
        if "".join(pair) not in tokens:
            tokens.append("".join(pair))
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False),
                                       encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
                                       encoding="utf-8")
    return folder


def tiny_dinov2(folder: str | Path, seed: int = 0, hidden_size: int = 32) -> Path:
    """A random 2-layer ``Dinov2Model`` (patch 14, 518 px -> 37x37 grid) saved to ``folder``."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    config = Dinov2Config(hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=2 * hidden_size, patch_size=14, image_size=518)
    folder = Path(folder)
    Dinov2Model(config).eval().save_pretrained(folder)
    return folder


def tiny_clip(folder: str | Path, seed: int = 0, projection_dim: int = 16) -> Path:
    """A random 2-layer ``CLIPModel`` (text 32-d, vision 32-d patch 32 at 224 px, projection 16-d) with a
    small ``CLIPTokenizer``, both saved to ``folder``."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    folder = Path(folder)
    with tempfile.TemporaryDirectory() as vocab_dir:
        tokenizer = CLIPTokenizer.from_pretrained(str(write_tiny_clip_vocab(vocab_dir)))
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=224, patch_size=32)
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim))
    model.eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _tiny_sd(folder: Path, seed: int = 0) -> Path:
    from protoseg.models.diffusion import make_tiny_pipeline

    return make_tiny_pipeline(folder, seed=seed)


_BUILDERS = {"features": tiny_dinov2, "text": tiny_clip, "diffusion": _tiny_sd}


def tiny_model_path(role: str, root: str | Path | None = None) -> Path:
    """Folder of the tiny model of ``role`` (``"features"``, ``"text"``, ``"diffusion"``); may not exist."""
    return Path(root or tiny_dir()) / TINY_NAMES[role]


def ensure_tiny_models(roles: tuple[str, ...] = ("features", "text", "diffusion"),
                       root: str | Path | None = None, seed: int = 0) -> dict[str, Path]:
    """Create the tiny models of ``roles`` under ``root`` (default :func:`tiny_dir`) unless present.

    Each folder is written to a temporary sibling, marked as generated by protoseg and renamed into place,
    so a half-written model is never picked up; an existing folder is never modified. Returns
    ``{role: folder}``.
    """
    out = {}
    for role in roles:
        target = tiny_model_path(role, root)
        if not target.is_dir():
            try:
                with atomic_dir(target) as tmp:
                    _BUILDERS[role](tmp, seed=seed)
                    mark_generated(tmp, {"tiny-model": role, "seed": seed})
            except OSError:
                if not target.is_dir():  # another process may have won the race
                    raise
        out[role] = target
    return out
