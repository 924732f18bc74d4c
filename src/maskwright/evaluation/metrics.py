"""Metrics of interactive segmentation: NoC@X (number of clicks to reach IoU X) and IoU-vs-clicks curves.

``ious`` arrays hold, per sample, the IoU after click 1, 2, ..., max_clicks (column ``k - 1`` = after
``k`` clicks).
"""

from __future__ import annotations

import numpy as np


def clicks_to_reach(ious: np.ndarray, threshold: float, max_clicks: int = 20) -> int:
    """Clicks needed to first reach ``iou >= threshold`` (1-based), or ``max_clicks`` when never reached."""
    ious = np.asarray(ious, dtype=np.float64).reshape(-1)[:max_clicks]
    reached = ious >= threshold
    return int(np.argmax(reached)) + 1 if reached.any() else int(max_clicks)


def noc(all_ious: list[np.ndarray] | np.ndarray, threshold: float, max_clicks: int = 20) -> float:
    """NoC@threshold: mean over samples of :func:`clicks_to_reach` (``max_clicks`` when never reached)."""
    counts = [clicks_to_reach(s, threshold, max_clicks) for s in all_ious]
    if not counts:
        raise ValueError("noc needs at least one sample")
    return float(np.mean(counts))


def never_reached(all_ious: list[np.ndarray] | np.ndarray, threshold: float, max_clicks: int = 20) -> int:
    """How many samples never reach ``iou >= threshold`` within ``max_clicks`` clicks."""
    return int(sum(not np.any(np.asarray(s)[:max_clicks] >= threshold) for s in all_ious))


def noc_at_max(all_ious: list[np.ndarray] | np.ndarray, threshold: float, max_clicks: int = 20) -> int:
    """How many samples have NoC = ``max_clicks`` (the ">=20" count of RITM tables: never reached, or
    reached only at the last click)."""
    return int(sum(clicks_to_reach(s, threshold, max_clicks) == max_clicks for s in all_ious))


def mean_iou_curve(all_ious: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """Mean IoU after 1..K clicks over samples, shape (K,). Every sample must have K values."""
    arr = np.asarray(all_ious, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"all_ious must be (samples, clicks) with at least one sample, got shape {arr.shape}")
    return arr.mean(axis=0)


def summarize(
    all_ious: list[np.ndarray] | np.ndarray,
    click_seconds: list[float],
    set_image_seconds: list[float],
    max_clicks: int = 20,
) -> dict:
    """The per-engine summary of one dataset (JSON-serialisable)."""
    curve = mean_iou_curve(all_ious)
    out = {
        "n_samples": len(all_ious),
        "max_clicks": int(max_clicks),
        "noc85": noc(all_ious, 0.85, max_clicks),
        "noc90": noc(all_ious, 0.90, max_clicks),
        "never_reached_85": never_reached(all_ious, 0.85, max_clicks),
        "never_reached_90": never_reached(all_ious, 0.90, max_clicks),
        "noc_at_max_90": noc_at_max(all_ious, 0.90, max_clicks),
        "mean_iou_per_click": [round(float(v), 6) for v in curve],
    }
    for k in (1, 3, 5):
        if k <= len(curve):
            out[f"miou@{k}"] = round(float(curve[k - 1]), 6)
    out["seconds_per_click"] = _stats(click_seconds)
    out["set_image_seconds"] = _stats(set_image_seconds)
    return out


def _stats(values: list[float]) -> dict:
    if not values:
        return {"median": None, "mean": None, "n": 0}
    arr = np.asarray(values, dtype=np.float64)
    return {"median": round(float(np.median(arr)), 6), "mean": round(float(arr.mean()), 6), "n": int(arr.size)}
