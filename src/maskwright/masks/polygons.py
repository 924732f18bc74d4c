"""Mask <-> polygon conversion that keeps every part and every hole.

A mask becomes a list of *parts*, each ``{"exterior": [x0, y0, x1, y1, ...], "holes": [[...], ...]}``.

Coordinates are pixels with pixel ``(x, y)`` centred at ``(x, y)`` and covering ``[x - 0.5, x + 0.5]`` (the
convention of clicks and points). A pixel belongs to a polygon when its centre lies inside it. Outlines run
on the pixel edges, through the midpoints of the boundary edges (coordinates are multiples of 0.5 before
simplification), halfway between the centres of object and background pixels; Douglas-Peucker chord errors
are then symmetric (as much area gained as lost), where chords through boundary-pixel centres always cut
corners inward. COCO puts pixel ``(x, y)`` on ``[x, x + 1]`` instead: :func:`coco_segmentation` shifts by
+0.5, and rasterising goes through pycocotools after the same shift, so COCO tools and this module agree
pixel for pixel.

Holes are cleared from their part; an island inside a hole is a part of its own. ``coco_segmentation``
flattens parts to COCO's polygon list, which cannot hold holes.
"""

from __future__ import annotations

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from maskwright.masks.validation import as_bool_mask

PolygonPart = dict  # {"exterior": list[float], "holes": list[list[float]]}
COCO_SHIFT = 0.5  # COCO coordinates = ours + 0.5 (COCO's pixel x spans [x, x + 1])


def _flat(points: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(points).reshape(-1, 2).ravel()]


