"""The automatic clicker of the interactive-segmentation protocol (RITM / isegm style).

Each click goes to the interior point of the largest error region: the pixel farthest (exact Euclidean
distance) from the border of the false-negative or false-positive region, whichever is farther. Ignore
pixels never count as errors and a pixel is never clicked twice.

Points are ``(x, y)`` = ``(col, row)`` pixels of the original image, as :class:`maskwright.Predictor`
expects them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Click:
    """One simulated click: ``x`` = column, ``y`` = row; ``is_positive`` adds object, else removes it."""

    x: int
    y: int
    is_positive: bool

    @property
    def label(self) -> int:
        """1 for a positive click, 0 for a negative one (``point_labels`` convention)."""
        return int(self.is_positive)


def error_distance(error: np.ndarray) -> np.ndarray:
    """Exact L2 distance of every error pixel to the nearest non-error pixel (HxW float32).

    The map is padded by one zero pixel first, so the image border counts as outside the error region
    (an error touching the border is not "deep" there).
    """
    padded = np.pad(error.astype(np.uint8), 1, mode="constant")
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 0)
    return dist[1:-1, 1:-1]


def next_click(
    gt: np.ndarray,
    pred: np.ndarray,
    ignore: np.ndarray | None = None,
    not_clicked: np.ndarray | None = None,
) -> Click:
    """The click a careful annotator makes next, given the object and the current prediction.

    Args:
        gt: HxW bool object mask.
        pred: HxW bool current prediction (all False before the first click).
        ignore: HxW bool pixels that count neither as object nor as background, or None.
        not_clicked: HxW bool, False at pixels already clicked (they are never clicked again), or None.
    Returns:
        The click: positive iff the deepest false-negative pixel is strictly deeper than the deepest
        false-positive one (a tie gives a negative click), at the first deepest pixel in row-major order.
    """
    gt = np.asarray(gt, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    if gt.ndim != 2:
        raise ValueError(f"gt must be an HxW mask, got shape {gt.shape}")
    if pred.shape != gt.shape:
        raise ValueError(f"pred must have the shape of gt {gt.shape}, got {pred.shape}")
    keep = np.ones_like(gt) if ignore is None else ~np.asarray(ignore, dtype=bool)
    if keep.shape != gt.shape:
        raise ValueError(f"ignore must have the shape of gt {gt.shape}, got {keep.shape}")
    fn = gt & ~pred & keep
    fp = ~gt & pred & keep
    fn_dist = error_distance(fn)
    fp_dist = error_distance(fp)
    if not_clicked is not None:
        not_clicked = np.asarray(not_clicked, dtype=bool)
        if not_clicked.shape != gt.shape:
            raise ValueError(f"not_clicked must have the shape of gt {gt.shape}, got {not_clicked.shape}")
        fn_dist *= not_clicked
        fp_dist *= not_clicked
    is_positive = bool(fn_dist.max() > fp_dist.max())
    dist = fn_dist if is_positive else fp_dist
    row, col = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return Click(x=int(col), y=int(row), is_positive=is_positive)


class Clicker:
    """Stateful clicker for one sample: remembers its clicks so no pixel is clicked twice.

    >>> clicker = Clicker(gt, ignore)
    >>> click = clicker.make_next_click(pred)          # pred: HxW bool, all False at first
    >>> coords, labels = clicker.points()              # (N, 2) XY float32, (N,) int32
    """

    def __init__(self, gt: np.ndarray, ignore: np.ndarray | None = None) -> None:
        self.gt = np.asarray(gt, dtype=bool)
        if self.gt.ndim != 2:
            raise ValueError(f"gt must be an HxW mask, got shape {self.gt.shape}")
        self.ignore = None if ignore is None else np.asarray(ignore, dtype=bool)
        if self.ignore is not None and self.ignore.shape != self.gt.shape:
            raise ValueError(f"ignore must have the shape of gt {self.gt.shape}, got {self.ignore.shape}")
        self.not_clicked = np.ones(self.gt.shape, dtype=bool)
        self.clicks: list[Click] = []

    def make_next_click(self, pred: np.ndarray) -> Click:
        click = next_click(self.gt, pred, self.ignore, self.not_clicked)
        self.not_clicked[click.y, click.x] = False
        self.clicks.append(click)
        return click

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """All clicks so far as ``point_coords`` (N, 2) float32 XY and ``point_labels`` (N,) int32."""
        coords = np.array([[c.x, c.y] for c in self.clicks], dtype=np.float32).reshape(-1, 2)
        labels = np.array([c.label for c in self.clicks], dtype=np.int32)
        return coords, labels
