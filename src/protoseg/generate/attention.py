"""Cross-attention attribution maps of Stable Diffusion (eq. 1 of FreeDA and of DPSM; DAAM-style).

For a word ``w`` of the prompt of a generated image ``I``:

    A(I, w) = 1/(T L H) * sum_{t, l, h} upsample(attn_{t,l,h}[:, tokens(w)])

``t`` runs over the denoising steps, ``l`` over the UNet's cross-attention layers (all resolutions),
``h`` over the heads of a layer, ``attn_{t,l,h}`` is the softmax attention of the spatial queries over
the 77 text tokens, ``upsample`` is bilinear interpolation. When layers have different head counts (SD 2.x
has 5/10/20 heads per level) the divisor is the number of ``(t, l, h)`` terms actually summed, which is
``T L H`` when every layer has ``H`` heads.

The capture is a diffusers attention processor installed with ``unet.set_attn_processor`` on the
cross-attention layers only (self-attention keeps its own processor). It computes the layer output
exactly like the processor it replaces (``AttnProcessor2_0``, the default with PyTorch 2, or the classic
``AttnProcessor``), so capturing never changes the generated image, and it adds the attention
probabilities of the chosen tokens to a running sum of constant size (``[B, W, h, w]``, independent of
the number of steps):

- classifier-free guidance: the UNet batch is ``[unconditional; conditional]``; only the conditional
  half is captured (detected from the batch size: ``2B`` rows for ``B`` samples);
- batches: every sample has its own words and token indices, and its own maps;
- words of several tokens (``wheelbarrow`` -> ``whee l b ar ro w``): by default the probabilities of
  the word's tokens are **summed** (as DAAM does), so the map is the attention mass the word receives;
  ``token_reduction="mean"`` averages them instead. A word occurring several times in the prompt
  contributes all its occurrences the same way;
- each layer's map (``h_l x w_l`` query grid) is upsampled bilinearly to a common resolution (default:
  the latent grid, the finest cross-attention resolution of SD) before it is added; the final mean is
  upsampled bilinearly to the image size. Pass ``map_size=(H, W)`` of the image to upsample every term
  straight to the image size, which is eq. 1 literally (slower, same result up to interpolation).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

from protoseg.errors import ProtosegError

__all__ = ["CrossAttentionCaptureProcessor", "CrossAttentionStore", "capture_cross_attention",
           "query_grid", "word_token_indices"]

TokenIndices = Sequence[Sequence[Sequence[int]]]
"""Per sample, per word, the positions of the word's tokens in the 77-token text sequence."""


