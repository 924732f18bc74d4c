"""Area, boxes and IoU of bool masks."""

from __future__ import annotations

import numpy as np

from maskwright.masks.validation import as_bool_mask


def area(mask: np.ndarray) -> int:
    """Number of foreground pixels."""
    return int(np.count_nonzero(as_bool_mask(mask)))


def bbox_xyxy(mask: np.ndarray) -> list[int]:
    """Tight box ``[x0, y0, x1, y1]`` with exclusive ``x1, y1``; ``[0, 0, 0, 0]`` for an empty mask."""
    m = as_bool_mask(mask)
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return [0, 0, 0, 0]
    cols = np.flatnonzero(m.any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]


def bbox_xywh(mask: np.ndarray) -> list[int]:
    """Tight box ``[x, y, w, h]`` (COCO / SAM-records convention); zeros for an empty mask."""
    x0, y0, x1, y1 = bbox_xyxy(mask)
    return [x0, y0, x1 - x0, y1 - y0]


def iou(a: np.ndarray, b: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """Intersection over union of two masks; pixels where ``ignore`` is true do not count.

    Two empty masks have IoU 1.0 (they agree perfectly).
    """
    a = as_bool_mask(a, "a")
    b = as_bool_mask(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"masks must have the same shape, got {a.shape} and {b.shape}")
    if ignore is not None:
        keep = ~as_bool_mask(ignore, "ignore")
        a = a & keep
        b = b & keep
    union = np.count_nonzero(a | b)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(a & b) / union)
