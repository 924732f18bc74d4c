"""Array helpers for segment-everything: point grids, crop boxes, stability, box NMS, uncropping.

Conventions (as in segment-anything's ``utils/amg.py``): points are ``(x, y)``; boxes are XYXY in pixels
with *exclusive* ``x1, y1`` (a box ``[x0, y0, x1, y1]`` covers columns ``x0 .. x1 - 1``), so that
``x1 - x0`` is the width in pixels, as in :func:`maskwright.masks.bbox_xywh`; boxes handed out in records
are XYWH. Masks are bool ``(N, H, W)``. Everything is numpy (no torch, no torchvision).
"""

from __future__ import annotations

import math

import numpy as np


def build_point_grid(n_per_side: int) -> np.ndarray:
    """``(n_per_side**2, 2)`` XY points at the centres of an ``n x n`` grid of cells over ``[0, 1]^2``.

    Rows of the result run over x fastest (the first ``n`` points share the top row).
    """
    if int(n_per_side) < 1:
        raise ValueError(f"n_per_side must be >= 1, got {n_per_side}")
    n = int(n_per_side)
    offset = 1.0 / (2 * n)
    side = np.linspace(offset, 1.0 - offset, n)
    xs = np.tile(side[None, :], (n, 1))
    ys = np.tile(side[:, None], (1, n))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    """One normalised grid per crop layer ``0 .. n_layers``; layer ``i`` has ``n / scale**i`` points per side."""
    if scale_per_layer < 1:
        raise ValueError(f"crop_n_points_downscale_factor must be >= 1, got {scale_per_layer}")
    return [build_point_grid(max(1, int(n_per_side / (scale_per_layer**i)))) for i in range(n_layers + 1)]