def word_token_indices(tokenizer: Any, prompt: str, word: str) -> list[int]:
    """Positions of the tokens of ``word`` in the encoded ``prompt`` (as the pipeline encodes it).

    Position 0 is the start token, so the first word of the prompt starts at 1. The word is tokenised
    alone and matched as a token subsequence that starts at a word boundary (so ``el`` does not match
    the end of ``wheel``); every occurrence is returned (``"a"`` in ``"a cat on a mat"`` -> ``[1, 4]``).
    Tokens cut off by the tokenizer's maximum length are not returned.

    Raises:
        ProtosegError: ``word`` is empty or does not occur in the (truncated) prompt.
    """
    word_ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    if not word_ids:
        raise ProtosegError(f"empty word {word!r} for prompt {prompt!r}; "
                            "pass a word that occurs in the prompt")
    ids = tokenizer(prompt, padding="max_length", truncation=True, max_length=tokenizer.model_max_length,
                    add_special_tokens=True)["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    special = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
    n = len(word_ids)
    found: list[int] = []
    for start in range(len(ids) - n + 1):
        if ids[start] in special or ids[start:start + n] != word_ids:
            continue
        at_boundary = start == 0 or ids[start - 1] in special or tokens[start - 1].endswith("</w>")
        if at_boundary:
            found.extend(range(start, start + n))
    if not found:
        raise ProtosegError(
            f"word {word!r} does not occur in prompt {prompt!r} (as the tokenizer splits it, within "
            f"{tokenizer.model_max_length} tokens); pass words exactly as they are written in the prompt")
    return found


def query_grid(num_queries: int, latent_size: tuple[int, int]) -> tuple[int, int]:
    """The ``(h, w)`` spatial grid of a UNet attention layer with ``num_queries = h * w`` queries.

    Every UNet level halves the latent grid with a stride-2 convolution (``ceil(n / 2)``), so the grid
    is found by halving ``latent_size`` until the product matches.
    """
    h, w = latent_size
    while h * w > num_queries:
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    if h * w != num_queries:
        raise ValueError(f"{num_queries} attention queries do not form a grid of the latent {latent_size}")
    return h, w


class CrossAttentionStore:
    """Running sum of cross-attention maps of chosen words, for one batch of generated images.

    Args:
        token_indices: per sample, per word, token positions (from :func:`word_token_indices`).
        latent_size: ``(h, w)`` of the latent grid (image size / VAE scale factor), used to lay the
            queries of each layer out spatially.
        map_size: common resolution ``(h, w)`` of the running sum; default ``latent_size``.
        token_reduction: ``"sum"`` (DAAM) or ``"mean"`` over the tokens of a word.

    Attributes:
        sums: float32 ``[B, W, *map_size]`` running sum over steps, layers and heads (``W`` = most words
            of a sample; padding words of shorter samples stay zero).
        num_terms: number of ``(t, l, h)`` terms added to every map.
        num_calls: number of cross-attention layer calls captured (``T * L``).
    """

    def __init__(self, token_indices: TokenIndices, latent_size: tuple[int, int],
                 map_size: tuple[int, int] | None = None, token_reduction: str = "sum"):
        if token_reduction not in ("sum", "mean"):
            raise ProtosegError(f"unknown token_reduction {token_reduction!r}; use 'sum' or 'mean'")
        self.batch_size = len(token_indices)
        self.num_words = [len(words) for words in token_indices]
        max_words = max(self.num_words, default=0)
        self.latent_size = tuple(latent_size)
        self.map_size = tuple(map_size) if map_size is not None else self.latent_size
        self.token_indices = [[list(indices) for indices in words] for words in token_indices]
        self.token_reduction = token_reduction
        for b, words in enumerate(self.token_indices):
            for w, indices in enumerate(words):
                if not indices:
                    raise ProtosegError(f"word {w} of sample {b} has no token indices")
        self._selection: torch.Tensor | None = None
        self.sums = torch.zeros(self.batch_size, max_words, *self.map_size)
        self.num_terms = 0
        self.num_calls = 0

    def conditional_rows(self, rows: int) -> slice:
        """Rows of the UNet batch that carry the conditional prompts (the second half under CFG)."""
        if rows == self.batch_size:
            return slice(0, rows)
        if rows == 2 * self.batch_size:
            return slice(self.batch_size, rows)
        raise ValueError(f"UNet batch of {rows} rows does not match {self.batch_size} captured samples")

    def selection(self, sequence_length: int) -> torch.Tensor:
        """Float ``[B, S, W]`` weights of token ``s`` in word ``w`` of sample ``b`` (1, or 1/n for "mean")."""
        if self._selection is None or self._selection.shape[1] != sequence_length:
            selection = torch.zeros(self.batch_size, sequence_length, self.sums.shape[1])
            for b, words in enumerate(self.token_indices):
                for w, indices in enumerate(words):
                    if max(indices) >= sequence_length:
                        raise ValueError(f"token index {max(indices)} beyond the text length "
                                         f"{sequence_length}")
                    weight = 1.0 if self.token_reduction == "sum" else 1.0 / len(indices)
                    for i in indices:
                        selection[b, i, w] += weight
            self._selection = selection
        return self._selection

    @torch.no_grad()
    def add(self, probs: torch.Tensor) -> None:
        """Add one layer call. ``probs``: ``[B, heads, N, S]`` softmax attention of the conditional rows."""
        batch, heads, queries, sequence_length = probs.shape
        self.num_terms += heads
        self.num_calls += 1
        if self.sums.shape[1] == 0:
            return
        selection = self.selection(sequence_length).to(device=probs.device)
        per_word = torch.bmm(probs.float().sum(dim=1), selection)  # [B, N, W]
        h, w = query_grid(queries, self.latent_size)
        maps = per_word.transpose(1, 2).reshape(batch, -1, h, w)
        if (h, w) != self.map_size:
            maps = F.interpolate(maps, size=self.map_size, mode="bilinear", align_corners=False)
        if self.sums.device != maps.device:
            self.sums = self.sums.to(maps.device)
        self.sums += maps

    def attribution_maps(self, image_size: tuple[int, int] | None = None) -> list[torch.Tensor]:
        """Eq. 1 per sample: float32 ``[W_b, H, W]`` (``W_b`` words of sample ``b``), the running sum
        divided by the number of ``(t, l, h)`` terms, upsampled bilinearly to ``image_size``."""
        if self.num_terms == 0:
            raise RuntimeError("no cross-attention was captured; run the pipeline inside the capture")
        mean = self.sums.cpu() / self.num_terms
        if image_size is not None and tuple(image_size) != self.map_size and mean.shape[1] > 0:
            mean = F.interpolate(mean, size=tuple(image_size), mode="bilinear", align_corners=False)
        return [mean[b, : self.num_words[b]].contiguous() for b in range(self.batch_size)]


class CrossAttentionCaptureProcessor:
    """Attention processor for one cross-attention layer: the output of the processor it replaces,
    plus the attention probabilities of the conditional rows added to a :class:`CrossAttentionStore`.

    With ``AttnProcessor`` (classic) the captured probabilities are the very tensor used for the output;
    with ``AttnProcessor2_0`` (and any other processor, which is replaced by it) the output comes from
    ``scaled_dot_product_attention`` on the same ``q, k, v`` as the default processor, and the
    probabilities are ``softmax(q k^T / sqrt(d))`` recomputed in float32 for the conditional rows.
    """

    def __init__(self, store: CrossAttentionStore, original: Any):
        from diffusers.models.attention_processor import AttnProcessor  # import time: diffusers ~2 s

        self.store = store
        self.original = original
        self.classic = isinstance(original, AttnProcessor)

    def __call__(self, attn: Any, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args: Any, **kwargs: Any) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        batch_size, sequence_length, _ = context.shape
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)

        if self.classic:
            out = self._classic(attn, query, key, value, attention_mask, sequence_length, batch_size)
        else:
            out = self._sdpa(attn, query, key, value, attention_mask, sequence_length, batch_size)

        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    def _classic(self, attn: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, sequence_length: int, batch_size: int) -> torch.Tensor:
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        query, key, value = (attn.head_to_batch_dim(x) for x in (query, key, value))
        probs = attn.get_attention_scores(query, key, attention_mask)  # [B * heads, N, S]
        rows = self.store.conditional_rows(batch_size)
        per_sample = probs.view(batch_size, attn.heads, *probs.shape[1:])
        self.store.add(per_sample[rows])
        return attn.batch_to_head_dim(torch.bmm(probs, value))

    def _sdpa(self, attn: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              attention_mask: torch.Tensor | None, sequence_length: int, batch_size: int) -> torch.Tensor:
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0,
                                             is_causal=False)
        out = out.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)

        rows = self.store.conditional_rows(batch_size)
        with torch.no_grad():
            scores = query[rows].float() @ key[rows].float().transpose(-1, -2) * head_dim ** -0.5
            if attention_mask is not None:
                scores = scores + attention_mask[rows].float()
            self.store.add(scores.softmax(dim=-1))  # [B, heads, N, S]
        return out


