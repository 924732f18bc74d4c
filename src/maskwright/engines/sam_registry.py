"""Registers the SAM / SAM 2 engines and the local-directory resolver. Light: no torch import here.

Engine names are the catalogue names of :mod:`maskwright.engines.hub` (``sam2.1-hiera-tiny``,
``sam-vit-base``, ...); any directory in Hugging Face format (config.json + *.safetensors, model_type
``sam``, ``sam_hq``, ``sam2`` or ``sam2_video``) is also accepted as an engine name, e.g.
``Predictor("path/to/tiny-sam")``.

Engine options (decoder backend, encoder dtype, threads) are read from the environment by
:func:`load_sam_engine` when an engine is created by name; pass them explicitly to choose per engine:

* ``MASKWRIGHT_SAM_DECODER``: ``auto`` (ONNX Runtime when the export exists or can be made, else torch),
  ``onnx`` or ``torch``;
* ``MASKWRIGHT_ENCODER_DTYPE``: ``auto`` (bf16 where the CPU has AMX / AVX512-BF16, else fp32),
  ``float32`` or ``bfloat16``;
* ``MASKWRIGHT_ENCODER_THREADS``: torch threads for image encoding (default: torch's default);
* ``MASKWRIGHT_DECODER_THREADS``: threads of the click decoder (default: 1, or every core for a click that
  finds the CPU idle);
* ``MASKWRIGHT_BATCH_THREADS``: threads of ``decode_batch`` (segment-everything; default: all cores).
"""

from __future__ import annotations

import os

from maskwright.engines import hub
from maskwright.engines.registry import EngineSpec, register, register_resolver

# The official SAM 2.1 repositories (facebook/sam2.1-hiera-*) hold transformers weights of type
# ``sam2_video``: the image model's modules under the same names plus memory modules, which
# Sam2Model loads without missing keys (tested on a saved Sam2VideoConfig model).
SAM_MODEL_TYPES = ("sam", "sam_hq", "sam2", "sam2_video")


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return max(1, int(value))
    except ValueError:
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None


def load_sam_engine(
    name_or_dir: str,
    decoder: str | None = None,
    encoder_dtype: str | None = None,
    encoder_threads: int | None = None,
    decoder_threads: int | None = None,
    batch_threads: int | None = None,
):
    """Create a SAM-family engine from a registry name or an HF-format model directory.

    Args:
        decoder: ``"auto"`` | ``"onnx"`` | ``"torch"`` (default from ``MASKWRIGHT_SAM_DECODER`` or auto).
        encoder_dtype: ``"auto"`` | ``"float32"`` | ``"bfloat16"`` (default from ``MASKWRIGHT_ENCODER_DTYPE``).
        encoder_threads: torch threads for :meth:`embed` (default ``MASKWRIGHT_ENCODER_THREADS``).
        decoder_threads: threads for :meth:`decode` (default ``MASKWRIGHT_DECODER_THREADS``, else adaptive:
            1, or every core when the CPU is idle).
        batch_threads: threads for :meth:`decode_batch` (default ``MASKWRIGHT_BATCH_THREADS`` or all cores).
    """
    model_dir = hub.resolve_model_dir(name_or_dir)
    model_type = hub.read_model_type(model_dir)
    options = dict(
        decoder=decoder or os.environ.get("MASKWRIGHT_SAM_DECODER", "auto"),
        encoder_dtype=encoder_dtype or os.environ.get("MASKWRIGHT_ENCODER_DTYPE", "auto"),
        encoder_threads=encoder_threads or _env_int("MASKWRIGHT_ENCODER_THREADS"),
        decoder_threads=decoder_threads or _env_int("MASKWRIGHT_DECODER_THREADS"),
        batch_threads=batch_threads or _env_int("MASKWRIGHT_BATCH_THREADS"),
    )
    name = name_or_dir if name_or_dir in hub.CATALOGUE else str(model_dir)
    if model_type in ("sam2", "sam2_video"):
        from maskwright.engines.sam2 import Sam2Engine

        return Sam2Engine(model_dir, name=name, **options)
    if model_type == "sam":
        from maskwright.engines.sam import SamEngine

        return SamEngine(model_dir, name=name, **options)
    if model_type == "sam_hq":
        from maskwright.engines.sam import SamHQEngine

        return SamHQEngine(model_dir, name=name, **options)
    raise ValueError(f"{model_dir} holds a {model_type!r} model; expected one of {', '.join(SAM_MODEL_TYPES)}")


def _resolve_directory(name: str):
    """Registry resolver: an HF-format SAM directory becomes an engine; anything else is not ours."""
    if not hub.is_model_dir(name):
        return None
    if hub.read_model_type(name) not in SAM_MODEL_TYPES:
        return None
    return load_sam_engine(name)


def _make_spec(info: hub.ModelInfo) -> EngineSpec:
    return EngineSpec(
        name=info.name,
        family=info.family,
        description=f"{info.description} ({info.hub_id})",
        factory=lambda: load_sam_engine(info.name),
        availability=lambda: hub.availability(info.name),
        priority=info.priority,
    )


for _info in hub.CATALOGUE.values():
    register(_make_spec(_info))
register_resolver(_resolve_directory)
