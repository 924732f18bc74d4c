"""Resizing conventions shared by engines (SAM's ``ResizeLongestSide`` geometry).

An image of size (H, W) is scaled by ``target / max(H, W)`` to (round(H*s), round(W*s)) and padded at the
bottom/right to ``target x target``. Low-res logits (256x256) use the same geometry with target 256.
"""

from __future__ import annotations

import cv2
import numpy as np

from maskwright.engines.base import LOWRES


def longest_side_shape(height: int, width: int, target: int) -> tuple[int, int]:
    """(h, w) after scaling so the longest side equals ``target`` (rounded as SAM does)."""
    scale = target / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def lowres_to_logits(lowres: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """Upsample ``(K, 256, 256)`` low-res logits to ``(K, H, W)`` at the original size.

    The valid region (the unpadded part) is cropped, then resized bilinearly.
    """
    h, w = original_size
    vh, vw = longest_side_shape(h, w, LOWRES)
    out = np.empty((lowres.shape[0], h, w), np.float32)
    for k in range(lowres.shape[0]):
        out[k] = cv2.resize(lowres[k, :vh, :vw], (w, h), interpolation=cv2.INTER_LINEAR)
    return out


def logits_to_lowres(logits: np.ndarray, pad_value: float = -20.0) -> np.ndarray:
    """Downsample ``(K, H, W)`` full-size logits to the ``(K, 256, 256)`` low-res convention."""
    k, h, w = logits.shape
    vh, vw = longest_side_shape(h, w, LOWRES)
    out = np.full((k, LOWRES, LOWRES), pad_value, np.float32)
    for i in range(k):
        out[i, :vh, :vw] = cv2.resize(logits[i].astype(np.float32), (vw, vh), interpolation=cv2.INTER_AREA)
    return out


def mask_to_lowres(mask: np.ndarray, strength: float = 8.0) -> np.ndarray:
    """A bool HxW mask as ``(1, 256, 256)`` logits (+strength inside, -strength outside)."""
    logits = np.where(mask, strength, -strength).astype(np.float32)[None]
    return logits_to_lowres(logits, pad_value=-strength)
