"""``sam2`` engines (SAM 2 / 2.1 Hiera) on ``transformers.Sam2Model``, single images.

Differences from SAM handled here: the image is squashed to 1024x1024 (no padding), points scale by
``(1024 / W, 1024 / H)``, the embedding holds the two high-resolution feature maps besides the 64x64 one,
a padding point is always added, and low-res logits cover the squashed image (converted to and from
maskwright's padded convention at this boundary, see :mod:`maskwright.engines.sam_common`).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from maskwright.engines import sam_common
from maskwright.engines.sam import SamFamilyEngine


@functools.lru_cache(maxsize=1)
def _fused_linear_available() -> bool:
    """Whether oneDNN's fused linear (``torch.ops.mkldnn._linear_pointwise``, what inductor emits) runs here."""
    try:
        x, w, b = (
            torch.ones(2, 8, dtype=torch.bfloat16),
            torch.ones(4, 8, dtype=torch.bfloat16),
            torch.ones(4, dtype=torch.bfloat16),
        )
        return bool(torch.equal(torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], ""), F.linear(x, w, b)))
    except Exception:  # no oneDNN build, or the op changed
        return False


def _linear(layer: nn.Linear, x: torch.Tensor, gelu: bool = False) -> torch.Tensor:
    """``layer(x)`` (then exact GELU if ``gelu``). In bf16 through oneDNN's fused linear: bias (and GELU)
    applied in the GEMM's epilogue instead of torch's copy-the-bias-then-accumulate ``addmm`` plus a
    separate GELU pass (~1.3x on the bf16 linears measured here; bit-identical without GELU)."""
    if x.dtype == torch.bfloat16 and layer.bias is not None and _fused_linear_available():
        return torch.ops.mkldnn._linear_pointwise(
            x, layer.weight, layer.bias, "gelu" if gelu else "none", [], "none" if gelu else ""
        )
    out = layer(x)
    return F.gelu(out) if gelu else out


def _mlp(mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``Sam2FeedForward`` of a Hiera block (proj_in, activation, proj_out) with :func:`_linear`."""
    if len(mlp.layers) or mlp.sigmoid_output or type(mlp.activation).__name__ != "GELUActivation":
        return mlp(x)  # not the Hiera MLP shape: keep transformers' code
    return _linear(mlp.proj_out, _linear(mlp.proj_in, x, gelu=True))


def _pool(x: torch.Tensor, stride) -> torch.Tensor:
    """transformers' ``do_pool`` (max pooling of (B, H, W, C) tokens, kernel = stride, floor mode) as a max
    over a reshaped view: the same values, without its two permutes, the NCHW round trip on a
    channels-last tensor and the argmax indices ``max_pool2d`` computes on a CPU."""
    if stride is None:
        return x
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    b, h, w, c = x.shape
    h2, w2 = h // sh, w // sw
    return x[:, : h2 * sh, : w2 * sw].reshape(b, h2, sh, w2, sw, c).amax((2, 4))


def _attention(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``Sam2MultiScaleAttention.forward`` (transformers 5) without its unused per-token head-by-head
    ``attn_weights`` product and softmax (computed there, then discarded: ~5% of a Hiera-T encode)."""
    b, h, w, _ = x.shape
    heads = attn.num_attention_heads
    query, key, value = torch.unbind(_linear(attn.qkv, x).reshape(b, h * w, 3, heads, -1), 2)
    if attn.query_stride:
        query = _pool(query.reshape(b, h, w, -1), attn.query_stride)
        h, w = query.shape[1:3]
        query = query.reshape(b, h * w, heads, -1)
    out = F.scaled_dot_product_attention(
        query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), scale=attn.scale
    )
    return _linear(attn.proj, out.transpose(1, 2).reshape(b, h, w, -1))


