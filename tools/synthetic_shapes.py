"""Synthetic scenes of textured shapes on textured backgrounds, with exact instance masks.

Used to train the tiny SAM fixture (``tools/train_tiny_sam.py``) and to test the real SAM path on fresh
images (``tests/test_tiny_sam.py``). Pure numpy + OpenCV; deterministic for a given ``numpy`` Generator.

    rng = np.random.default_rng(0)
    scene = make_scene(rng, height=300, width=500)
    scene.image          # HxWx3 uint8 RGB
    scene.masks          # (S, H, W) bool visible mask of each shape (later shapes occlude earlier ones)
    scene.kinds          # ["ellipse", "polygon", "rectangle", ...]
    scene.colors         # (S + 1, 3) float32 base RGB colors: the background's, then each shape's
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SHAPE_KINDS = ("ellipse", "polygon", "rectangle")
# Default distance (RGB L2, 0-255) between the colors of a scene's shapes and background. The tiny SAM tells
# shapes apart by a 14-channel code that follows chroma more than lightness; at 70 apart its clicks spill onto
# look-alike shapes and its test bars pass on one draw of scenes in twenty (docs/benchmarks.md, "Session 16").
MIN_COLOR_DISTANCE = 120.0


@dataclass
class Scene:
    """image: HxWx3 uint8 RGB; masks: (S, H, W) bool visible masks; kinds: shape kind of each mask;
    colors: (S + 1, 3) float32 base RGB colors (0-255) before texture and noise, the background's first."""

    image: np.ndarray
    masks: np.ndarray
    kinds: list[str]
    colors: np.ndarray


def smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """HxW float32 noise in [-1, 1], smooth at a scale of about ``max(H, W) / cells`` pixels."""
    grid_h = max(2, round(cells * height / max(height, width)) + 2)
    grid_w = max(2, round(cells * width / max(height, width)) + 2)
    grid = rng.uniform(-1.0, 1.0, (grid_h, grid_w))
    return cv2.resize(grid.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC).clip(-1, 1)


def texture_pattern(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """HxW float32 pattern in about [-1, 1]: stripes, checks, blotches or fine grain."""
    kind = rng.integers(4)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == 0:  # stripes at a random angle and period
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(6, 24)
        return np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period).astype(np.float32)
    if kind == 1:  # checks
        period = rng.uniform(8, 28)
        return (np.sign(np.sin(xx * np.pi / period) * np.sin(yy * np.pi / period))).astype(np.float32)
    if kind == 2:  # blotches
        return smooth_noise(rng, height, width, int(rng.integers(4, 12)))
    return rng.uniform(-1.0, 1.0, (height, width)).astype(np.float32)  # grain


def random_color(rng: np.random.Generator, avoid: list[np.ndarray], min_distance: float) -> np.ndarray:
    """An RGB float32 color at least ``min_distance`` (L2, 0-255 scale) from each color in ``avoid``."""
    best, best_d = None, -1.0
    for _ in range(50):
        color = rng.uniform(20, 235, 3).astype(np.float32)
        d = min((float(np.linalg.norm(color - a)) for a in avoid), default=1e9)
        if d >= min_distance:
            return color
        if d > best_d:
            best, best_d = color, d
    return best


def textured_fill(rng: np.random.Generator, height: int, width: int, color: np.ndarray, amplitude: float) -> np.ndarray:
    """HxWx3 float32 texture: ``color`` modulated by a random pattern of the given amplitude (0-255 scale)."""
    pattern = texture_pattern(rng, height, width)
    tint = rng.uniform(0.5, 1.0, 3).astype(np.float32)  # the pattern shifts channels unequally
    shading = 0.5 * amplitude * smooth_noise(rng, height, width, 3)
    return color[None, None, :] + (amplitude * pattern + shading)[..., None] * tint[None, None, :]


