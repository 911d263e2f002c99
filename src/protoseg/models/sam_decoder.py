"""SAM's prompt encoder + mask decoder for a batch of point prompts on one image, doing per-point work only.

The same function as ``transformers``' ``SamModel`` forward on an image embedding (prompt encoder, two-way
transformer, mask upscaling, hypernetwork heads), on the model's own modules and weights, computed in an order
that never repeats per point what all points of the image share:

- :func:`prepare_image` (once per image): the image tokens plus the dense "no mask" embedding, and every
  projection that does not depend on the prompts — the first layer's token-to-image keys and values and its
  image-to-token queries (their inputs are the image embedding + positional encoding, the same for all
  points before the first image update) and, for the later layers, the projections of the positional
  encoding (a linear projection of ``keys + pe`` is ``keys W^T + proj(pe)``).
- :func:`decode_points` (per batch of points): no per-point copy of the image embedding is made; the
  first layer attends to the shared tensors by broadcasting, and attention against per-point image tokens
  folds the key / query / value projections into the few token vectors (``(q W_k) keys^T`` instead of
  ``q (keys W_k^T)^T``, ``(p keys) W_v^T`` instead of ``p (keys W_v^T)``), so the ``[P, N, C]`` image tokens
  are only read by matrix products. The transposed convolutions of the upscaling (kernel = stride = 2) are
  per-token linear maps, run as matrix products on the token layout.

Shapes: ``P`` prompts (points of one image), ``n`` points per prompt, ``T = 1 + M + n + 1`` tokens per
prompt (IoU token, ``M = num_multimask_outputs + 1`` mask tokens, the point embeddings and SAM's padding
point), ``N = h * w`` image tokens (SAM-B: 64 x 64), ``C`` channels (256), ``Ci`` attention channels and
``H`` heads of an attention (``d = Ci / H``).

:func:`decode_points_hf` runs ``SamModel.forward`` itself with the same arguments and results, for
comparison. Neither path supports boxes, mask prompts or PerSAM's ``attention_similarity`` /
``target_embedding``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

DECODERS = ("fast", "hf")


@dataclass(frozen=True)
class DecoderImage:
    """What every point prompt of one image shares (:func:`prepare_image`).

    Attributes:
        tokens: ``[N, C]`` image embedding + dense "no mask" embedding, one row per image token (row-major
            over the ``h x w`` grid).
        size: ``(h, w)`` of the image embedding.
        token_to_image_keys: one ``[N, Ci]`` per two-way layer and one for the final attention: the first
            layer's key projection of ``tokens + pe``; later ones the key projection (with bias) of ``pe``.
        first_values: ``[N, Ci]`` the first layer's token-to-image value projection of ``tokens``.
        image_to_token_queries: one ``[N, Ci]`` per two-way layer: the first layer's image-to-token query
            projection of ``tokens + pe``; later ones the query projection (with bias) of ``pe``.
    """

    tokens: torch.Tensor
    size: tuple[int, int]
    token_to_image_keys: tuple[torch.Tensor, ...]
    first_values: torch.Tensor
    image_to_token_queries: tuple[torch.Tensor, ...]


@torch.no_grad()
def prepare_image(model: nn.Module, image_embedding: torch.Tensor) -> DecoderImage:
    """The per-image part of the decoder for ``SamModel`` ``model``: ``image_embedding`` ``[1, C, h, w]``."""
    _, channels, height, width = image_embedding.shape
    pe = model.get_image_wide_positional_embeddings()  # [1, C, h, w]
    if tuple(pe.shape[-2:]) != (height, width):
        raise ValueError(f"image embedding {height}x{width} does not match the model's {tuple(pe.shape[-2:])}")
    _, dense = model.prompt_encoder(input_points=None, input_labels=None, input_boxes=None, input_masks=None)
    tokens = (image_embedding + dense).flatten(2)[0].transpose(0, 1).contiguous()  # [N, C]
    pe = pe.flatten(2)[0].transpose(0, 1).to(tokens.dtype).contiguous()  # [N, C]
    transformer = model.mask_decoder.transformer
    first, *later = transformer.layers
    with_pe = tokens + pe
    keys = [first.cross_attn_token_to_image.k_proj(with_pe)]
    keys += [layer.cross_attn_token_to_image.k_proj(pe) for layer in later]
    keys.append(transformer.final_attn_token_to_image.k_proj(pe))
    queries = [first.cross_attn_image_to_token.q_proj(with_pe)]
    queries += [layer.cross_attn_image_to_token.q_proj(pe) for layer in later]
    return DecoderImage(tokens, (height, width), tuple(keys), first.cross_attn_token_to_image.v_proj(tokens),
                        tuple(queries))


@torch.no_grad()
def decode_points(model: nn.Module, image: DecoderImage, points: torch.Tensor, labels: torch.Tensor,
                  multimask_output: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks and predicted IoUs of ``P`` point prompts on one image (``SamModel`` ``model``).

    Args:
        model: the ``transformers.SamModel`` whose prompt encoder and mask decoder run.
        image: the image's shared part (:func:`prepare_image`).
        points: ``[P, n, 2]`` ``(x, y)`` in pixels of the encoder's input frame (as ``SamModel``'s
            ``input_points[0]``).
        labels: ``[P, n]`` point labels (``1`` foreground, ``0`` background, ``-1`` / ``-10`` as in
            ``SamModel``).
        multimask_output: three masks per prompt (``True``) or one.

    Returns:
        Low-resolution mask logits ``[P, K, 4h, 4w]`` and predicted IoUs ``[P, K]``, ``K = 3`` or ``1``, in
        the model's dtype (as ``SamModel``'s ``pred_masks[0]`` and ``iou_scores[0]``).
    """
    decoder = model.mask_decoder
    sparse, _ = model.prompt_encoder(input_points=points[None], input_labels=labels[None], input_boxes=None,
                                     input_masks=None)  # [1, P, n + 1, C]
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight])  # [1 + M, C]
    prompts = torch.cat([output_tokens.expand(len(points), -1, -1), sparse[0].to(output_tokens.dtype)], dim=1)
    queries, keys = _two_way_transformer(decoder.transformer, prompts, image)
    selected = range(1, decoder.num_mask_tokens) if multimask_output else range(1)
    hyper = torch.stack([decoder.output_hypernetworks_mlps[i](queries[:, 1 + i]) for i in selected], dim=1)
    features = _mask_features(decoder, keys)  # [P, 16 N, C / 8]
    masks = torch.bmm(features, hyper.transpose(1, 2))  # [P, 16 N, K]
    height, width = image.size
    masks = masks.view(len(points), height, width, 2, 2, 2, 2, len(selected))
    masks = masks.permute(0, 7, 1, 3, 5, 2, 4, 6).reshape(len(points), len(selected), 4 * height, 4 * width)
    iou = decoder.iou_prediction_head(queries[:, 0])[:, selected.start:selected.stop]
    return masks, iou


