"""Removal of specks (small islands) and small holes."""

from __future__ import annotations

import cv2
import numpy as np

from maskwright.masks.validation import as_bool_mask


def remove_small_regions(mask: np.ndarray, area_thresh: int, mode: str) -> tuple[np.ndarray, bool]:
    """Remove islands (``mode="islands"``) or fill holes (``mode="holes"``) smaller than ``area_thresh``.

    As in segment-anything's ``amg.remove_small_regions``: 8-connectivity; if every island is small,
    the largest one is kept so the mask never vanishes. Returns ``(mask, changed)``.
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    m = as_bool_mask(mask)
    if area_thresh <= 0:
        return m.copy(), False
    correct_holes = mode == "holes"
    working = (correct_holes ^ m).astype(np.uint8)
    n_labels, regions, stats, _ = cv2.connectedComponentsWithStats(working, 8)
    sizes = stats[:, cv2.CC_STAT_AREA][1:]
    small = [i + 1 for i, s in enumerate(sizes) if s < area_thresh]
    if not small:
        return m.copy(), False
    fill_labels = [0, *small]
    if not correct_holes:
        fill_labels = [i for i in range(n_labels) if i not in fill_labels]
        if not fill_labels:  # every island is small: keep the largest
            fill_labels = [int(np.argmax(sizes)) + 1]
    return np.isin(regions, fill_labels), True


def clean_mask(mask: np.ndarray, min_island_area: int = 0, min_hole_area: int = 0) -> np.ndarray:
    """Fill holes under ``min_hole_area`` px, then drop islands under ``min_island_area`` px."""
    m, _ = remove_small_regions(mask, min_hole_area, "holes")
    m, _ = remove_small_regions(m, min_island_area, "islands")
    return m
