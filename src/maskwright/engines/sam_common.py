"""Pre- and post-processing of the SAM / SAM 2 engines on numpy arrays (no torch).

Equal (within float tolerance) to ``transformers``' ``SamProcessor`` / ``SamImageProcessor`` (tested), but
without the processor's per-call overhead:

* SAM: the longest side is resized to 1024 with PIL bilinear (antialiased when shrinking, as the PIL
  backend of ``SamImageProcessor`` does; the new size is ``int(side * 1024 / longest + 0.5)``), scaled to
  [0, 1], normalised with the ImageNet mean/std, then zero-padded at the bottom/right to 1024x1024;
  points ``(x, y)`` are scaled by ``(new_w / W, new_h / H)``.
* SAM 2: the image is resized to 1024x1024 (aspect ratio not kept), no padding; points are scaled by
  ``(1024 / W, 1024 / H)``.

Low-res logits are ``(K, 256, 256)``. SAM's cover the padded 1024 frame, i.e. maskwright's convention
(:mod:`maskwright.engines.transforms`); SAM 2's cover the squashed full image and are converted to and from
that convention at the engine boundary (:func:`sam2_lowres_to_padded`, :func:`padded_to_sam2_lowres`).
"""

from __future__ import annotations

import functools
import os

import cv2
import numpy as np
from PIL import Image

from maskwright.engines.base import LOWRES, Embedding
from maskwright.engines.transforms import longest_side_shape

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
INPUT_SIZE = 1024


