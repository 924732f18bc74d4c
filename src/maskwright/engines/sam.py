"""``sam`` engines (SAM, SlimSAM, SAM-HQ weights) on Hugging Face ``transformers``, with a fast CPU click path.

    engine = load_sam_engine("sam-vit-base")                 # or an HF-format directory
    engine = load_sam_engine("path/to/tiny-sam", decoder="onnx")   # pick the decoder backend

Image encoding runs the ``transformers`` vision encoder (bf16 weights where the CPU computes bf16 natively,
configurable threads; SAM 2 through a leaner Hiera forward, :mod:`maskwright.engines.sam2`). Clicks run the
model's own prompt encoder and mask decoder behind one fixed signature: :class:`PromptDecoder` (the
``transformers`` modules as they are; the torch backend and the reference) or, exported to ONNX Runtime
(default when possible, 1 thread, independent of torch's pool), :class:`FastPromptDecoder` for SAM / SAM 2
(same maths reorganised for a CPU: ~1.7x faster per click) and :class:`PromptDecoder` for SAM-HQ.
Pre/post-processing is numpy (:mod:`maskwright.engines.sam_common`).

Decoder backends: ``engine.decoder_backend`` is ``"onnx"`` or ``"torch"``; ``engine.set_decoder("torch")``
switches (e.g. to compare both on the same embedding).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from maskwright.engines import hub, sam_common
from maskwright.engines.base import LOWRES, Embedding, Engine, MaskPrediction, Prompt
from maskwright.engines.onnx_decoder import (
    OnnxDecoder,
    decoder_input_names,
    export_decoder,
    fast_decoder_input_names,
    graph_input_names,
    onnx_path,
)

log = logging.getLogger(__name__)

ENCODER_DTYPES = ("auto", "float32", "bfloat16")
PREPARED_IMAGES = 4  # images whose fast-decoder inputs are kept (~8 MB each for SAM, ~20 MB for SAM 2)
BATCH_CHUNK = 16  # prompts per decoder call in decode_batch (memory grows ~5 MB per prompt)
DECODERS = ("auto", "onnx", "torch")
FAST_FAMILIES = ("sam", "sam2")  # SAM-HQ's decoder differs (HQ token, early ViT features): PromptDecoder


def _heads(attn: nn.Module) -> tuple[int, int]:
    """(number of heads, per-head width) of a ``SamAttention`` / ``Sam2Attention``."""
    heads = attn.num_attention_heads
    return heads, attn.q_proj.out_features // heads


def _out_proj(attn: nn.Module) -> nn.Linear:
    return attn.out_proj if hasattr(attn, "out_proj") else attn.o_proj  # SAM / SAM 2 names


def tokens_to_image_attention(attn: nn.Module, tokens: torch.Tensor, image_keys: torch.Tensor, image_values):
    """``attn(query=tokens, key=image_keys, value=image_values)`` with the image-side projections folded away.

    tokens (B, N, C); image_keys, image_values (B, M, C) with M = 64*64 image positions and N ~ 7 tokens.
    The plain layer projects all M positions to keys and values (2 * M*C*C/2 multiply-adds); here the
    per-head query is mapped back through W_k (``q_h W_k,h``, N*C per head) and multiplied with the raw
    image keys, and the attention-weighted raw values go through W_v afterwards: 2 * H*N*C*M multiply-adds,
    i.e. ``H*N / (C/2)`` = N / head width of the cost (~0.45x for one click). The key bias adds the same
    amount to every score of a row and cancels in the softmax; the value bias passes through unchanged
    because attention weights sum to 1.
    """
    b, n, c = tokens.shape
    heads, width = _heads(attn)
    q = attn.q_proj(tokens).view(b, n, heads, width).transpose(1, 2)  # (B, H, N, d)
    q_in_image_space = torch.matmul(q, attn.k_proj.weight.view(heads, width, c))  # (B, H, N, C)
    scores = torch.matmul(q_in_image_space.reshape(b, heads * n, c), image_keys.transpose(1, 2)) * attn.scaling
    weights = torch.softmax(scores, dim=-1)  # (B, H*N, M)
    mixed = torch.matmul(weights, image_values).view(b, heads, n, c)  # (B, H, N, C)
    w_v = attn.v_proj.weight.view(heads, width, c).transpose(1, 2)  # (H, C, d)
    out = torch.matmul(mixed, w_v) + attn.v_proj.bias.view(heads, 1, width)
    return _out_proj(attn)(out.transpose(1, 2).reshape(b, n, heads * width))


def image_to_tokens_attention(attn: nn.Module, image_queries: torch.Tensor, tokens: torch.Tensor, token_values):
    """``attn(query=image_queries, key=tokens, value=token_values)`` with the image-side projections folded.

    image_queries (B, M, C); tokens, token_values (B, N, C). The per-head token keys are mapped back
    through W_q (so the M image positions are never projected) and each head's values through its slice of
    the output projection, so the M positions meet only (C, H*N) and (H*N, C) matrices: H*N / (C/2) of the
    plain layer's two M*C*C/2 projections.
    """
    b, m, c = image_queries.shape
    n = tokens.shape[1]
    heads, width = _heads(attn)
    k = attn.k_proj(tokens).view(b, n, heads, width).transpose(1, 2)  # (B, H, N, d)
    k_in_image_space = torch.matmul(k, attn.q_proj.weight.view(heads, width, c)).reshape(b, heads * n, c)
    bias = torch.matmul(k, attn.q_proj.bias.view(heads, width, 1)).reshape(b, 1, heads * n)
    scores = (torch.matmul(image_queries, k_in_image_space.transpose(1, 2)) + bias) * attn.scaling  # (B, M, H*N)
    weights = torch.softmax(scores.view(b, m, heads, n), dim=-1).view(b, m, heads * n)
    v = attn.v_proj(token_values).view(b, n, heads, width).transpose(1, 2)  # (B, H, N, d)
    proj = _out_proj(attn)
    v_out = torch.matmul(v, proj.weight.view(c, heads, width).permute(1, 2, 0)).reshape(b, heads * n, c)
    return torch.matmul(weights, v_out) + proj.bias


def two_way_transformer(
    transformer: nn.Module, tokens: torch.Tensor, keys: torch.Tensor, key_pe: torch.Tensor, folded: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two-way transformer of ``SamMaskDecoder`` / ``Sam2MaskDecoder`` (its own weights and maths) on
    image *tokens*: ``tokens`` (B, 1, N, C) prompt + output tokens, ``keys`` (B, M, C) image tokens (image
    embedding + dense prompt embedding, position-major), ``key_pe`` (1, M, C) their positional encoding.

    ``folded=True`` computes the image cross attentions with :func:`tokens_to_image_attention` /
    :func:`image_to_tokens_attention`, equal up to float rounding: cheaper while N (4-6 output tokens +
    points + padding) is below the attention head width (16 in every released SAM / SAM 2: ~1.9 -> ~1.0
    GMAC for one click on ViT-B's decoder), as costly at N = 16 (~10 clicks), and still cheaper than the
    plain ``PromptDecoder`` graph up to ~25 clicks thanks to the rest of :class:`FastPromptDecoder`.
    Returns (queries (B, 1, N, C), keys (B, M, C)).
    """
    b, p, n, c = tokens.shape
    queries = tokens

    def to_image(attn, q, k, v):
        if folded:
            return tokens_to_image_attention(attn, q.reshape(b * p, n, c), k, v).view(b, p, n, c)
        return attn(query=q, key=k.unsqueeze(1), value=v.unsqueeze(1))[0]

    def to_tokens(attn, q, k, v):
        if folded:
            return image_to_tokens_attention(attn, q, k.reshape(b * p, n, c), v.reshape(b * p, n, c))
        return attn(query=q.unsqueeze(1), key=k, value=v)[0].squeeze(1)

    for layer in transformer.layers:
        if layer.skip_first_layer_pe:
            queries = layer.self_attn(query=queries, key=queries, value=queries)[0]
        else:
            q = queries + tokens
            queries = queries + layer.self_attn(query=q, key=q, value=queries)[0]
        queries = layer.layer_norm1(queries)
        attn = to_image(layer.cross_attn_token_to_image, queries + tokens, keys + key_pe, keys)
        queries = layer.layer_norm2(queries + attn)
        queries = layer.layer_norm3(queries + layer.mlp(queries))
        attn = to_tokens(layer.cross_attn_image_to_token, keys + key_pe, queries + tokens, queries)
        keys = layer.layer_norm4(keys + attn)
    attn = to_image(transformer.final_attn_token_to_image, queries + tokens, keys + key_pe, keys)
    queries = transformer.layer_norm_final_attn(queries + attn)
    return queries, keys