def _block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``Sam2MultiScaleBlock.forward`` with :func:`_attention`."""
    from transformers.models.sam2.modeling_sam2 import window_partition, window_unpartition

    residual = x
    x = block.layer_norm1(x)
    if block.dim != block.dim_out:
        residual = _pool(_linear(block.proj, x), block.query_stride)
    window = block.window_size
    if window > 0:
        h, w = x.shape[1:3]
        x, pad_hw = window_partition(x, window)
    x = _attention(block.attn, x)
    if block.query_stride:  # shapes changed by query pooling
        window = block.window_size // block.query_stride[0]
        h, w = residual.shape[1:3]
        pad_hw = (h + (-h) % window, w + (-w) % window)
    if block.window_size > 0:
        x = window_unpartition(x, window, pad_hw, (h, w))
    x = residual + x
    return x + _mlp(block.mlp, block.layer_norm2(x))


def hiera_stages(vision_encoder: nn.Module, pixel_values: torch.Tensor, pos_cache: dict) -> list[torch.Tensor]:
    """The Hiera backbone's stage outputs, channels last (B, H, W, C), high to low resolution. The
    positional embedding is computed once per shape and dtype into ``pos_cache`` (transformers re-runs its
    bicubic resize per image) and the attention skips dead work (:func:`_attention`)."""
    backbone = vision_encoder.backbone
    x = backbone.patch_embed(pixel_values)
    key = (tuple(x.shape[1:3]), x.dtype)
    if key not in pos_cache:
        pos_cache[key] = backbone._get_pos_embed(key[0]).to(x.dtype)
    x = x + pos_cache[key]
    stages = []
    for i, block in enumerate(backbone.blocks):
        x = _block(block, x)
        if i in backbone.stage_ends:
            stages.append(x)
    return stages


def fpn_level(neck: nn.Module, stages: list[torch.Tensor], level: int) -> torch.Tensor:
    """Level ``level`` of ``Sam2VisionNeck`` (NCHW, the neck's dtype): the stage's lateral 1x1 conv, plus the
    upsampled next-coarser level where that level is a top-down one -- the neck's maths, only for the
    levels asked for (the sine position encodings, never read for single images, are skipped)."""
    n = len(neck.convs) - 1
    lateral = neck.convs[n - level](stages[level].permute(0, 3, 1, 2).to(neck.convs[level].weight.dtype))
    if level not in neck.fpn_top_down_levels or level == n:
        return lateral
    coarser = fpn_level(neck, stages, level + 1)
    top_down = F.interpolate(coarser.to(torch.float32), scale_factor=2.0, mode="nearest").to(lateral.dtype)
    return lateral + top_down


def hiera_fpn_features(vision_encoder: nn.Module, pixel_values: torch.Tensor, pos_cache: dict) -> list[torch.Tensor]:
    """``Sam2VisionModel(pixel_values).fpn_hidden_states`` (high to low resolution) computed leaner
    (:func:`hiera_stages`, :func:`fpn_level`)."""
    stages = hiera_stages(vision_encoder, pixel_values, pos_cache)
    n_levels = vision_encoder.num_feature_levels
    return [fpn_level(vision_encoder.neck, stages, i) for i in range(n_levels)]


def folded_projection(lateral: nn.Conv2d, projection: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor] | None:
    """One fp32 (weight, bias) for ``projection(lateral(x))`` when both are 1x1 convolutions (SAM 2's neck
    lateral of a high-resolution level, then the mask decoder's ``conv_s0`` / ``conv_s1``), else None."""
    for conv in (lateral, projection):
        if conv.kernel_size != (1, 1) or conv.stride != (1, 1) or conv.padding != (0, 0) or conv.groups != 1:
            return None
    w_lat = lateral.weight.float()[:, :, 0, 0]
    w_proj = projection.weight.float()[:, :, 0, 0]
    b_lat = lateral.bias.float() if lateral.bias is not None else torch.zeros(w_lat.shape[0])
    b_proj = projection.bias.float() if projection.bias is not None else torch.zeros(w_proj.shape[0])
    return w_proj @ w_lat, w_proj @ b_lat + b_proj


class Sam2Engine(SamFamilyEngine):
    family = "sam2"
    high_res_names = ("high_res_feats_0", "high_res_feats_1")

    def __init__(self, *args, **kwargs) -> None:
        self._pos_cache: dict = {}  # Hiera positional embedding per (token grid, dtype)
        super().__init__(*args, **kwargs)
        neck = self.model.vision_encoder.neck
        n = len(neck.convs) - 1
        convs = (self.model.mask_decoder.conv_s0, self.model.mask_decoder.conv_s1)
        with torch.no_grad():  # per high-res level: neck lateral + conv_s* as one projection, None if it does not fold
            self._folded = [
                None if level in neck.fpn_top_down_levels else folded_projection(neck.convs[n - level], conv)
                for level, conv in enumerate(convs)
            ]

    def _load_model(self) -> nn.Module:
        from transformers import Sam2Model
        from transformers.utils import logging as hf_logging

        from maskwright.engines import hub

        if hub.read_model_type(self.model_dir) != "sam2_video":
            return Sam2Model.from_pretrained(self.model_dir, dtype=torch.float32)
        # The official SAM 2.1 checkpoints are `sam2_video` models; taking their image model is intended,
        # so transformers' "model of type sam2_video to instantiate a model of type sam2" warning is noise.
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            return Sam2Model.from_pretrained(self.model_dir, dtype=torch.float32)
        finally:
            hf_logging.set_verbosity(verbosity)

    def _preprocess(self, image: np.ndarray) -> tuple[np.ndarray, dict]:
        return sam_common.preprocess_sam2(image), {}

    def _encode(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        """``Sam2Model.get_image_embeddings`` in NCHW, with the vision encoder in its own dtype (bf16 or fp32)
        and the decoder's projections of the high-resolution levels in fp32.

        Those two levels are plain lateral 1x1 convs of the neck (no top-down term), so the lateral and the
        decoder's ``conv_s0`` / ``conv_s1`` fold into one fp32 1x1 projection applied channels-last to the
        stage output: the same maths without the 256-channel 256x256 intermediate (on a CPU, writing it
        and converting it to fp32 cost ~15% of a Hiera-T encode)."""
        model = self.model
        encoder = model.vision_encoder
        stages = hiera_stages(encoder, pixel_values, self._pos_cache)
        emb = fpn_level(encoder.neck, stages, encoder.num_feature_levels - 1).float()
        emb = emb + model.no_memory_embedding.reshape(1, -1, 1, 1)  # "no memory" token of single images
        out = {"image_embeddings": emb}
        convs = (model.mask_decoder.conv_s0, model.mask_decoder.conv_s1)
        for level, (name, conv, folded) in enumerate(zip(self.high_res_names, convs, self._folded)):
            if folded is not None:
                stage = stages[level]
                flat = F.linear(stage.reshape(-1, stage.shape[-1]).float(), *folded)  # 2-D: one GEMM
                feat = flat.reshape(*stage.shape[:3], -1).permute(0, 3, 1, 2).contiguous()
            else:
                feat = conv(fpn_level(encoder.neck, stages, level).float())
            out[name] = feat
        return out

    def _transform_coords(self, coords: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        return sam_common.transform_coords_sam2(coords, original_size)

    def _pad_with_box(self) -> bool:
        return True

    def _mask_input_to_model(self, mask_input: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        return sam_common.padded_to_sam2_lowres(mask_input, original_size)

    def _postprocess(self, lowres: np.ndarray, original_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        masks = sam_common.sam2_masks(lowres, original_size)
        return masks, sam_common.sam2_lowres_to_padded(lowres, original_size)

    def _encode_shapes(self) -> list[torch.Tensor]:
        """Dummy embedding arrays with this config's shapes (no encoder run: that takes seconds on big models)."""
        model = self.model
        sizes = model.backbone_feature_sizes  # [[256, 256], [128, 128], [64, 64]] at 1024 input
        hidden = model.config.prompt_encoder_config.hidden_size
        return [
            torch.randn(1, hidden, *sizes[-1]),
            torch.randn(1, model.mask_decoder.conv_s0.out_channels, *sizes[0]),
            torch.randn(1, model.mask_decoder.conv_s1.out_channels, *sizes[1]),
        ]
