"""Overlays for looking at masks: each mask tinted in its colour over the photo, outlines, clicks."""

from __future__ import annotations

import cv2
import numpy as np


def palette(n: int, seed: int = 0) -> np.ndarray:
    """``n`` distinct RGB uint8 colours (golden-ratio hues)."""
    hues = (np.arange(n) * 0.618033988749895 + seed * 0.1) % 1.0
    hsv = np.stack([hues * 179, np.full(n, 200), np.full(n, 255)], axis=1).astype(np.uint8)[None]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]


def overlay_masks(
    image: np.ndarray,
    masks: list[np.ndarray] | np.ndarray,
    colors: np.ndarray | None = None,
    alpha: float = 0.5,
    outline: bool = True,
) -> np.ndarray:
    """Return an RGB copy of ``image`` with every bool HxW mask tinted (and outlined) in its colour."""
    out = image.astype(np.float32).copy()
    masks = list(masks)
    colors = palette(len(masks)) if colors is None else np.asarray(colors, np.uint8)
    for m, c in zip(masks, colors):
        out[m] = out[m] * (1 - alpha) + c.astype(np.float32) * alpha
    out = out.astype(np.uint8)
    if outline:
        for m, c in zip(masks, colors):
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(out, contours, -1, tuple(int(v) for v in c), 1)
    return out


def draw_prompt(
    image: np.ndarray,
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    box: np.ndarray | None = None,
) -> np.ndarray:
    """Draw clicks (green positive, red negative) and an XYXY box on an RGB copy of ``image``."""
    out = image.copy()
    r = max(3, round(max(image.shape[:2]) / 150))
    if box is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x0, y0), (x1, y1), (255, 200, 0), max(1, r // 2))
    if points is not None:
        for (x, y), lab in zip(points, labels):
            color = (40, 220, 40) if lab == 1 else (230, 30, 30)
            cv2.circle(out, (int(round(x)), int(round(y))), r, color, -1, cv2.LINE_AA)
            cv2.circle(out, (int(round(x)), int(round(y))), r, (255, 255, 255), 1, cv2.LINE_AA)
    return out