class PromptDecoder(nn.Module):
    """Prompt encoder + mask decoder of a ``SamModel`` / ``Sam2Model`` with a fixed, exportable signature.

    Points, box corners (labels 2 and 3) and padding points (label -1) are all "sparse tokens", as in
    segment-anything's ONNX model, so one graph serves every prompt shape and a batch of prompts.
    Inputs/outputs: see :mod:`maskwright.engines.onnx_decoder`.
    """

    def __init__(self, model: nn.Module, family: str, multimask_output: bool) -> None:
        super().__init__()
        self.family = family
        self.multimask_output = bool(multimask_output)
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder
        self.input_size = int(model.prompt_encoder.input_image_size)
        with torch.no_grad():
            self.register_buffer("image_pe", model.get_image_wide_positional_embeddings().detach().clone())

    def _point_weights(self) -> torch.Tensor:
        embed = self.prompt_encoder.point_embed
        if isinstance(embed, nn.ModuleList):  # SAM: 4 x Embedding(1, C); SAM 2: Embedding(4, C)
            return torch.cat([e.weight for e in embed], dim=0)
        return embed.weight

    def sparse_embeddings(self, point_coords: torch.Tensor, point_labels: torch.Tensor) -> torch.Tensor:
        """(B, T, 2) XY in the 1024 input frame and (B, T) labels -> (B, 1, T, C) sparse prompt embeddings."""
        coords = (point_coords + 0.5)[:, None]  # pixel centres, as the prompt encoders do; (B, 1, T, 2)
        sparse = self.prompt_encoder.shared_embedding(coords, (self.input_size, self.input_size))
        labels = point_labels[:, None, :, None]
        sparse = torch.where(labels == -1, self.prompt_encoder.not_a_point_embed.weight, sparse)
        weights = self._point_weights()
        for k in range(weights.shape[0]):
            sparse = sparse + weights[k] * (labels == k).to(sparse.dtype)
        return sparse

    def forward(
        self,
        image_embeddings,
        point_coords,
        point_labels,
        mask_input,
        has_mask_input,
        high_res_feats_0=None,
        high_res_feats_1=None,
    ):
        batch = point_coords.shape[0]
        sparse = self.sparse_embeddings(point_coords, point_labels)
        has = has_mask_input[:, :, None, None]
        dense = self.prompt_encoder.mask_embed(mask_input) * has
        dense = dense + self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1) * (1.0 - has)
        image = image_embeddings.expand(batch, -1, -1, -1)
        image_pe = self.image_pe.expand(batch, -1, -1, -1)
        if self.family == "sam2":
            masks, scores, _, _ = self.mask_decoder(
                image_embeddings=image,
                image_positional_embeddings=image_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=self.multimask_output,
                high_resolution_features=[f.expand(batch, -1, -1, -1) for f in (high_res_feats_0, high_res_feats_1)],
            )
        elif self.family == "sam-hq":  # HQ token fused with the early ViT features (not expanded: broadcast)
            masks, scores = self.mask_decoder(
                image,
                image_pe,
                sparse,
                dense,
                self.multimask_output,
                hq_token_only=False,
                intermediate_embeddings=[high_res_feats_0],
            )
        else:
            masks, scores = self.mask_decoder(image, image_pe, sparse, dense, self.multimask_output)
        return masks[:, 0], scores[:, 0]