def _cross_attention_names(unet: Any) -> set[str]:
    names = set()
    for name in unet.attn_processors:
        module = unet.get_submodule(name.removesuffix(".processor"))
        if getattr(module, "is_cross_attention", False):
            names.add(name)
    return names


@contextmanager
def capture_cross_attention(unet: Any, token_indices: TokenIndices, latent_size: tuple[int, int],
                            map_size: tuple[int, int] | None = None,
                            token_reduction: str = "sum") -> Iterator[CrossAttentionStore]:
    """Install capture processors on every cross-attention layer of ``unet`` for the ``with`` block.

    Yields the :class:`CrossAttentionStore` that collects the maps; the original processors are put
    back on exit (also on error). Arguments as in :class:`CrossAttentionStore`.
    """
    originals = dict(unet.attn_processors)
    cross = _cross_attention_names(unet)
    if not cross:
        raise ProtosegError("this UNet has no cross-attention layers; attribution maps need a "
                            "text-conditioned UNet")
    store = CrossAttentionStore(token_indices, latent_size, map_size, token_reduction)
    unet.set_attn_processor({name: CrossAttentionCaptureProcessor(store, proc) if name in cross else proc
                             for name, proc in originals.items()})
    try:
        yield store
    finally:
        unet.set_attn_processor(originals)