def _normalise(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> 3xHxW float32, (x / 255 - mean) / std."""
    # Fold the /255 into the scale so it is one multiply-add per pixel.
    scale = (1.0 / (255.0 * IMAGENET_STD)).astype(np.float32)
    offset = (-IMAGENET_MEAN / IMAGENET_STD).astype(np.float32)
    out = rgb.astype(np.float32) * scale + offset
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def preprocess_sam(
    image: np.ndarray, target: int = INPUT_SIZE, window: tuple[int, int, int] | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """SAM input of an HxWx3 uint8 RGB image.

    Returns:
        pixel_values (1, 3, target, target) float32, and (new_h, new_w) of the unpadded resized image.
        With ``window=(y0, x0, size)``, pixel_values is only that square of the padded input,
        ``(1, 3, size, size)``, and only its pixels are normalised (a training crop: ~4x less work).
    """
    h, w = image.shape[:2]
    new_h, new_w = longest_side_shape(h, w, target)
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    y0, x0, size = window if window is not None else (0, 0, target)
    part = resized[y0 : y0 + size, x0 : x0 + size]
    pixel = np.zeros((1, 3, size, size), np.float32)
    pixel[0, :, : part.shape[0], : part.shape[1]] = _normalise(part)
    return pixel, (new_h, new_w)


def preprocess_sam2(image: np.ndarray, target: int = INPUT_SIZE) -> np.ndarray:
    """SAM 2 input of an HxWx3 uint8 RGB image: (1, 3, target, target) float32, squashed to a square."""
    resized = np.asarray(Image.fromarray(image).resize((target, target), Image.BILINEAR))
    return _normalise(resized)[None]


def transform_coords_sam(coords: np.ndarray, original_size: tuple[int, int], target: int = INPUT_SIZE) -> np.ndarray:
    """(..., 2) XY pixels of the original image -> XY in SAM's resized (unpadded) input frame."""
    h, w = original_size
    new_h, new_w = longest_side_shape(h, w, target)
    scale = np.array([new_w / w, new_h / h], np.float32)
    return np.asarray(coords, np.float32) * scale


def transform_coords_sam2(coords: np.ndarray, original_size: tuple[int, int], target: int = INPUT_SIZE) -> np.ndarray:
    """(..., 2) XY pixels of the original image -> XY in SAM 2's square input frame."""
    h, w = original_size
    return np.asarray(coords, np.float32) * np.array([target / w, target / h], np.float32)


def _resize(m: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of one 2-D float32 map (half-pixel centres, like ``F.interpolate(align_corners=False)``)."""
    return cv2.resize(m, (width, height), interpolation=cv2.INTER_LINEAR)


def _resize_stack(maps: np.ndarray, width: int, height: int) -> np.ndarray:
    """:func:`_resize` of each of (K, h, w) maps (one 2-D call per map: no channel transposes, ~6x faster)."""
    out = np.empty((maps.shape[0], height, width), np.float32)
    for k, m in enumerate(maps):
        out[k] = _resize(np.ascontiguousarray(m, dtype=np.float32), width, height)
    return out


def _sam_full_logits(lowres: np.ndarray, original_size: tuple[int, int], target: int):
    """Yield each of SAM's (K, 256, 256) low-res maps as an (H, W) logit map at the original size."""
    h, w = original_size
    new_h, new_w = longest_side_shape(h, w, target)
    factor = target // lowres.shape[-1]
    # One extra low-res row/column keeps the bilinear taps at the crop edge identical to the full upsample.
    lh = min(lowres.shape[-2], -(-new_h // factor) + 1)
    lw = min(lowres.shape[-1], -(-new_w // factor) + 1)
    for m in lowres:
        up = _resize(np.ascontiguousarray(m[:lh, :lw], dtype=np.float32), lw * factor, lh * factor)
        yield _resize(up[:new_h, :new_w], w, h)


def postprocess_sam(lowres: np.ndarray, original_size: tuple[int, int], target: int = INPUT_SIZE) -> np.ndarray:
    """SAM low-res logits (K, 256, 256) -> logits (K, H, W) at the original size.

    Same maths as ``SamImageProcessor.post_process_masks`` (upsample x4 to the padded input frame, crop
    the valid region, resize to the original size), but the x4 upsampling is done only on the rows and
    columns that survive the crop.
    """
    out = np.empty((lowres.shape[0], *original_size), np.float32)
    for k, full in enumerate(_sam_full_logits(lowres, original_size, target)):
        out[k] = full
    return out


def sam_masks(lowres: np.ndarray, original_size: tuple[int, int], target: int = INPUT_SIZE) -> np.ndarray:
    """``postprocess_sam(...) > 0`` as (K, H, W) bool, without keeping the full-size float maps."""
    out = np.empty((lowres.shape[0], *original_size), bool)
    for k, full in enumerate(_sam_full_logits(lowres, original_size, target)):
        np.greater(full, 0, out=out[k])
    return out


def postprocess_sam2(lowres: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """SAM 2 low-res logits (K, 256, 256) of the squashed image -> logits (K, H, W) at the original size."""
    h, w = original_size
    return _resize_stack(lowres, w, h)


def sam2_masks(lowres: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """``postprocess_sam2(...) > 0`` as (K, H, W) bool."""
    h, w = original_size
    out = np.empty((lowres.shape[0], h, w), bool)
    for k, m in enumerate(lowres):
        np.greater(_resize(np.ascontiguousarray(m, dtype=np.float32), w, h), 0, out=out[k])
    return out


def sam2_lowres_to_padded(lowres: np.ndarray, original_size: tuple[int, int], pad_value: float = -20.0) -> np.ndarray:
    """SAM 2's squashed (K, 256, 256) logits -> maskwright's padded low-res convention (K, 256, 256)."""
    vh, vw = longest_side_shape(*original_size, LOWRES)
    out = np.full((lowres.shape[0], LOWRES, LOWRES), pad_value, np.float32)
    out[:, :vh, :vw] = _resize_stack(np.ascontiguousarray(lowres, dtype=np.float32), vw, vh)
    return out


def padded_to_sam2_lowres(lowres: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`sam2_lowres_to_padded`: crop the valid region and stretch it to 256x256."""
    vh, vw = longest_side_shape(*original_size, LOWRES)
    crop = np.ascontiguousarray(lowres[:, :vh, :vw], dtype=np.float32)
    return _resize_stack(crop, LOWRES, LOWRES)


def stability_score(logits: np.ndarray, threshold: float = 0.0, offset: float = 1.0) -> np.ndarray:
    """IoU between masks thresholded at ``threshold +- offset`` (as in segment-anything), per map."""
    flat = logits.reshape(logits.shape[0], -1)
    inter = (flat > threshold + offset).sum(1)
    union = (flat > threshold - offset).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0).astype(np.float32)


def embedding_to_fp16(embedding: Embedding) -> Embedding:
    """A copy of ``embedding`` with float arrays stored as float16 (half the bytes on disk / in memory).

    Engines cast back to float32 when decoding; tests show masks agree with IoU >= 0.99.
    """
    arrays = {
        k: v.astype(np.float16) if np.issubdtype(v.dtype, np.floating) else v for k, v in embedding.arrays.items()
    }
    meta = dict(embedding.meta, stored_dtype="float16")
    return Embedding(embedding.engine, embedding.engine_version, tuple(embedding.original_size), arrays, meta)


@functools.lru_cache(maxsize=1)
def cpu_bf16_support() -> str:
    """``"amx"`` / ``"avx512_bf16"`` when the CPU computes bf16 natively (fast bf16 encoding), else ``""``."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        flags = []
    if "amx_bf16" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512_bf16"
    return ""


def other_runnable_tasks() -> int | None:
    """Threads of other processes running or waiting for a CPU right now (Linux: the instantaneous runnable
    count of ``/proc/loadavg``, minus this process's running threads, e.g. its own decoder threads still
    spinning after the last click); ``None`` where that is not available."""
    try:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
        tasks = os.listdir("/proc/self/task")
    except (OSError, IndexError, ValueError):
        return None
    own = 0
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:  # the thread ended meanwhile
            continue
        own += stat[stat.rindex(")") + 2] == "R"  # the state field follows "(comm) "
    return max(0, running - max(own, 1))