class FastPromptDecoder(PromptDecoder):
    """:class:`PromptDecoder` of SAM / SAM 2 rewritten for a CPU click path: same weights, same outputs (up to
    float rounding; tested), about half the work of ViT-B's decoder for one click.

    * Per-image inputs arrive in the layout the maths wants, prepared once per image by the engine:
      ``image_tokens`` (B, M, C) = image embedding + dense prompt embedding, position-major (M = 64*64; no
      transposes per click; without a ``mask_input`` the dense embedding is a constant, so this is one
      cached array per image) and, for SAM 2, the high-resolution features in the order the upscaling
      produces pixels (:func:`nested_high_res`). The positional encoding is a constant of the graph.
    * ``folded=True`` (what the engine exports): image cross attentions without image-side projections
      (:func:`two_way_transformer`).
    * The two 2x2 stride-2 transposed convolutions are matrix products on channels-last tokens: each input
      position yields its 2x2 output pixels as 4 rows, so nothing is transposed until the final (K, 256, 256)
      logits, and only the hypernetwork outputs that are returned are multiplied out.

    Outputs: ``low_res_masks`` (B, K, 256, 256), ``iou_scores`` (B, K).
    """

    def __init__(self, model: nn.Module, family: str, multimask_output: bool, folded: bool = True) -> None:
        if family not in FAST_FAMILIES:
            raise ValueError(f"FastPromptDecoder supports {FAST_FAMILIES}, not {family!r}")
        super().__init__(model, family, multimask_output)
        self.folded = bool(folded)
        self.grid = tuple(self.image_pe.shape[-2:])
        with torch.no_grad():
            self.register_buffer("image_pe_tokens", self.image_pe.flatten(2).transpose(1, 2).contiguous())
            for i, conv in ((1, self.mask_decoder.upscale_conv1), (2, self.mask_decoder.upscale_conv2)):
                c_in, c_out = conv.weight.shape[:2]  # ConvTranspose2d weight (C_in, C_out, 2, 2)
                weight = conv.weight.permute(0, 2, 3, 1).reshape(c_in, 4 * c_out).detach().clone()
                self.register_buffer(f"up{i}_weight", weight)
                self.register_buffer(f"up{i}_bias", conv.bias.repeat(4).detach().clone())
        del self.image_pe

    def _mask_tokens_used(self) -> list[int]:
        decoder = self.mask_decoder
        if self.multimask_output:
            return list(range(1, decoder.num_mask_tokens))
        if self.family == "sam2" and decoder.dynamic_multimask_via_stability:
            return list(range(decoder.num_mask_tokens))  # the single mask may fall back to the best multimask
        return [0]

    def forward(self, image_tokens, point_coords, point_labels, high_res_1=None, high_res_0=None):
        decoder = self.mask_decoder
        batch = point_coords.shape[0]
        sparse = self.sparse_embeddings(point_coords, point_labels)
        first = [decoder.obj_score_token.weight] if self.family == "sam2" else []
        output_tokens = torch.cat([*first, decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.expand(batch, 1, -1, -1), sparse], dim=2)  # (B, 1, N, C)
        queries, keys = two_way_transformer(
            decoder.transformer, tokens, image_tokens, self.image_pe_tokens, self.folded
        )
        offset = len(first)
        iou_token = queries[:, 0, offset]
        mask_tokens = queries[:, 0, offset + 1 : offset + 1 + decoder.num_mask_tokens]

        h, w = self.grid
        c1 = self.up1_weight.shape[1] // 4
        c2 = self.up2_weight.shape[1] // 4
        up = (torch.matmul(keys, self.up1_weight) + self.up1_bias).view(batch, h * w, 4, c1)
        if high_res_1 is not None:
            up = up + high_res_1
        norm = decoder.upscale_layer_norm
        up = decoder.activation(nn.functional.layer_norm(up, (c1,), norm.weight, norm.bias, norm.eps))
        up = (torch.matmul(up.reshape(batch, h * w * 4, c1), self.up2_weight) + self.up2_bias).view(
            batch, h * w, 16, c2
        )
        if high_res_0 is not None:
            up = up + high_res_0
        up = decoder.activation(up)
        used = self._mask_tokens_used()
        hyper = torch.stack([decoder.output_hypernetworks_mlps[i](mask_tokens[:, i]) for i in used], dim=1)
        masks = torch.matmul(up.view(batch, h * w * 16, c2), hyper.transpose(1, 2))  # (B, M*16, K)
        # rows are (i, j, a, b, c, d) -> pixel (4i + 2a + c, 4j + 2b + d) of the 4h x 4w low-res map
        masks = masks.view(batch, h, w, 2, 2, 2, 2, len(used)).permute(0, 7, 1, 3, 5, 2, 4, 6)
        masks = masks.reshape(batch, len(used), 4 * h, 4 * w)
        scores = decoder.iou_prediction_head(iou_token)[:, used]
        if self.family == "sam2" and not self.multimask_output and decoder.dynamic_multimask_via_stability:
            masks, scores = decoder._dynamic_multimask_via_stability(masks[:, None], scores[:, None])
            return masks[:, 0], scores[:, 0]
        return masks, scores


