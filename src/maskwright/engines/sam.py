"""``sam`` engines (SAM, SlimSAM, SAM-HQ weights) on Hugging Face ``transformers``, with a fast CPU click path.

    engine = load_sam_engine("sam-vit-base")                 # or an HF-format directory
    engine = load_sam_engine("path/to/tiny-sam", decoder="onnx")   # pick the decoder backend

Image encoding runs the ``transformers`` vision encoder (bf16 autocast where the CPU supports it,
configurable threads). Clicks run :class:`PromptDecoder` -- the model's own prompt encoder and mask
decoder behind one fixed signature -- either exported to ONNX Runtime (default when possible, 1 thread,
independent of torch's pool) or in torch. Pre/post-processing is numpy (:mod:`maskwright.engines.sam_common`).

Decoder backends: ``engine.decoder_backend`` is ``"onnx"`` or ``"torch"``; ``engine.set_decoder("torch")``
switches (e.g. to compare both on the same embedding).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from pathlib import Path

import numpy as np
import torch
from torch import nn

from maskwright.engines import hub, sam_common
from maskwright.engines.base import LOWRES, Embedding, Engine, MaskPrediction, Prompt
from maskwright.engines.onnx_decoder import OnnxDecoder, decoder_input_names, export_decoder, onnx_path

log = logging.getLogger(__name__)

ENCODER_DTYPES = ("auto", "float32", "bfloat16")
BATCH_CHUNK = 16  # prompts per decoder call in decode_batch (memory grows ~5 MB per prompt)
DECODERS = ("auto", "onnx", "torch")


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
        coords = (point_coords + 0.5)[:, None]  # pixel centres, as the prompt encoders do; (B, 1, T, 2)
        sparse = self.prompt_encoder.shared_embedding(coords, (self.input_size, self.input_size))
        labels = point_labels[:, None, :, None]
        sparse = torch.where(labels == -1, self.prompt_encoder.not_a_point_embed.weight, sparse)
        weights = self._point_weights()
        for k in range(weights.shape[0]):
            sparse = sparse + weights[k] * (labels == k).to(sparse.dtype)
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
        decoder_threads: int = 1,
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
        self.decoder_threads = max(1, int(decoder_threads))
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
        self._onnx: dict[bool, OnnxDecoder] = {}
        self._onnx_batch: dict[bool, OnnxDecoder] = {}
        self._encoding = threading.Event()
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

    def export_onnx(self, force: bool = False, exporters: tuple[str, ...] | None = None) -> list[Path]:
        """Export both decoders (multimask and single) to :meth:`onnx_dir` unless already there."""
        out = []
        for multimask in (True, False):
            path = onnx_path(self.onnx_dir(), multimask)
            if force or not path.exists():
                module, n_high = self._torch_decoders[multimask], len(self.high_res_names)
                export_decoder(module, self._example_inputs(), path, n_high, exporters)
            out.append(path)
        return out

    def set_decoder(self, backend: str) -> None:
        """Use ``"onnx"`` (exported once and cached, see :meth:`export_onnx`) or ``"torch"`` to decode."""
        if backend == "onnx":
            if not self._onnx:
                paths = self.export_onnx()
                self._onnx = {mm: OnnxDecoder(p, self.decoder_threads) for mm, p in zip((True, False), paths)}
            self._onnx_batch = {}
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
        feats = [np.ascontiguousarray(arrays[n], dtype=np.float32) for n in needed]
        batch = len(coords) > 1
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

    def _onnx_session(self, multimask_output: bool, batch: bool) -> OnnxDecoder:
        if not batch or self.batch_threads == self.decoder_threads:
            return self._onnx[multimask_output]
        if multimask_output not in self._onnx_batch:
            self._onnx_batch[multimask_output] = OnnxDecoder(self._onnx[multimask_output].path, self.batch_threads)
        return self._onnx_batch[multimask_output]

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
    """SAM (ViT-B/L/H, SlimSAM) via ``transformers.SamModel``."""

    family = "sam"


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
