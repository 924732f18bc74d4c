"""Shared argument checks for mask functions."""

from __future__ import annotations

import numpy as np


def as_bool_mask(mask: np.ndarray, name: str = "mask") -> np.ndarray:
    """Return ``mask`` as a 2-D bool array, or raise ``ValueError`` naming the argument."""
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D HxW array, got shape {arr.shape}")
    if arr.dtype != bool:
        arr = arr > 0
    return arr