def nested_high_res(feature: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """SAM 2 high-resolution feature (1, C, s*h, s*w) with s = 2 or 4 -> (1, h*w, s*s, C) in the row order of
    :class:`FastPromptDecoder`'s upscaling: position (i, j), then sub-pixel bits (a, b) for s = 2 or
    (a, b, c, d) for s = 4, where pixel = (s*i + 2a + c, s*j + 2b + d)."""
    _, c, height, _ = feature.shape
    h, w = grid
    if height == 2 * h:
        nested = feature.reshape(c, h, 2, w, 2).transpose(1, 3, 2, 4, 0)  # (i, j, a, b, C)
        return np.ascontiguousarray(nested.reshape(1, h * w, 4, c), dtype=np.float32)
    if height == 4 * h:
        nested = feature.reshape(c, h, 2, 2, w, 2, 2).transpose(1, 4, 2, 5, 3, 6, 0)  # (i, j, a, b, c, d, C)
        return np.ascontiguousarray(nested.reshape(1, h * w, 16, c), dtype=np.float32)
    raise ValueError(f"high-resolution feature of shape {feature.shape} does not fit a {h}x{w} embedding")


def _weights_version(model_dir: Path) -> str:
    """Content-ish key of a checkpoint (config text + weight sizes), stable when the folder moves."""
    h = hashlib.blake2b(digest_size=5)
    h.update((model_dir / hub.CONFIG_FILE).read_bytes())
    for p in hub.weight_files(model_dir):
        h.update(f"{p.name}:{p.stat().st_size}".encode())
    return h.hexdigest()


class SamFamilyEngine(Engine):
    """Shared machinery of the SAM and SAM 2 engines; subclasses set the family-specific maths."""

    family = "sam"
    supports_batch = True
    #: names of the Embedding arrays fed to the decoder after ``image_embeddings``
    high_res_names: tuple[str, ...] = ()

    def __init__(
        self,
        model_dir: str | Path,
        name: str | None = None,
        decoder: str = "auto",
        encoder_dtype: str = "auto",
        encoder_threads: int | None = None,
        decoder_threads: int | None = None,
        batch_threads: int | None = None,
    ) -> None:
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        if encoder_dtype not in ENCODER_DTYPES:
            raise ValueError(f"encoder_dtype must be one of {ENCODER_DTYPES}, got {encoder_dtype!r}")
        self.model_dir = Path(model_dir)
        self.name = name or str(self.model_dir)
        self.version = f"{self.family}-1-{_weights_version(self.model_dir)}"
        self.encoder_threads = encoder_threads
        # Click decoding: a fixed thread count when given; by default one thread, and every core for a click
        # that finds the CPU idle (no encode here, nothing runnable elsewhere). Two ONNX Runtime threads
        # decode ~1.6x faster on an idle 2-core CPU but ~1.3x slower than one when another process computes.
        self.decoder_threads = 1 if decoder_threads is None else max(1, int(decoder_threads))
        self.idle_decoder_threads = (os.cpu_count() or 1) if decoder_threads is None else self.decoder_threads
        # decode_batch (segment-everything) is not the click path: it may use every core.
        self.batch_threads = max(1, int(batch_threads or os.cpu_count() or 1))
        if encoder_dtype == "auto":
            encoder_dtype = "bfloat16" if sam_common.cpu_bf16_support() else "float32"
        self.encoder_dtype = encoder_dtype
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a per-tensor "Loading weights" bar is noise in CLI and server logs
        self.model = self._load_model().eval()
        if self.encoder_dtype == "bfloat16":
            # Whole-encoder bf16 weights: ~2-2.5x faster than fp32 on CPUs with AVX512-BF16 / AMX, where
            # autocast barely helps the ViT (measured 13.9 s vs 6.8 s here under load). The prompt encoder
            # and mask decoder stay fp32.
            self.model.vision_encoder.to(torch.bfloat16)
        self._torch_decoders = {mm: PromptDecoder(self.model, self.family, mm).eval() for mm in (True, False)}
        #: ONNX click path: FastPromptDecoder graphs for SAM / SAM 2, the plain PromptDecoder for SAM-HQ
        self.fast_decoder = self.family in FAST_FAMILIES
        self._onnx: dict[bool, OnnxDecoder] = {}
        self._onnx_batch: dict[bool, OnnxDecoder] = {}
        self._onnx_idle: dict[bool, OnnxDecoder] = {}
        self._prepared: OrderedDict[int, tuple[np.ndarray, dict[str, np.ndarray]]] = OrderedDict()
        self._prepared_lock = threading.Lock()
        self._encoding = threading.Event()
        self._decodes_lock = threading.Lock()
        self._decodes_in_flight = 0  # decoder calls running now (a click counts itself)
        self.decoder_backend = "torch"
        if decoder in ("auto", "onnx"):
            try:
                self.set_decoder("onnx")
            except Exception as exc:
                if decoder == "onnx":
                    raise
                log.warning("ONNX decoder unavailable for %s (%s); decoding with torch (1 thread)", self.name, exc)

    # --- family hooks ----------------------------------------------------------------------------
    def _load_model(self) -> nn.Module:
        from transformers import SamModel

        return SamModel.from_pretrained(self.model_dir, dtype=torch.float32)

    def _preprocess(self, image: np.ndarray) -> tuple[np.ndarray, dict]:
        pixel, (new_h, new_w) = sam_common.preprocess_sam(image)
        return pixel, {"input_size": [new_h, new_w]}

    def _encode(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        """Image encoder (``SamModel.get_image_embeddings``); ``pixel_values`` in the encoder's dtype."""
        return {"image_embeddings": self.model.get_image_embeddings(pixel_values).float()}

    def _transform_coords(self, coords: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        return sam_common.transform_coords_sam(coords, original_size)

    def _pad_with_box(self) -> bool:
        """Whether a padding point is added when a box is present (SAM: no; SAM 2: yes)."""
        return False

    def _mask_input_to_model(self, mask_input: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        return mask_input

    def _postprocess(self, lowres: np.ndarray, original_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Model low-res logits (K, 256, 256) -> (masks (K, H, W) bool, low-res logits in maskwright's convention)."""
        return sam_common.sam_masks(lowres, original_size), lowres

    # --- decoder backends ------------------------------------------------------------------------
    def onnx_dir(self) -> Path:
        return hub.onnx_dir(self.model_dir)

    def _graph_inputs(self) -> list[str]:
        n_high = len(self.high_res_names)
        return fast_decoder_input_names(n_high) if self.fast_decoder else decoder_input_names(n_high)

    def export_onnx(self, force: bool = False, exporters: tuple[str, ...] | None = None) -> list[Path]:
        """Export both click-path decoders (multimask and single) to :meth:`onnx_dir` unless already there:
        :class:`FastPromptDecoder` (folded attention) for SAM / SAM 2, :class:`PromptDecoder` for SAM-HQ.
        A cached graph with other inputs (exported by an older maskwright) is exported again. Should the
        fast graph fail to export (an unforeseen model variant), the plain one is used, with a warning."""
        try:
            return self._export_graphs(force, exporters)
        except RuntimeError as exc:
            if not self.fast_decoder:
                raise
            log.warning("fast ONNX decoder failed to export for %s (%s); using the plain graph", self.name, exc)
            self.fast_decoder = False
            return self._export_graphs(force, exporters)

    def _export_graphs(self, force: bool, exporters: tuple[str, ...] | None) -> list[Path]:
        out = []
        names = self._graph_inputs()
        for multimask in (True, False):
            path = onnx_path(self.onnx_dir(), multimask)
            if force or not path.exists() or graph_input_names(path) != names:
                if self.fast_decoder:
                    module = FastPromptDecoder(self.model, self.family, multimask, folded=True).eval()
                    example = self._fast_example_inputs()
                else:
                    module, example = self._torch_decoders[multimask], self._example_inputs()
                export_decoder(module, example, path, len(self.high_res_names), exporters, names)
            out.append(path)
        return out

    def set_decoder(self, backend: str) -> None:
        """Use ``"onnx"`` (exported once and cached, see :meth:`export_onnx`) or ``"torch"`` to decode."""
        if backend == "onnx":
            if not self._onnx:
                paths = self.export_onnx()
                self._onnx = {mm: OnnxDecoder(p, self.decoder_threads) for mm, p in zip((True, False), paths)}
            self._onnx_batch = {}
            self._onnx_idle = {}
        elif backend != "torch":
            raise ValueError(f"decoder backend must be 'onnx' or 'torch', got {backend!r}")
        self.decoder_backend = backend

    def _example_inputs(self) -> tuple[torch.Tensor, ...]:
        """Dummy decoder inputs with the model's shapes (batch 2, 3 tokens) for export."""
        with torch.no_grad():
            emb = self._encode_shapes()
        b, t = 2, 3
        coords = torch.rand(b, t, 2) * 1000
        labels = torch.tensor([[1.0, 0.0, -1.0], [2.0, 3.0, -1.0]])
        mask = torch.randn(b, 1, 4 * emb[0].shape[-2], 4 * emb[0].shape[-1])
        has = torch.tensor([[1.0], [0.0]])
        return (emb[0], coords, labels, mask, has, *emb[1:])

    def _fast_example_inputs(self) -> tuple[torch.Tensor, ...]:
        """Dummy :class:`FastPromptDecoder` inputs (batch 2, 3 tokens) for export."""
        emb, coords, labels = self._example_inputs()[:3]
        tokens = emb.flatten(2).transpose(1, 2).expand(2, -1, -1).contiguous()
        grid = tuple(emb.shape[-2:])
        high = [torch.from_numpy(nested_high_res(f.numpy(), grid)) for f in self._encode_shapes()[1:][::-1]]
        return (tokens, coords, labels, *high)

    def _encode_shapes(self) -> list[torch.Tensor]:
        cfg = self.model.config
        size = cfg.prompt_encoder_config.image_embedding_size
        return [torch.randn(1, cfg.prompt_encoder_config.hidden_size, size, size)]

    # --- Engine API ------------------------------------------------------------------------------
    def embed(self, image: np.ndarray) -> Embedding:
        """Encode an HxWx3 uint8 RGB image (seconds on a CPU)."""
        h, w = image.shape[:2]
        pixel, meta = self._preprocess(image)
        if self.encoder_threads:
            torch.set_num_threads(self.encoder_threads)
        dtype = torch.bfloat16 if self.encoder_dtype == "bfloat16" else torch.float32
        self._encoding.set()
        try:
            with torch.inference_mode():
                feats = self._encode(torch.from_numpy(pixel).to(dtype))
        finally:
            self._encoding.clear()
        arrays = {k: v.float().contiguous().numpy() for k, v in feats.items()}
        meta["encoder_dtype"] = self.encoder_dtype
        return Embedding(self.name, self.version, (h, w), arrays, meta)

    def decode(self, embedding: Embedding, prompt: Prompt, multimask_output: bool) -> MaskPrediction:
        return self.decode_batch(embedding, [prompt], multimask_output)[0]

    def decode_batch(self, embedding: Embedding, prompts: list[Prompt], multimask_output: bool) -> list[MaskPrediction]:
        """Decode independent prompts; prompts with the same number of tokens share one decoder call.

        On a CPU the decoder's work is per prompt (each prompt's two-way attention rewrites the 64x64 image
        tokens), so batching saves per-call overhead and runs with ``batch_threads`` (all cores) rather
        than the click path's single thread; chunks of :data:`BATCH_CHUNK` bound the memory.
        """
        size = tuple(embedding.original_size)
        tokens = [self._tokens(p, size) for p in prompts]
        groups: dict[int, list[int]] = {}
        for i, (coords, _) in enumerate(tokens):
            groups.setdefault(len(coords), []).append(i)
        chunks = [idx[k : k + BATCH_CHUNK] for idx in groups.values() for k in range(0, len(idx), BATCH_CHUNK)]
        results: list[MaskPrediction | None] = [None] * len(prompts)
        for idx in chunks:
            coords = np.stack([tokens[i][0] for i in idx])
            labels = np.stack([tokens[i][1] for i in idx])
            masks_in = np.zeros((len(idx), 1, LOWRES, LOWRES), np.float32)
            has = np.zeros((len(idx), 1), np.float32)
            for j, i in enumerate(idx):
                if prompts[i].mask_input is not None:
                    masks_in[j] = self._mask_input_to_model(prompts[i].mask_input, size)
                    has[j] = 1.0
            lowres, scores = self._run_decoder(embedding, coords, labels, masks_in, has, multimask_output)
            for j, i in enumerate(idx):
                masks, logits = self._postprocess(lowres[j], size)
                results[i] = MaskPrediction(masks, np.clip(scores[j], 0.0, 1.0).astype(np.float32), logits)
        return results

    def _tokens(self, prompt: Prompt, original_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Sparse tokens of a prompt: (T, 2) XY in the model input frame and (T,) float labels.

        Points, then box corners (labels 2, 3), then a padding point (label -1) when there is no box (SAM)
        or always (SAM 2), as the original predictors do. A prompt of only ``mask_input`` gets the padding
        point too (the original SAM would use no sparse token; SAM's ONNX example does the same as here).
        """
        coords, labels = [], []
        if prompt.point_coords is not None:
            coords.append(self._transform_coords(prompt.point_coords, original_size))
            labels.append(prompt.point_labels.astype(np.float32))
        if prompt.box is not None:
            coords.append(self._transform_coords(prompt.box.reshape(2, 2), original_size))
            labels.append(np.array([2.0, 3.0], np.float32))
        if prompt.box is None or self._pad_with_box():
            coords.append(np.zeros((1, 2), np.float32))
            labels.append(np.array([-1.0], np.float32))
        return np.concatenate(coords).astype(np.float32), np.concatenate(labels)

    def _run_decoder(self, embedding, coords, labels, masks_in, has, multimask_output):
        arrays = embedding.arrays
        needed = ("image_embeddings", *self.high_res_names)
        missing = [n for n in needed if n not in arrays]
        if missing:
            raise ValueError(
                f"embedding from engine {embedding.engine!r} lacks {missing}: expected arrays {list(needed)} "
                f"as computed by {self.name!r}.embed()"
            )
        with self._decodes_lock:
            self._decodes_in_flight += 1
        try:
            return self._run_decoder_counted(arrays, needed, embedding, coords, labels, masks_in, has, multimask_output)
        finally:
            with self._decodes_lock:
                self._decodes_in_flight -= 1

    def _run_decoder_counted(self, arrays, needed, embedding, coords, labels, masks_in, has, multimask_output):
        batch = len(coords) > 1
        if self.decoder_backend == "onnx" and self.fast_decoder:
            prepared = self._prepare(embedding)
            feeds = {"image_tokens": self._image_tokens(prepared, masks_in, has), "point_coords": coords}
            feeds.update(point_labels=labels, **{k: v for k, v in prepared.items() if k.startswith("high_res_")})
            return self._onnx_session(bool(multimask_output), batch).run(feeds)
        feats = [np.ascontiguousarray(arrays[n], dtype=np.float32) for n in needed]
        if self.decoder_backend == "onnx":
            names = decoder_input_names(len(self.high_res_names))
            values = [feats[0], coords, labels, masks_in, has, *feats[1:]]
            return self._onnx_session(bool(multimask_output), batch).run(dict(zip(names, values)))
        module = self._torch_decoders[bool(multimask_output)]
        threads = self.batch_threads if batch else self.decoder_threads
        with self._torch_decode_threads(threads), torch.inference_mode():
            args = [
                torch.from_numpy(feats[0]),
                torch.from_numpy(coords),
                torch.from_numpy(labels),
                torch.from_numpy(masks_in),
                torch.from_numpy(has),
                *map(torch.from_numpy, feats[1:]),
            ]
            masks, scores = module(*args)
        return masks.numpy(), scores.numpy()

    def cpu_is_idle(self) -> bool:
        """Whether a click may use every core: no encode and no other decode in this engine (this process's
        own threads are not counted below, so concurrent clicks would each take every core), and nothing
        else runnable."""
        if self._encoding.is_set() or self._decodes_in_flight > 1:
            return False
        others = sam_common.other_runnable_tasks()
        return others is not None and others == 0

    def _onnx_session(self, multimask_output: bool, batch: bool) -> OnnxDecoder:
        if not batch:
            if self.idle_decoder_threads > self.decoder_threads and self.cpu_is_idle():
                if multimask_output not in self._onnx_idle:
                    path = self._onnx[multimask_output].path
                    self._onnx_idle[multimask_output] = OnnxDecoder(path, self.idle_decoder_threads, spinning=True)
                return self._onnx_idle[multimask_output]
            return self._onnx[multimask_output]
        if self.batch_threads == self.decoder_threads:
            return self._onnx[multimask_output]
        if multimask_output not in self._onnx_batch:
            self._onnx_batch[multimask_output] = OnnxDecoder(self._onnx[multimask_output].path, self.batch_threads)
        return self._onnx_batch[multimask_output]

    def _prepare(self, embedding: Embedding) -> dict[str, np.ndarray]:
        """Per-image inputs of the fast decoder graphs, computed on an image's first click and kept for the
        last :data:`PREPARED_IMAGES` embeddings (keyed by the embedding's array, which the entry holds):
        ``image`` (1, M, C) position-major image embedding, ``no_mask`` the same plus the no-mask dense
        embedding, and SAM 2's ``high_res_1`` / ``high_res_0`` in :func:`nested_high_res` order."""
        source = embedding.arrays["image_embeddings"]
        with self._prepared_lock:
            hit = self._prepared.get(id(source))
            if hit is not None and hit[0] is source:
                self._prepared.move_to_end(id(source))
                return hit[1]
        _, c, h, w = source.shape
        image = np.ascontiguousarray(source.reshape(c, h * w).T[None], dtype=np.float32)
        no_mask = self.model.prompt_encoder.no_mask_embed.weight.detach().numpy().reshape(1, 1, c)
        prepared = {"image": image, "no_mask": np.ascontiguousarray(image + no_mask, dtype=np.float32)}
        if self.family == "sam2":
            for i, name in ((1, "high_res_feats_1"), (0, "high_res_feats_0")):
                prepared[f"high_res_{i}"] = nested_high_res(embedding.arrays[name], (h, w))
        with self._prepared_lock:
            self._prepared[id(source)] = (source, prepared)
            while len(self._prepared) > PREPARED_IMAGES:
                self._prepared.popitem(last=False)
        return prepared

    def _image_tokens(self, prepared: dict[str, np.ndarray], masks_in: np.ndarray, has: np.ndarray) -> np.ndarray:
        """``image_tokens`` input (B, M, C): image + dense prompt embedding (mask embedding where ``has``)."""
        batch, with_mask = len(masks_in), has[:, 0] > 0
        if not with_mask.any():
            return prepared["no_mask"] if batch == 1 else np.repeat(prepared["no_mask"], batch, axis=0)
        tokens = np.repeat(prepared["no_mask"], batch, axis=0)
        with self._torch_decode_threads(self.decoder_threads), torch.inference_mode():
            dense = self.model.prompt_encoder.mask_embed(torch.from_numpy(masks_in[with_mask]))  # (b, C, h, w)
            dense = dense.flatten(2).transpose(1, 2).numpy()
        tokens[with_mask] = prepared["image"] + dense
        return tokens

    @contextlib.contextmanager
    def _torch_decode_threads(self, threads: int):
        """Decode in torch with ``threads`` threads (torch's pool is process-wide, so not mid-encode)."""
        if self._encoding.is_set():
            yield
            return
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def describe(self) -> str:
        return f"{self.name} ({self.family}, decoder={self.decoder_backend}, encoder={self.encoder_dtype})"


class SamEngine(SamFamilyEngine):
    """SAM (ViT-B/L/H, SlimSAM) via ``transformers.SamModel``; the ViT runs through the leaner attention
    of :mod:`maskwright.engines.sam_vit` (same maths, no per-head bias copies)."""

    family = "sam"

    def _encode(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        from maskwright.engines.sam_vit import vit_image_embeddings

        return {"image_embeddings": vit_image_embeddings(self.model.vision_encoder, pixel_values).float()}


class SamHQEngine(SamFamilyEngine):
    """SAM-HQ via ``transformers.SamHQModel``: SAM's geometry, plus the first global-attention ViT features
    (``intermediate_embeddings_0``, (1, 64, 64, C)) kept in the embedding for the HQ output token.
    Masks are SAM's masks plus the HQ mask (``hq_token_only=False``, the SAM-HQ default)."""

    family = "sam-hq"
    high_res_names = ("intermediate_embeddings_0",)

    def _load_model(self) -> nn.Module:
        from transformers import SamHQModel

        return SamHQModel.from_pretrained(self.model_dir, dtype=torch.float32)

    def _encode(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        embeddings, intermediate = self.model.get_image_embeddings(pixel_values)
        return {"image_embeddings": embeddings.float(), "intermediate_embeddings_0": intermediate[0].float()}

    def _encode_shapes(self) -> list[torch.Tensor]:
        cfg = self.model.config
        size = cfg.prompt_encoder_config.image_embedding_size
        side = cfg.vision_config.image_size // cfg.vision_config.patch_size
        return [
            torch.randn(1, cfg.prompt_encoder_config.hidden_size, size, size),
            torch.randn(1, side, side, cfg.vision_config.hidden_size),
        ]


def load_engine(name_or_dir: str, **options) -> SamFamilyEngine:
    """Alias of :func:`maskwright.engines.sam_registry.load_sam_engine`."""
    from maskwright.engines.sam_registry import load_sam_engine

    return load_sam_engine(name_or_dir, **options)
