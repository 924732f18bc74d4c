"""Mask <-> polygon conversion that keeps every part and every hole.

A mask becomes a list of *parts*, each ``{"exterior": [x0, y0, x1, y1, ...], "holes": [[...], ...]}``
with coordinates at pixel centres (pixel ``(x, y)`` covers ``[x - 0.5, x + 0.5]``). Exteriors are filled
inclusive of their outline; holes are cleared strictly inside theirs (OpenCV traces a hole along the
foreground pixels that surround it, so its outline belongs to the object). An island inside a hole is a
part of its own. ``coco_segmentation`` flattens parts to COCO's polygon list, which cannot hold holes.
"""

from __future__ import annotations

import cv2
import numpy as np

from maskwright.masks.validation import as_bool_mask

PolygonPart = dict  # {"exterior": list[float], "holes": list[list[float]]}


def _flat(contour: np.ndarray) -> list[float]:
    return [float(v) for v in contour.reshape(-1, 2).ravel()]


def mask_to_polygons(mask: np.ndarray, tolerance: float = 0.0) -> list[PolygonPart]:
    """Trace every connected part of ``mask`` with its holes.

    Args:
        mask: bool HxW.
        tolerance: Douglas-Peucker tolerance in pixels (0 keeps every boundary pixel).
    Returns:
        Parts sorted by decreasing area, each with ``exterior`` and ``holes`` as flat XY lists.
    """
    m = as_bool_mask(mask).astype(np.uint8)
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}")
    contours, hierarchy = cv2.findContours(
        m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE if tolerance > 0 else cv2.CHAIN_APPROX_SIMPLE
    )
    if hierarchy is None:
        return []
    hierarchy = hierarchy[0]
    parts: list[tuple[float, PolygonPart]] = []
    for i, contour in enumerate(contours):
        if hierarchy[i][3] != -1:  # a hole: attached to its parent below
            continue
        holes = []
        child = hierarchy[i][2]
        while child != -1:
            holes.append(_flat(simplify_contour(contours[child], tolerance)))
            child = hierarchy[child][0]
        exterior = simplify_contour(contour, tolerance)
        parts.append((cv2.contourArea(contour), {"exterior": _flat(exterior), "holes": holes}))
    parts.sort(key=lambda p: -p[0])
    return [p for _, p in parts]


def simplify_contour(contour: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas-Peucker simplification of one OpenCV contour (``(N, 1, 2)`` int32)."""
    if tolerance <= 0 or len(contour) <= 3:
        return contour
    approx = cv2.approxPolyDP(contour, tolerance, True)
    return approx if len(approx) >= 3 else contour


def simplify_polygons(parts: list[PolygonPart], tolerance: float) -> list[PolygonPart]:
    """Simplify already traced parts with tolerance ``tolerance`` pixels."""

    def simp(flat: list[float]) -> list[float]:
        c = np.round(np.asarray(flat, dtype=np.float64).reshape(-1, 1, 2)).astype(np.int32)
        return _flat(simplify_contour(c, tolerance))

    return [{"exterior": simp(p["exterior"]), "holes": [simp(h) for h in p.get("holes", [])]} for p in parts]


def _points(flat: list[float], name: str) -> np.ndarray:
    arr = np.asarray(flat, dtype=np.float64)
    if arr.ndim != 1 or arr.size < 2 or arr.size % 2:
        raise ValueError(f"{name} must be a flat [x0, y0, x1, y1, ...] list, got {arr.size} values")
    return np.round(arr.reshape(-1, 1, 2)).astype(np.int32)


def polygons_to_mask(parts: list[PolygonPart], height: int, width: int) -> np.ndarray:
    """Rasterise parts (as returned by :func:`mask_to_polygons`) into a bool ``(height, width)`` mask."""
    if height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive, got {height}x{width}")
    out = np.zeros((height, width), np.uint8)

    def size(p: PolygonPart) -> float:
        return abs(cv2.contourArea(_points(p["exterior"], "exterior").astype(np.float32)))

    # Larger parts first, so an island inside another part's hole is drawn after that hole is cleared.
    for part in sorted(parts, key=size, reverse=True):
        ext = _points(part["exterior"], "exterior")
        cv2.fillPoly(out, [ext], 1)
        cv2.polylines(out, [ext], True, 1)
        for k, hole in enumerate(part.get("holes", [])):
            h = _points(hole, f"holes[{k}]")
            cv2.fillPoly(out, [h], 0)
            cv2.polylines(out, [h], True, 1)
    return out.astype(bool)


def coco_segmentation(parts: list[PolygonPart]) -> list[list[float]]:
    """COCO polygon list (exteriors with >= 3 points). Holes are lost: use RLE where they matter."""
    return [p["exterior"] for p in parts if len(p["exterior"]) >= 6]