def _edge_outlines(mask: np.ndarray) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Outlines of ``mask`` (uint8) through the midpoints of its boundary pixel edges.

    Returns (contours as (N, 2) float64 XY in the module's convention, OpenCV CCOMP hierarchy).

    OpenCV traces the centres of boundary pixels. On the mask upsampled 2x every pixel is a 2x2 block,
    and a boundary sub-pixel at ``u`` (even = left/top half, odd = right/bottom half of its pixel) sits
    next to the pixel corner ``ceil(u / 2)`` (corner ``c`` = the edge between pixels ``c - 1`` and ``c``),
    which lies on the pixel-edge ("crack") outline; so ``u -> (u + 1) // 2`` turns the traced chain into
    the crack outline, one unit edge per step. Joining the midpoints of consecutive unit edges cuts every
    corner by half a pixel: the outline then separates foreground from background pixel centres by at
    least 0.35 px (an exact round trip under the pixel-centre rule), a 45-degree staircase becomes one
    straight segment, and a diagonal contact (foreground is 8-connected, as in OpenCV) becomes a thin
    bridge instead of a self-touching vertex.
    """
    up = np.repeat(np.repeat(mask, 2, axis=0), 2, axis=1)
    contours, hierarchy = cv2.findContours(up, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if hierarchy is None:
        return [], None
    outlines = []
    for contour in contours:
        corners = (contour.reshape(-1, 2) + 1) // 2
        corners = corners[np.any(corners != np.roll(corners, 1, axis=0), axis=1)]  # one point per unit edge
        doubled_midpoints = corners + np.roll(corners, -1, axis=0)  # 2 x midpoint: exact integers
        outlines.append(_drop_collinear(doubled_midpoints) / 2.0 - COCO_SHIFT)
    return outlines, hierarchy[0]


def _drop_collinear(points: np.ndarray) -> np.ndarray:
    """Drop points in the middle of straight runs of a closed outline of integer points."""
    if len(points) < 3:
        return points
    incoming = points - np.roll(points, 1, axis=0)
    outgoing = np.roll(points, -1, axis=0) - points
    turns = incoming[:, 0] * outgoing[:, 1] - incoming[:, 1] * outgoing[:, 0] != 0
    reverses = np.sum(incoming * outgoing, axis=1) < 0  # a U-turn is not a straight run either
    return points[turns | reverses]


def mask_to_polygons(mask: np.ndarray, tolerance: float = 0.0) -> list[PolygonPart]:
    """Trace every connected part of ``mask`` with its holes, along pixel edges.

    Args:
        mask: bool HxW.
        tolerance: Douglas-Peucker tolerance in pixels (0 keeps every corner: the round trip through
            :func:`polygons_to_mask` is then exact).
    Returns:
        Parts sorted by decreasing area, each with ``exterior`` and ``holes`` as flat XY lists (pixel
        centres at integer coordinates, see the module docstring).
    """
    m = as_bool_mask(mask).astype(np.uint8)
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}")
    contours, hierarchy = _edge_outlines(m)
    if hierarchy is None:
        return []
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
        parts.append(
            (
                cv2.contourArea(contour.astype(np.float32).reshape(-1, 1, 2)),
                {"exterior": _flat(exterior), "holes": holes},
            )
        )
    parts.sort(key=lambda p: -p[0])
    return [p for _, p in parts]


def simplify_contour(contour: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas-Peucker simplification of one closed outline (``(N, 2)`` or ``(N, 1, 2)`` XY)."""
    if tolerance <= 0 or len(contour) <= 3:
        return contour
    approx = cv2.approxPolyDP(np.asarray(contour, np.float32).reshape(-1, 1, 2), tolerance, True)
    return approx if len(approx) >= 3 else contour


def simplify_polygons(parts: list[PolygonPart], tolerance: float) -> list[PolygonPart]:
    """Simplify already traced parts with tolerance ``tolerance`` pixels."""

    def simp(flat: list[float]) -> list[float]:
        return _flat(simplify_contour(_points(flat, "polygon"), tolerance))

    return [{"exterior": simp(p["exterior"]), "holes": [simp(h) for h in p.get("holes", [])]} for p in parts]


def _points(flat: list[float], name: str) -> np.ndarray:
    arr = np.asarray(flat, dtype=np.float64)
    if arr.ndim != 1 or arr.size < 2 or arr.size % 2 or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be a flat [x0, y0, x1, y1, ...] list of finite numbers, got {arr.size} values")
    return arr.reshape(-1, 2)


def _rasterise(points: np.ndarray, height: int, width: int) -> tuple[slice, slice, np.ndarray] | None:
    """Pixels whose centre is inside the polygon (``points`` in COCO coordinates), in the polygon's
    bounding window of the image.

    Returns (rows, cols, bool window) or None when the polygon covers no pixel of the image. pycocotools
    does the rasterising (the COCO rule); working in the window keeps many small parts cheap.
    """
    if len(points) < 3:
        return None
    x0 = max(int(np.floor(points[:, 0].min())), 0)
    y0 = max(int(np.floor(points[:, 1].min())), 0)
    x1 = min(int(np.ceil(points[:, 0].max())), width)
    y1 = min(int(np.ceil(points[:, 1].max())), height)
    if x1 <= x0 or y1 <= y0:
        return None
    local = (points - (x0, y0)).ravel().tolist()
    rle = mask_utils.frPyObjects([local], y1 - y0, x1 - x0)
    window = mask_utils.decode(rle)[:, :, 0].astype(bool)
    return slice(y0, y1), slice(x0, x1), window


def polygons_to_mask(parts: list[PolygonPart], height: int, width: int) -> np.ndarray:
    """Rasterise parts (as returned by :func:`mask_to_polygons`) into a bool ``(height, width)`` mask.

    A pixel is set when its centre is inside a part's exterior and outside that part's holes.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive, got {height}x{width}")
    out = np.zeros((height, width), bool)
    checked = []
    for part in parts:
        ext = _points(part["exterior"], "exterior") + COCO_SHIFT
        holes = [_points(h, f"holes[{k}]") + COCO_SHIFT for k, h in enumerate(part.get("holes", []))]
        checked.append((abs(cv2.contourArea(ext.astype(np.float32).reshape(-1, 1, 2))), ext, holes))
    # Larger parts first, so an island inside another part's hole is drawn after that hole is cleared.
    checked.sort(key=lambda t: -t[0])
    for _, ext, holes in checked:
        filled = _rasterise(ext, height, width)
        if filled is None:
            continue
        rows, cols, window = filled
        for hole in holes:
            cleared = _rasterise(hole, height, width)
            if cleared is None:
                continue
            h_rows, h_cols, h_window = cleared
            # clip the hole's window to the exterior's (a simplified hole may poke out a little)
            r0, r1 = max(h_rows.start, rows.start), min(h_rows.stop, rows.stop)
            c0, c1 = max(h_cols.start, cols.start), min(h_cols.stop, cols.stop)
            if r1 > r0 and c1 > c0:
                sub = h_window[r0 - h_rows.start : r1 - h_rows.start, c0 - h_cols.start : c1 - h_cols.start]
                window[r0 - rows.start : r1 - rows.start, c0 - cols.start : c1 - cols.start] &= ~sub
        out[rows, cols] |= window
    return out


def coco_segmentation(parts: list[PolygonPart]) -> list[list[float]]:
    """COCO polygon list (exteriors with >= 3 points) in COCO coordinates (ours + 0.5, where pixel ``x``
    spans ``[x, x + 1]``). Holes are lost: use RLE where they matter."""
    return [[v + COCO_SHIFT for v in p["exterior"]] for p in parts if len(p["exterior"]) >= 6]