@torch.no_grad()
def decode_points_hf(model: nn.Module, image_embedding: torch.Tensor, points: torch.Tensor, labels: torch.Tensor,
                     multimask_output: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """As :func:`decode_points`, by ``SamModel.forward`` on ``image_embedding`` ``[1, C, h, w]`` (the
    reference: it repeats the image embedding and its positional encoding for every prompt)."""
    out = model(image_embeddings=image_embedding, input_points=points[None], input_labels=labels[None],
                multimask_output=multimask_output)
    return out.pred_masks[0], out.iou_scores[0]


def _two_way_transformer(transformer: nn.Module, prompts: torch.Tensor, image: DecoderImage
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """``SamTwoWayTransformer`` on prompt tokens ``[P, T, C]`` -> tokens ``[P, T, C]``, image tokens ``[P, N, C]``."""
    queries, keys = prompts, None  # keys None: the image tokens are still the shared ``image.tokens``
    for index, layer in enumerate(transformer.layers):
        queries, keys = _two_way_block(layer, index, queries, keys, prompts, image)
    final = transformer.final_attn_token_to_image
    attended = _token_to_image(final, final.q_proj(queries + prompts), keys, image.token_to_image_keys[-1], None)
    return transformer.layer_norm_final_attn(queries + attended), keys


def _two_way_block(layer: nn.Module, index: int, queries: torch.Tensor, keys: torch.Tensor | None,
                   prompts: torch.Tensor, image: DecoderImage) -> tuple[torch.Tensor, torch.Tensor]:
    """One ``SamTwoWayAttentionBlock``: tokens ``[P, T, C]``, image tokens ``[P, N, C]`` or ``None`` (shared)."""
    if layer.skip_first_layer_pe:
        queries = layer.self_attn(query=queries[None], key=queries[None], value=queries[None])[0][0]
    else:
        query = (queries + prompts)[None]
        queries = queries + layer.self_attn(query=query, key=query, value=queries[None])[0][0]
    queries = layer.layer_norm1(queries)
    attention = layer.cross_attn_token_to_image
    attended = _token_to_image(attention, attention.q_proj(queries + prompts), keys,
                               image.token_to_image_keys[index], image.first_values if keys is None else None)
    queries = layer.layer_norm2(queries + attended)
    queries = layer.layer_norm3(queries + layer.mlp(queries))
    attention = layer.cross_attn_image_to_token
    keys = _image_to_token(attention, attention.k_proj(queries + prompts), attention.v_proj(queries), keys,
                           image.tokens, image.image_to_token_queries[index])
    return queries, layer.layer_norm4(keys)


def _head_scores(vectors: torch.Tensor, projected: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
    """Scaled per-head dot products of token vectors ``[P, T, Ci]`` with shared image vectors ``[N, Ci]``:
    ``[H, P, T, N]``."""
    prompts, tokens, channels = vectors.shape
    per_head = channels // heads
    left = (vectors * scale).reshape(prompts * tokens, heads, per_head).transpose(0, 1)  # [H, P T, d]
    right = projected.view(-1, heads, per_head).permute(1, 2, 0)  # [H, d, N]
    return torch.bmm(left, right).view(heads, prompts, tokens, -1)


def _fold_into_tokens(vectors: torch.Tensor, weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Token vectors ``[P, T, Ci]`` through the heads' slices of a projection ``weight`` ``[Ci, C]`` (``x W``):
    ``[P, H T, C]``, row ``h T + t`` = head ``h`` of token ``t``."""
    prompts, tokens, channels = vectors.shape
    per_head = channels // heads
    folded = torch.einsum("pthd,hdc->phtc", vectors.view(prompts, tokens, heads, per_head),
                          weight.view(heads, per_head, -1))
    return folded.reshape(prompts, heads * tokens, -1)


def _softmax(scores: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax in float32, back in the scores' dtype (as ``SamAttention``)."""
    return torch.softmax(scores, dim=dim, dtype=torch.float32).to(scores.dtype)


def _token_to_image(attention: nn.Module, queries: torch.Tensor, keys: torch.Tensor | None,
                     projected_keys: torch.Tensor, shared_values: torch.Tensor | None) -> torch.Tensor:
    """A token-to-image ``SamAttention`` (output projection included) for projected queries ``[P, T, Ci]``.

    ``keys`` ``None``: the image tokens are shared, ``projected_keys`` ``[N, Ci]`` are the keys and
    ``shared_values`` ``[N, Ci]`` the values. Otherwise ``keys`` ``[P, N, C]`` are per-prompt image tokens
    and ``projected_keys`` the projection of the positional encoding; the key and value projections are
    folded into the tokens. Returns ``[P, T, C]``.
    """
    heads, scale = attention.num_attention_heads, attention.scaling
    prompts, tokens, channels = queries.shape
    per_head = channels // heads
    pe_scores = _head_scores(queries, projected_keys, heads, scale)  # [H, P, T, N]
    if keys is None:
        probs = _softmax(pe_scores, -1).view(heads, prompts * tokens, -1)
        values = shared_values.view(-1, heads, per_head).transpose(0, 1)  # [H, N, d]
        out = torch.bmm(probs, values).view(heads, prompts, tokens, per_head).permute(1, 2, 0, 3)
        return attention.out_proj(out.reshape(prompts, tokens, channels))
    folded = _fold_into_tokens(queries * scale, attention.k_proj.weight, heads)  # [P, H T, C]
    scores = torch.bmm(folded, keys.transpose(1, 2)).view(prompts, heads, tokens, -1)
    scores += pe_scores.permute(1, 0, 2, 3)
    probs = _softmax(scores, -1).view(prompts, heads * tokens, -1)
    mixed = torch.bmm(probs, keys).view(prompts, heads, tokens, -1)  # [P, H, T, C]: rows of probs sum to 1
    value = attention.v_proj
    out = torch.einsum("phtc,hdc->pthd", mixed, value.weight.view(heads, per_head, -1))
    out = out + value.bias.view(heads, per_head)
    return attention.out_proj(out.reshape(prompts, tokens, channels))


def _image_to_token(attention: nn.Module, token_keys: torch.Tensor, token_values: torch.Tensor,
                    keys: torch.Tensor | None, shared_tokens: torch.Tensor, projected_queries: torch.Tensor
                    ) -> torch.Tensor:
    """An image-to-token ``SamAttention`` added to the image tokens (residual, before the layer norm).

    Args:
        token_keys, token_values: projected tokens ``[P, T, Ci]``.
        keys: per-prompt image tokens ``[P, N, C]`` (updated in place), or ``None`` for the shared
            ``shared_tokens`` ``[N, C]``.
        projected_queries: ``[N, Ci]`` the query projection of the shared tokens + pe (``keys`` ``None``) or
            of pe alone (the projection of ``keys`` is then folded into ``token_keys``).

    Returns:
        ``[P, N, C]`` image tokens + attention output.
    """
    heads, scale = attention.num_attention_heads, attention.scaling
    prompts, tokens, channels = token_keys.shape
    per_head = channels // heads
    scores = _head_scores(token_keys, projected_queries, heads, scale).permute(1, 0, 2, 3)  # [P, H, T, N]
    if keys is None:
        scores = scores.contiguous()
    else:
        folded = _fold_into_tokens(token_keys * scale, attention.q_proj.weight, heads)  # [P, H T, C]
        scores = torch.bmm(folded, keys.transpose(1, 2)).view(prompts, heads, tokens, -1).add_(scores)
    probs = _softmax(scores, 2).view(prompts, heads * tokens, -1)  # over the tokens of each head
    out = attention.out_proj
    # [P, H T, C]; each head's probabilities sum to 1, so the output bias enters as bias / H per row
    values = torch.einsum("pthd,chd->phtc", token_values.view(prompts, tokens, heads, per_head),
                          out.weight.view(-1, heads, per_head)) + out.bias / heads
    values = values.reshape(prompts, heads * tokens, -1)
    if keys is None:
        return torch.baddbmm(shared_tokens[None], probs.transpose(1, 2), values)
    return keys.baddbmm_(probs.transpose(1, 2), values)


def _mask_features(decoder: nn.Module, keys: torch.Tensor) -> torch.Tensor:
    """``SamMaskDecoder``'s upscaling (two transposed 2x2 / stride-2 convolutions with layer norm and GELU) of
    image tokens ``[P, N, C]``, as per-token linear maps: ``[P, 16 N, C / 8]``.

    Row ``16 n + 8 a + 4 b + 2 c + e`` is pixel ``(4 i + 2 a + c, 4 j + 2 b + e)`` of token ``n = i w + j``.
    """
    prompts = len(keys)
    first, second, norm = decoder.upscale_conv1, decoder.upscale_conv2, decoder.upscale_layer_norm
    mid = first.weight.shape[1]
    x = F.linear(keys, first.weight.permute(2, 3, 1, 0).reshape(4 * mid, -1), first.bias.repeat(4))
    x = F.layer_norm(x.view(prompts, -1, mid), (mid,), norm.weight, norm.bias, norm.eps)
    x = decoder.activation(x)  # [P, 4 N, C / 4]
    out = second.weight.shape[1]
    x = F.linear(x, second.weight.permute(2, 3, 1, 0).reshape(4 * out, mid), second.bias.repeat(4))
    return decoder.activation(x).view(prompts, -1, out)