def shape_mask(rng: np.random.Generator, height: int, width: int, kind: str, size: float) -> np.ndarray:
    """Bool HxW mask of one shape of about ``size`` pixels across, centred anywhere in the image."""
    cx = rng.uniform(0.1, 0.9) * width
    cy = rng.uniform(0.1, 0.9) * height
    mask = np.zeros((height, width), np.uint8)
    if kind == "ellipse":
        axes = (max(3, int(size / 2 * rng.uniform(0.5, 1.0))), max(3, int(size / 2 * rng.uniform(0.5, 1.0))))
        cv2.ellipse(mask, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1, cv2.LINE_8)
    elif kind == "rectangle":
        w, h = size * rng.uniform(0.45, 1.0), size * rng.uniform(0.45, 1.0)
        box = cv2.boxPoints(((cx, cy), (w, h), float(rng.uniform(0, 90))))
        cv2.fillPoly(mask, [np.round(box).astype(np.int32)], 1)
    elif kind == "polygon":
        n = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = size / 2 * rng.uniform(0.45, 1.0, n)
        pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    else:
        raise ValueError(f"kind must be one of {SHAPE_KINDS}, got {kind!r}")
    return mask.astype(bool)


def make_scene(
    rng: np.random.Generator,
    height: int,
    width: int,
    n_shapes: int | None = None,
    min_visible: float = 0.6,
    min_area_fraction: float = 0.004,
    min_color_distance: float = MIN_COLOR_DISTANCE,
) -> Scene:
    """A random scene of ``n_shapes`` (default 2-5) textured shapes on a textured background.

    Shapes are drawn in order, later ones occluding earlier ones; a shape is kept only if at least
    ``min_visible`` of it stays visible and its visible area is at least ``min_area_fraction`` of the
    image, so every returned mask is a clear target. Colors of shapes differ from the background and
    from each other by at least ``min_color_distance`` (RGB L2, 0-255; the best of 50 draws if none is that
    far), so each shape is a well-defined object.
    """
    if height < 16 or width < 16:
        raise ValueError(f"height and width must be >= 16 pixels, got {height}x{width}")
    n_shapes = int(rng.integers(2, 6)) if n_shapes is None else int(n_shapes)
    bg_color = rng.uniform(30, 225, 3).astype(np.float32)
    image = textured_fill(rng, height, width, bg_color, float(rng.uniform(10, 30)))
    colors = [bg_color]
    masks: list[np.ndarray] = []
    kinds: list[str] = []
    short = min(height, width)
    for _ in range(n_shapes * 4):  # attempts; shapes that end up mostly hidden are dropped
        if len(masks) == n_shapes:
            break
        kind = SHAPE_KINDS[int(rng.integers(len(SHAPE_KINDS)))]
        size = short * rng.uniform(0.2, 0.6)
        mask = shape_mask(rng, height, width, kind, size)
        area = int(mask.sum())
        if area < min_area_fraction * height * width / min_visible:
            continue
        visible_after = [m & ~mask for m in masks]
        if any(v.sum() < min_visible * m.sum() for v, m in zip(visible_after, masks)):
            continue  # would hide too much of an earlier shape
        color = random_color(rng, colors, min_color_distance)
        fill = textured_fill(rng, height, width, color, float(rng.uniform(8, 25)))
        image[mask] = fill[mask]
        masks = visible_after + [mask]
        colors.append(color)
        kinds.append(kind)
    image = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    stacked = np.stack(masks) if masks else np.zeros((0, height, width), bool)
    return Scene(image=image, masks=stacked, kinds=kinds, colors=np.stack(colors).astype(np.float32))


def interior_point(mask: np.ndarray, rng: np.random.Generator | None = None) -> tuple[float, float]:
    """(x, y) pixel of a point deep inside ``mask``: the farthest from its border, or (with ``rng``)
    a random pixel among those at least half as far. Raises ``ValueError`` on an empty mask."""
    if not mask.any():
        raise ValueError("mask is empty: no interior point")
    dist = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    if rng is None:
        y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    else:
        ys, xs = np.nonzero(dist >= 0.5 * dist.max())
        i = int(rng.integers(len(ys)))
        y, x = ys[i], xs[i]
    return float(x), float(y)


def mask_box(mask: np.ndarray) -> np.ndarray:
    """(4,) float32 XYXY box of a bool mask, in pixel-edge coordinates (x1 = last column + 1)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise ValueError("mask is empty: no box")
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