def generate_crop_boxes(
    im_size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """Crop boxes (XYXY, exclusive ends) for every layer and the layer index of each.

    Layer 0 is the whole image; layer ``i >= 1`` tiles the image with ``2**i x 2**i`` crops that overlap
    by ``overlap_ratio`` of the shorter image side (scaled down with the crop size).

    Args:
        im_size: (H, W) of the image.
        n_layers: number of crop layers on top of the full image.
        overlap_ratio: overlap between neighbouring crops as a fraction of the shorter image side.
    """
    h, w = (int(v) for v in im_size)
    if n_layers < 0:
        raise ValueError(f"crop_n_layers must be >= 0, got {n_layers}")
    if not 0.0 <= overlap_ratio < 1.0:
        raise ValueError(f"crop_overlap_ratio must be in [0, 1), got {overlap_ratio}")
    boxes: list[list[int]] = [[0, 0, w, h]]
    layers = [0]
    short_side = min(h, w)
    for layer in range(1, n_layers + 1):
        n_per_side = 2**layer
        overlap = int(overlap_ratio * short_side * (2 / n_per_side))
        crop_w = math.ceil((overlap * (n_per_side - 1) + w) / n_per_side)
        crop_h = math.ceil((overlap * (n_per_side - 1) + h) / n_per_side)
        x_starts = [int((crop_w - overlap) * i) for i in range(n_per_side)]
        y_starts = [int((crop_h - overlap) * i) for i in range(n_per_side)]
        for y0 in y_starts:
            for x0 in x_starts:
                boxes.append([x0, y0, min(x0 + crop_w, w), min(y0 + crop_h, h)])
                layers.append(layer)
    return boxes, layers


def stability_score(logits: np.ndarray, mask_threshold: float, offset: float) -> np.ndarray:
    """SAM's stability score of each logit map: IoU of the masks thresholded at ``t + offset`` and ``t - offset``.

    The higher mask is contained in the lower one, so the IoU is a ratio of pixel counts.

    Args:
        logits: ``(N, H, W)`` float logits.
        mask_threshold: the logit value ``t`` at which masks are cut (0 for SAM).
        offset: the half-width of the threshold band.
    Returns:
        ``(N,)`` float32 in ``[0, 1]``; 1.0 for a map that is empty at both thresholds.
    """
    logits = np.asarray(logits)
    if logits.ndim != 3:
        raise ValueError(f"logits must have shape (N, H, W), got {logits.shape}")
    flat = logits.reshape(len(logits), -1)
    inter = np.count_nonzero(flat > (mask_threshold + offset), axis=1)
    union = np.count_nonzero(flat > (mask_threshold - offset), axis=1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0).astype(np.float32)


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight XYXY boxes (exclusive ends) of ``(N, H, W)`` bool masks as ``(N, 4)`` int64; zeros if empty."""
    masks = np.asarray(masks, bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape (N, H, W), got {masks.shape}")
    n, h, w = masks.shape
    if n == 0:
        return np.zeros((0, 4), np.int64)
    cols = masks.any(axis=1)  # (N, W)
    rows = masks.any(axis=2)  # (N, H)
    x0 = np.argmax(cols, axis=1)
    x1 = w - np.argmax(cols[:, ::-1], axis=1)
    y0 = np.argmax(rows, axis=1)
    y1 = h - np.argmax(rows[:, ::-1], axis=1)
    boxes = np.stack([x0, y0, x1, y1], axis=1).astype(np.int64)
    boxes[~cols.any(axis=1)] = 0
    return boxes


def box_xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """``(N, 4)`` XYXY -> XYWH (same dtype)."""
    boxes = np.asarray(boxes)
    out = boxes.copy()
    out[..., 2] = boxes[..., 2] - boxes[..., 0]
    out[..., 3] = boxes[..., 3] - boxes[..., 1]
    return out


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Areas of ``(N, 4)`` XYXY boxes."""
    boxes = np.asarray(boxes, np.float64)
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """``(N, M)`` IoU matrix of XYXY boxes; 0 where the union is empty."""
    a = np.asarray(boxes_a, np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def box_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression, as ``torchvision.ops.nms``.

    Args:
        boxes: ``(N, 4)`` XYXY.
        scores: ``(N,)``; higher is kept first (ties keep the earlier box).
        iou_threshold: a box is dropped when its IoU with a kept box is strictly above this.
    Returns:
        Indices of the kept boxes, by decreasing score.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(f"boxes ({len(boxes)}) and scores ({len(scores)}) must have the same length")
    order = np.argsort(-scores, kind="stable")
    ious = box_iou(boxes, boxes)
    suppressed = np.zeros(len(boxes), bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= ious[i] > iou_threshold
    return np.asarray(keep, np.int64)


def mask_aware_nms(
    masks: np.ndarray, boxes: np.ndarray, scores: np.ndarray, box_threshold: float, mask_threshold: float
) -> np.ndarray:
    """Greedy NMS that drops a mask only if it duplicates a kept one by box *and* by pixels.

    A mask is dropped when, for some kept higher-scored mask, the box IoU is strictly above
    ``box_threshold`` and the mask IoU is strictly above ``mask_threshold``. Box NMS alone also drops
    distinct masks that share a box (an object and the object plus a strip of background); with
    ``mask_threshold=0`` this is plain :func:`box_nms` (for masks that overlap at all).

    Args:
        masks: ``(N, H, W)`` bool (or a list of ``(H, W)`` bool arrays).
        boxes: ``(N, 4)`` XYXY.
        scores: ``(N,)``; higher is kept first (ties keep the earlier mask).
    Returns:
        Indices of the kept masks, by decreasing score.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if not (len(masks) == len(boxes) == len(scores)):
        raise ValueError(f"masks ({len(masks)}), boxes ({len(boxes)}) and scores ({len(scores)}) must match")
    order = np.argsort(-scores, kind="stable")
    ious = box_iou(boxes, boxes)
    areas = np.array([np.count_nonzero(m) for m in masks], np.float64)
    keep: list[int] = []
    for i in order:
        duplicate = False
        for k in keep:
            if ious[i, k] <= box_threshold:
                continue
            inter = np.count_nonzero(masks[i] & masks[k])
            union = areas[i] + areas[k] - inter
            if union > 0 and inter / union > mask_threshold:
                duplicate = True
                break
        if not duplicate:
            keep.append(i)
    return np.asarray(keep, np.int64)


def is_box_near_crop_edge(
    boxes: np.ndarray, crop_box: list[int], orig_box: list[int], atol: float = 20.0
) -> np.ndarray:
    """Which boxes (XYXY in crop coordinates) touch an edge of ``crop_box`` that is not an image edge.

    Args:
        boxes: ``(N, 4)`` XYXY in the crop's own coordinates.
        crop_box: XYXY of the crop in the image.
        orig_box: XYXY of the whole image, ``[0, 0, W, H]``.
        atol: distance in pixels under which a box counts as touching.
    Returns:
        ``(N,)`` bool.
    """
    crop = np.asarray(crop_box, np.float64)
    orig = np.asarray(orig_box, np.float64)
    image_boxes = uncrop_boxes_xyxy(np.asarray(boxes, np.float64).reshape(-1, 4), crop_box)
    near_crop = np.isclose(image_boxes, crop[None, :], atol=atol, rtol=0)
    near_image = np.isclose(image_boxes, orig[None, :], atol=atol, rtol=0)
    return np.any(near_crop & ~near_image, axis=1)


def uncrop_boxes_xyxy(boxes: np.ndarray, crop_box: list[int]) -> np.ndarray:
    """Shift ``(N, 4)`` XYXY boxes from crop to image coordinates."""
    x0, y0 = crop_box[0], crop_box[1]
    return np.asarray(boxes) + np.asarray([x0, y0, x0, y0], dtype=np.asarray(boxes).dtype)


def uncrop_points(points: np.ndarray, crop_box: list[int]) -> np.ndarray:
    """Shift ``(N, 2)`` XY points from crop to image coordinates."""
    return np.asarray(points) + np.asarray([crop_box[0], crop_box[1]], dtype=np.asarray(points).dtype)


def uncrop_masks(masks: np.ndarray, crop_box: list[int], orig_h: int, orig_w: int) -> np.ndarray:
    """Place ``(N, h, w)`` crop masks into ``(N, orig_h, orig_w)`` image masks (zeros outside the crop)."""
    x0, y0, x1, y1 = crop_box
    if x0 == 0 and y0 == 0 and x1 == orig_w and y1 == orig_h:
        return masks
    out = np.zeros((len(masks), orig_h, orig_w), bool)
    out[:, y0:y1, x0:x1] = masks
    return out
