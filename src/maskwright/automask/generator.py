"""``AutoMaskGenerator``: segment everything in an image, with the parameters of SAM's generator.

Two ways to propose masks, one set of filters:

* ``grid`` (any engine): a grid of single positive clicks per crop, three candidates per click, decoded
  in batches with ``engine.decode_batch``; stability comes from the low-res logits upsampled to the crop.
* ``regions`` (the weight-free ``classic`` family, where a click costs far too much to sample a grid):
  candidate regions from a hierarchy of merged superpixels (:mod:`maskwright.automask.regions`), with a
  predicted-IoU proxy and a stability proxy on the same ``[0, 1]`` scales.

Both feed the same pipeline: ``pred_iou_thresh`` and ``stability_score_thresh``, dropping masks that touch
an inner crop edge, box NMS within a crop (mask-aware when the strategy asks for it: same box *and*
same pixels), box NMS across crops preferring smaller crops, removal of small islands and holes, and
output as bool masks, COCO RLE or polygons.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from maskwright.automask.amg import (
    box_area,
    box_nms,
    build_all_layer_point_grids,
    generate_crop_boxes,
    is_box_near_crop_edge,
    mask_aware_nms,
    masks_to_boxes,
    stability_score,
    uncrop_boxes_xyxy,
    uncrop_points,
)
from maskwright.engines.base import LOWRES, Embedding, Engine, Prompt
from maskwright.engines.transforms import longest_side_shape

log = logging.getLogger(__name__)

OUTPUT_MODES = ("binary_mask", "coco_rle", "polygons")
STRATEGIES = ("auto", "grid", "regions")
#: engine families whose own everything-strategy is the region hierarchy
REGION_FAMILIES = ("classic",)


@dataclass
class Proposals:
    """Candidate masks of one crop, before filtering.

    ``masks(indices)`` builds ``(n, h, w)`` bool masks at the crop's size only for the candidates asked
    for, so strategies can score many candidates cheaply and rasterise only those that pass.
    """

    predicted_iou: np.ndarray  # (N,) float32 in [0, 1]
    stability: np.ndarray  # (N,) float32 in [0, 1]
    points: np.ndarray  # (N, 2) float32 XY in crop coordinates
    masks: Callable[[np.ndarray], np.ndarray]
    #: optional (N, F) features behind ``predicted_iou`` (kept for analysing the scores)
    features: np.ndarray | None = None
    #: when set, NMS within the crop drops a mask only if it duplicates a better one by box (IoU above
    #: ``box_nms_thresh``) *and* by pixels (mask IoU above this); None keeps SAM's plain box NMS
    nms_mask_iou: float | None = None

    def __len__(self) -> int:
        return len(self.predicted_iou)


@dataclass
class _MaskSet:
    """Kept masks in image coordinates (bool, full size) with their metadata."""

    masks: list[np.ndarray] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)  # XYXY exclusive
    predicted_iou: list[float] = field(default_factory=list)
    stability: list[float] = field(default_factory=list)
    points: list[np.ndarray] = field(default_factory=list)
    crop_boxes: list[list[int]] = field(default_factory=list)

    def extend(self, other: _MaskSet) -> None:
        for name in ("masks", "boxes", "predicted_iou", "stability", "points", "crop_boxes"):
            getattr(self, name).extend(getattr(other, name))

    def select(self, keep: np.ndarray) -> _MaskSet:
        out = _MaskSet()
        for name in ("masks", "boxes", "predicted_iou", "stability", "points", "crop_boxes"):
            values = getattr(self, name)
            setattr(out, name, [values[i] for i in keep])
        return out

    def __len__(self) -> int:
        return len(self.masks)


def lowres_logits_to_crop(logits: np.ndarray, crop_size: tuple[int, int]) -> np.ndarray:
    """One ``(256, 256)`` low-res logit map -> ``(h, w)`` logits over the crop (valid part, bilinear)."""
    h, w = crop_size
    vh, vw = longest_side_shape(h, w, LOWRES)
    return cv2.resize(logits[:vh, :vw], (w, h), interpolation=cv2.INTER_LINEAR)


class AutoMaskGenerator:
    """Generate masks for everything in an image (``SamAutomaticMaskGenerator`` semantics).

    Args:
        predictor_or_engine: a :class:`maskwright.Predictor`, an :class:`Engine`, an engine name, or None
            for the best engine available here.
        points_per_side: grid points per side of each crop (``grid`` strategy).
        points_per_batch: clicks decoded together in one ``decode_batch`` call.
        pred_iou_thresh: keep masks whose predicted IoU is above this (0 disables).
        stability_score_thresh: keep masks whose stability score is at least this (0 disables).
        stability_score_offset: half-width of the logit band of the stability score (``regions``: the
            band of merge levels, see :mod:`maskwright.automask.regions`).
        box_nms_thresh: box IoU above which the lower-scored of two masks of a crop is dropped.
        crop_n_layers: extra layers of zoomed crops (layer ``i`` has ``2**i x 2**i`` crops).
        crop_nms_thresh: box IoU for NMS across crops (masks of smaller crops win).
        crop_overlap_ratio: overlap of neighbouring crops, as a fraction of the shorter image side.
        crop_n_points_downscale_factor: layer ``i`` uses ``points_per_side / factor**i`` points per side.
        point_grids: explicit normalised XY grids per layer, instead of ``points_per_side``.
        min_mask_region_area: islands and holes smaller than this (pixels) are removed (0 disables).
        output_mode: ``binary_mask`` (bool HxW), ``coco_rle`` (COCO RLE dict) or ``polygons`` (parts with
            holes, see :func:`maskwright.masks.mask_to_polygons`).
        strategy: ``auto`` (regions for the classic family, grid otherwise), ``grid`` or ``regions``.
        mask_threshold: logit at which masks are cut (0 keeps the engine's own masks).
        progress: optional ``callback(done, total)`` called as work units finish (for progress bars).
    """

    def __init__(
        self,
        predictor_or_engine: Any = None,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        strategy: str = "auto",
        mask_threshold: float = 0.0,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        from maskwright.predictor import Predictor

        if (points_per_side is None) == (point_grids is None):
            raise ValueError("exactly one of points_per_side or point_grids must be given")
        if points_per_side is not None and int(points_per_side) < 1:
            raise ValueError(f"points_per_side must be >= 1, got {points_per_side}")
        if int(points_per_batch) < 1:
            raise ValueError(f"points_per_batch must be >= 1, got {points_per_batch}")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {', '.join(OUTPUT_MODES)}, got {output_mode!r}")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        for name, value in (
            ("pred_iou_thresh", pred_iou_thresh),
            ("stability_score_thresh", stability_score_thresh),
            ("box_nms_thresh", box_nms_thresh),
            ("crop_nms_thresh", crop_nms_thresh),
        ):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if stability_score_offset <= 0:
            raise ValueError(f"stability_score_offset must be > 0, got {stability_score_offset}")
        if min_mask_region_area < 0:
            raise ValueError(f"min_mask_region_area must be >= 0 pixels, got {min_mask_region_area}")

        if isinstance(predictor_or_engine, Predictor):
            self.predictor: Predictor = predictor_or_engine
        elif predictor_or_engine is None or isinstance(predictor_or_engine, (str, Engine)):
            self.predictor = Predictor(predictor_or_engine, cache_size=1)
        else:
            raise ValueError(
                "predictor_or_engine must be a Predictor, an Engine, an engine name or None, "
                f"got {type(predictor_or_engine).__name__}"
            )
        self.engine: Engine = self.predictor.engine

        if point_grids is not None:
            self.point_grids = [np.asarray(g, np.float64).reshape(-1, 2) for g in point_grids]
            if len(self.point_grids) != crop_n_layers + 1:
                raise ValueError(
                    f"point_grids must hold crop_n_layers + 1 = {crop_n_layers + 1} grids, got {len(point_grids)}"
                )
        else:
            self.point_grids = build_all_layer_point_grids(
                int(points_per_side), crop_n_layers, crop_n_points_downscale_factor
            )
        self.points_per_batch = int(points_per_batch)
        self.pred_iou_thresh = float(pred_iou_thresh)
        self.stability_score_thresh = float(stability_score_thresh)
        self.stability_score_offset = float(stability_score_offset)
        self.box_nms_thresh = float(box_nms_thresh)
        self.crop_n_layers = int(crop_n_layers)
        self.crop_nms_thresh = float(crop_nms_thresh)
        self.crop_overlap_ratio = float(crop_overlap_ratio)
        self.min_mask_region_area = int(min_mask_region_area)
        self.output_mode = output_mode
        self.mask_threshold = float(mask_threshold)
        self.strategy = self._resolve_strategy(strategy)
        self.progress = progress
        #: counts of the last ``generate`` call: candidates, after thresholds, after NMS, output
        self.last_stats: dict[str, int] = {}

    def _resolve_strategy(self, strategy: str) -> str:
        if strategy != "auto":
            return strategy
        family = self.engine.name
        try:
            from maskwright.engines.registry import get_spec

            family = get_spec(self.engine.name).family
        except ValueError:  # an engine built from a model directory, or a custom one: not registered
            pass
        return "regions" if family in REGION_FAMILIES or self.engine.name in REGION_FAMILIES else "grid"

    # --- public ----------------------------------------------------------------------------------
    def generate(self, image: np.ndarray) -> list[dict[str, Any]]:
        """Masks of everything in an HxWx3 uint8 RGB image.

        Returns:
            One record per mask: ``segmentation`` (per ``output_mode``), ``area`` (pixels), ``bbox``
            (XYWH, ints), ``predicted_iou``, ``point_coords`` (``[[x, y]]`` in image pixels),
            ``stability_score`` and ``crop_box`` (XYWH), sorted by decreasing area.
        """
        from maskwright.predictor import validate_image

        image = validate_image(image)
        h, w = image.shape[:2]
        crop_boxes, layer_idxs = generate_crop_boxes((h, w), self.crop_n_layers, self.crop_overlap_ratio)
        stats = {"candidates": 0, "after_thresholds": 0, "after_edge_filter": 0, "after_nms": 0}
        # Progress units: one per decoder batch (grid) or one per crop (regions).
        self._units_total = sum(self._units(layer) for layer in layer_idxs)
        self._units_done = 0
        kept = _MaskSet()
        for crop_box, layer in zip(crop_boxes, layer_idxs):
            kept.extend(self._process_crop(image, crop_box, layer, stats))
        if len(crop_boxes) > 1 and len(kept):
            # Across crops, prefer masks from smaller crops: they saw the object at a higher resolution.
            scores = 1.0 / box_area(np.asarray(kept.crop_boxes, np.float64))
            kept = kept.select(box_nms(np.asarray(kept.boxes), scores, self.crop_nms_thresh))
        stats["after_nms"] = len(kept)
        if self.min_mask_region_area > 0 and len(kept):
            kept = self._remove_small_regions(kept, self.min_mask_region_area, self.box_nms_thresh)
        records = self._records(kept)
        stats["output"] = len(records)
        self.last_stats = stats
        return records

    # --- steps -----------------------------------------------------------------------------------
    def _units(self, layer: int) -> int:
        if self.strategy == "regions":
            return 1
        return -(-len(self.point_grids[layer]) // self.points_per_batch)

    def _advance(self) -> None:
        self._units_done += 1
        if self.progress is not None:
            self.progress(self._units_done, self._units_total)

    def _crop_embedding(self, image: np.ndarray, crop_box: list[int]) -> Embedding:
        x0, y0, x1, y1 = crop_box
        h, w = image.shape[:2]
        if [x0, y0, x1, y1] == [0, 0, w, h]:
            self.predictor.set_image(image)  # uses (and fills) the predictor's embedding cache
            return self.predictor.get_image_embedding()
        return self.engine.embed(np.ascontiguousarray(image[y0:y1, x0:x1]))

    def _process_crop(self, image: np.ndarray, crop_box: list[int], layer: int, stats: dict) -> _MaskSet:
        x0, y0, x1, y1 = crop_box
        crop = np.ascontiguousarray(image[y0:y1, x0:x1])
        if self.strategy == "regions":
            from maskwright.automask.regions import propose_regions

            batches = [propose_regions(crop, stability_offset=self.stability_score_offset)]
        else:
            batches = self._grid_proposals(image, crop_box, layer)
        h, w = image.shape[:2]
        out = _MaskSet()
        nms_mask_iou: float | None = None
        for props in batches:
            self._advance()
            nms_mask_iou = props.nms_mask_iou
            stats["candidates"] += len(props)
            keep = np.ones(len(props), bool)
            if self.pred_iou_thresh > 0:
                keep &= props.predicted_iou > self.pred_iou_thresh
            if self.stability_score_thresh > 0:
                keep &= props.stability >= self.stability_score_thresh
            idx = np.flatnonzero(keep)
            if idx.size == 0:
                continue
            masks = props.masks(idx)
            nonempty = masks.reshape(len(masks), -1).any(axis=1)
            idx, masks = idx[nonempty], masks[nonempty]
            stats["after_thresholds"] += len(idx)
            boxes = masks_to_boxes(masks)
            inner = ~is_box_near_crop_edge(boxes, crop_box, [0, 0, w, h])
            idx, masks, boxes = idx[inner], masks[inner], boxes[inner]
            stats["after_edge_filter"] += len(idx)
            for j, m, b in zip(idx, masks, boxes):
                out.masks.append(m)  # crop frame for now: uncropped after NMS, to save memory
                out.boxes.append(uncrop_boxes_xyxy(b, crop_box))
                out.predicted_iou.append(float(props.predicted_iou[j]))
                out.stability.append(float(props.stability[j]))
                out.points.append(uncrop_points(props.points[j], crop_box))
                out.crop_boxes.append(list(crop_box))
        if len(out) and nms_mask_iou is not None:
            keep = mask_aware_nms(
                out.masks, np.asarray(out.boxes), np.asarray(out.predicted_iou), self.box_nms_thresh, nms_mask_iou
            )
            out = out.select(keep)
        elif len(out):
            out = out.select(box_nms(np.asarray(out.boxes), np.asarray(out.predicted_iou), self.box_nms_thresh))
        if [x0, y0, x1, y1] != [0, 0, w, h]:
            for k, m in enumerate(out.masks):
                full = np.zeros((h, w), bool)
                full[y0:y1, x0:x1] = m
                out.masks[k] = full
        return out

    def _grid_proposals(self, image: np.ndarray, crop_box: list[int], layer: int):
        """Decode the layer's point grid over one crop in batches; yields :class:`Proposals` per batch."""
        x0, y0, x1, y1 = crop_box
        crop_h, crop_w = y1 - y0, x1 - x0
        embedding = self._crop_embedding(image, crop_box)
        points = self.point_grids[layer] * np.array([[crop_w, crop_h]], np.float64)
        points = np.clip(points, 0, np.array([[crop_w - 1e-3, crop_h - 1e-3]])).astype(np.float32)
        for start in range(0, len(points), self.points_per_batch):
            batch = points[start : start + self.points_per_batch]
            prompts = [Prompt(point_coords=p[None], point_labels=np.ones(1, np.int32)) for p in batch]
            preds = self.engine.decode_batch(embedding, prompts, True)
            masks = np.concatenate([p.masks for p in preds]).astype(bool, copy=False)
            scores = np.concatenate([p.scores for p in preds]).astype(np.float32)
            logits = np.concatenate([p.logits for p in preds]).astype(np.float32, copy=False)
            per_point = [len(p.scores) for p in preds]
            batch_points = np.repeat(batch, per_point, axis=0)
            # Stability needs the logits at the crop's resolution; upsample only what passes the IoU test.
            upsampled: dict[int, np.ndarray] = {}
            stab = np.zeros(len(scores), np.float32)
            candidates = (
                np.flatnonzero(scores > self.pred_iou_thresh) if self.pred_iou_thresh > 0 else range(len(scores))
            )
            for j in candidates:
                up = lowres_logits_to_crop(logits[j], (crop_h, crop_w))
                stab[j] = stability_score(up[None], self.mask_threshold, self.stability_score_offset)[0]
                if self.mask_threshold != 0.0:
                    upsampled[j] = up > self.mask_threshold

            def select(indices: np.ndarray, masks=masks, upsampled=upsampled) -> np.ndarray:
                if not upsampled:
                    return masks[indices]
                return np.stack([upsampled.get(int(i), masks[i]) for i in indices])

            yield Proposals(scores, stab, batch_points, select)

    @staticmethod
    def _remove_small_regions(kept: _MaskSet, min_area: int, nms_thresh: float) -> _MaskSet:
        """Fill small holes and drop small islands; then NMS preferring masks that did not change."""
        from maskwright.masks.cleanup import remove_small_regions

        changed_flags = []
        for k, m in enumerate(kept.masks):
            m, changed_holes = remove_small_regions(m, min_area, "holes")
            m, changed_islands = remove_small_regions(m, min_area, "islands")
            kept.masks[k] = m
            changed_flags.append(changed_holes or changed_islands)
            kept.boxes[k] = masks_to_boxes(m[None])[0]
        nonempty = [k for k, m in enumerate(kept.masks) if m.any()]
        kept = kept.select(nonempty)
        unchanged = np.array([0.0 if changed_flags[k] else 1.0 for k in nonempty])
        return kept.select(box_nms(np.asarray(kept.boxes).reshape(-1, 4), unchanged, nms_thresh))

    def _records(self, kept: _MaskSet) -> list[dict[str, Any]]:
        from maskwright.masks import mask_to_polygons, rle_encode

        records = []
        for k in range(len(kept)):
            m = kept.masks[k]
            x0, y0, x1, y1 = (int(v) for v in kept.boxes[k])
            cx0, cy0, cx1, cy1 = kept.crop_boxes[k]
            if self.output_mode == "coco_rle":
                seg: Any = rle_encode(m)
            elif self.output_mode == "polygons":
                seg = mask_to_polygons(m)
            else:
                seg = m
            records.append(
                {
                    "segmentation": seg,
                    "area": int(np.count_nonzero(m)),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "predicted_iou": float(kept.predicted_iou[k]),
                    "point_coords": [[float(v) for v in kept.points[k]]],
                    "stability_score": float(kept.stability[k]),
                    "crop_box": [int(cx0), int(cy0), int(cx1 - cx0), int(cy1 - cy0)],
                }
            )
        records.sort(key=lambda r: -r["area"])
        return records
