"""A small CLIP byte-level BPE vocabulary built offline: the tokenizer of the tiny CLIP and tiny Stable Diffusion.

The layout is CLIP's (``openai/clip-vit-*``, also Stable Diffusion's text encoder): the 256 byte symbols of
byte-level BPE, the same 256 with the end-of-word marker ``</w>``, one token per merge, then
``<|startoftext|>`` and ``<|endoftext|>``. Merges are chosen so that every word of a given list is a single
token; any other text still tokenises (into sub-words or bytes), so nothing ever maps to an unknown token.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["TINY_WORDS", "bytes_to_unicode", "clip_bpe_vocab", "clip_tokenizer", "write_clip_bpe_vocab"]

#: Words the tiny tokenizer encodes as one token each (any other text falls back to sub-words/bytes).
TINY_WORDS: tuple[str, ...] = tuple(dict.fromkeys("""
a an the of on in at with and to is are by near next under over behind front top its their his her
photo picture image view close up good nice two three some many one
cat dog car wheel bus truck bicycle motorcycle person man woman child people bird horse sheep cow
boat train airplane plane bottle chair sofa couch table plant tree grass sky road street building house
wall floor window door water sea river mountain snow sand field food pizza cake cup bowl bed tv laptop
keyboard book clock vase kitchen room city park beach body tire window roof leg head tail eye
red blue green white black yellow brown small large big old new wooden metal
sitting standing parked walking running lying riding flying eating holding
""".split()))


def bytes_to_unicode() -> dict[int, str]:
    """The reversible byte -> printable character map of byte-level BPE (GPT-2 / CLIP), in CLIP's order:
    the printable bytes first, then the others mapped to ``chr(256 + k)``."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def _apply_merges(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding of one word: repeatedly merge the lowest-ranked adjacent pair (all occurrences)."""
    symbols = list(symbols)
    while len(symbols) > 1:
        pairs = [(symbols[i], symbols[i + 1]) for i in range(len(symbols) - 1)]
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        merged: list[str] = []
        i = 0
        while i < len(symbols):
            if i < len(symbols) - 1 and (symbols[i], symbols[i + 1]) == best:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


def clip_bpe_vocab(words: tuple[str, ...] | list[str] = TINY_WORDS
                   ) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """``(vocab, merges)`` of a CLIP-style BPE vocabulary in which each of ``words`` (lower-case ASCII) is
    one token. Merges are appended at the end of the ranking, so a new merge only fires once no earlier
    merge applies and words already encoded as one token keep their encoding."""
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars]
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in dict.fromkeys(words):
        initial = list(word[:-1]) + [word[-1] + "</w>"]
        symbols = _apply_merges(initial, ranks)
        while len(symbols) > 1:
            pair = (symbols[0], symbols[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            tokens.append(pair[0] + pair[1])
            symbols = _apply_merges(initial, ranks)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    return vocab, merges


def write_clip_bpe_vocab(folder: str | Path, words: tuple[str, ...] | list[str] = TINY_WORDS) -> Path:
    """Write ``vocab.json`` + ``merges.txt`` of :func:`clip_bpe_vocab` into ``folder``; returns ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_bpe_vocab(words)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
                                       encoding="utf-8")
    return folder


def clip_tokenizer(words: tuple[str, ...] | list[str] = TINY_WORDS) -> Any:
    """A real ``transformers.CLIPTokenizer`` (77-token context) over :func:`clip_bpe_vocab` of ``words``."""
    from transformers import CLIPTokenizer  # import time: transformers (seconds), paid on use

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = CLIPTokenizer.from_pretrained(str(write_clip_bpe_vocab(tmp, words)), model_max_length=77)
    return tokenizer
