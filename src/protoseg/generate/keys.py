"""FreeDA textual keys: a noun embedded in its caption's context.

For a noun ``w`` taken from a caption ``c`` (FreeDA, "Textual Keys Extraction", Eq. 3)::

    t_i(w) = encode_text(template_i.format(w))          i = 1..T     (raw CLIP text embeddings)
    t̂(w)   = normalise( (1/T) Σ_i t_i(w) )                             (mean template embedding)
    ĉ      = normalise( encode_text(c) )                               (caption embedding)
    k(c,w) = α t̂(w) + (1 − α) ĉ                                        α = 0.9 in the paper

Normalisation (a choice; the paper does not say): the template embeddings are averaged *raw* and the
mean is L2-normalised — exactly how FreeDA's released code embeds the class names that query the keys
— and the caption embedding is L2-normalised, so ``α`` weighs two unit vectors of the same scale
(``normalize_each=True`` normalises each template embedding before averaging, matching queries built
with the usual CLIP recipe). The
key itself is returned un-normalised (``normalize_keys=False``); :class:`protoseg.bank.index.KeyIndex`
normalises keys when indexing (cosine retrieval). Pass ``normalize_keys=True`` for unit keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from protoseg.errors import ProtosegError
from protoseg.models.clip import FREEDA_TEMPLATES

DEFAULT_ALPHA = 0.9


class TextEncoder(Protocol):
    """What :func:`text_keys` needs from the CLIP adapter: raw (un-normalised) text embeddings."""

    def encode_text(self, texts: list[str]) -> Any:
        """``texts`` (N) -> embeddings ``[N, Dt]`` (torch tensor or numpy array)."""
        ...


def _default_templates() -> tuple[str, ...]:
    return tuple(FREEDA_TEMPLATES)


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _l2_normalise(x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def _encode(clip: TextEncoder, texts: list[str], batch_size: int) -> np.ndarray:
    chunks = [_as_numpy(clip.encode_text(texts[i:i + batch_size])) for i in range(0, len(texts), batch_size)]
    return np.concatenate(chunks, axis=0)


def mean_template_embeddings(clip: TextEncoder, nouns: Sequence[str], templates: Sequence[str],
                             batch_size: int = 256, normalize_each: bool = False) -> np.ndarray:
    """``t̂(w)`` of the ``U`` distinct nouns (in order of first appearance), ``[U, Dt]``: the
    L2-normalised mean of their raw template embeddings (``normalize_each=True``: of their
    L2-normalised template embeddings, the usual CLIP recipe) — the same vectors as
    ``ClipModel.encode_classes(nouns, templates, normalize_each)``."""
    unique = list(dict.fromkeys(nouns))
    prompts = [template.format(noun) for noun in unique for template in templates]
    raw = _encode(clip, prompts, batch_size).reshape(len(unique), len(templates), -1)
    if normalize_each:
        raw = _l2_normalise(raw)
    return _l2_normalise(raw.mean(axis=1))


def text_keys(clip: TextEncoder, nouns: Sequence[str], captions: Sequence[str], alpha: float = DEFAULT_ALPHA,
              templates: Sequence[str] | None = None, normalize_keys: bool = False,
              normalize_each: bool = False, batch_size: int = 256) -> np.ndarray:
    """FreeDA keys ``k_n = α·t̂(nouns[n]) + (1−α)·ĉ(captions[n])`` (module docstring for normalisation).

    Args:
        clip: any object with ``encode_text(list[str]) -> [N, Dt]`` raw embeddings (the CLIP adapter).
        nouns: ``N`` nouns; ``nouns[n]`` was taken from ``captions[n]``.
        captions: ``N`` captions (repeated for several nouns of the same caption; each distinct caption
            and each distinct noun is encoded once).
        alpha: weight of the noun embedding, in ``[0, 1]``.
        templates: format strings with one ``{}``; default ``protoseg.models.clip.FREEDA_TEMPLATES``.
        normalize_keys: L2-normalise the resulting keys.
        normalize_each: normalise each template embedding before averaging (the usual CLIP recipe;
            FreeDA's code does not). Use the same setting as for the class queries.

    Returns:
        float32 ``[N, Dt]``.
    """
    if len(nouns) != len(captions):
        raise ProtosegError(f"text_keys needs one caption per noun; got {len(nouns)} nouns and "
                            f"{len(captions)} captions")
    if not 0.0 <= alpha <= 1.0:
        raise ProtosegError(f"alpha must lie in [0, 1], got {alpha}")
    templates = tuple(templates) if templates is not None else _default_templates()
    if not templates or any("{}" not in t for t in templates):
        raise ProtosegError(f"templates must be non-empty format strings with one '{{}}', got {templates!r}")
    if not nouns:
        raise ProtosegError("text_keys got no nouns; extract nouns from the captions first")
    unique_nouns = list(dict.fromkeys(nouns))
    noun_index = {noun: i for i, noun in enumerate(unique_nouns)}
    t_hat = mean_template_embeddings(clip, unique_nouns, templates, batch_size, normalize_each)
    unique_captions = list(dict.fromkeys(captions))
    caption_index = {caption: i for i, caption in enumerate(unique_captions)}
    c_hat = _l2_normalise(_encode(clip, unique_captions, batch_size))
    keys = (alpha * t_hat[[noun_index[n] for n in nouns]]
            + (1.0 - alpha) * c_hat[[caption_index[c] for c in captions]])
    if normalize_keys:
        keys = _l2_normalise(keys)
    return keys.astype(np.float32)
