"""SAM's ViT image encoder (``transformers.SamVisionEncoder``) computed leaner, for CPUs.

Same weights and maths as ``SamModel.get_image_embeddings``; what changes is the attention. ``transformers``
builds the decomposed relative-position bias of every head as a 5-D tensor, copies it into a
(heads, HW, HW) mask (805 MB in fp32 for a global ViT-B layer) and then adds it inside attention: on a CPU
that copying and adding cost more than the attention's matrix products (a global ViT-B layer: 3.5-4.0 s of
attention, of which ~1.1 s is SDPA without a bias). Here the bias is written once, straight into the
layout SDPA reads, from the two small per-axis terms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _attention(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``SamVisionAttention`` / ``SamVisionSdpaAttention`` on (B, h, w, C) tokens (B = windows or images)."""
    b, h, w, _ = x.shape
    heads = attn.num_attention_heads
    qkv = attn.qkv(x).reshape(b, h * w, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # (B, heads, hw, head_dim)
    bias = None
    if attn.use_rel_pos:
        rel_h = attn.get_rel_pos(h, h, attn.rel_pos_h).to(q.dtype)  # (h, h_key, head_dim)
        rel_w = attn.get_rel_pos(w, w, attn.rel_pos_w).to(q.dtype)
        grid = q.reshape(b, heads, h, w, -1)
        by_row = torch.einsum("bnhwc,hkc->bnhwk", grid, rel_h).reshape(b, heads, h * w, h, 1)
        by_col = torch.einsum("bnhwc,wkc->bnhwk", grid, rel_w).reshape(b, heads, h * w, 1, w)
        bias = (by_row + by_col).view(b, heads, h * w, h * w)  # one write, already in SDPA's layout
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    out = out.reshape(b, heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
    return attn.proj(out)


def vit_layer(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``SamVisionLayer``: pre-norm windowed or global attention, then the MLP."""
    residual = x
    x = layer.layer_norm1(x)
    if layer.window_size > 0:
        height, width = x.shape[1:3]
        x, padded = layer.window_partition(x, layer.window_size)
    x = _attention(layer.attn, x)
    if layer.window_size > 0:
        x = layer.window_unpartition(x, layer.window_size, padded, (height, width))
    x = residual + x
    return x + layer.mlp(layer.layer_norm2(x))


def vit_image_embeddings(vision_encoder: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """``SamModel.get_image_embeddings(pixel_values)``: (B, 3, 1024, 1024) -> (B, C, 64, 64)."""
    x = vision_encoder.patch_embed(pixel_values)
    if vision_encoder.pos_embed is not None:
        x = x + vision_encoder.pos_embed
    for layer in vision_encoder.layers:
        x = vit_layer(layer, x)
    return vision_encoder.neck(x)
