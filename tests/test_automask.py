"""Segment everything: array helpers, the generator on both strategies, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import load_grabcut_sample
from maskwright.automask import AutoMaskGenerator
from maskwright.automask.amg import (
    box_nms,
    build_point_grid,
    generate_crop_boxes,
    is_box_near_crop_edge,
    mask_aware_nms,
    masks_to_boxes,
    stability_score,
)
from maskwright.engines.base import Embedding, Engine, MaskPrediction, Prompt
from maskwright.engines.transforms import mask_to_lowres
from maskwright.imageio import write_png
from maskwright.masks import bbox_xywh, iou, polygons_to_mask, rle_decode

RECT_COLOURS = [(220, 40, 40), (40, 200, 60), (50, 80, 230)]


def rect_scene(h: int = 120, w: int = 160) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """An RGB image with three flat rectangles on grey, its label map (0 = background) and XYXY boxes."""
    boxes = [[10, 12, 60, 50], [80, 20, 150, 70], [30, 75, 100, 110]]
    rgb = np.full((h, w, 3), 128, np.uint8)
    labels = np.zeros((h, w), np.int32)
    for k, ((x0, y0, x1, y1), colour) in enumerate(zip(boxes, RECT_COLOURS), start=1):
        rgb[y0:y1, x0:x1] = colour
        labels[y0:y1, x0:x1] = k
    return rgb, labels, boxes


class RectEngine(Engine):
    """A tiny deterministic engine: a click inside a flat rectangle returns that rectangle.

    Candidates per click: the rectangle (score 0.95), the rectangle again (0.9, a duplicate for NMS to
    remove) and the whole image (0.3). A background click returns the background (0.5).
    """

    name = "rect-test"
    version = "1"
    supports_batch = True

    def __init__(self) -> None:
        self.batch_calls = 0

    def embed(self, image: np.ndarray) -> Embedding:
        grey = np.all(image == 128, axis=2)
        from scipy import ndimage

        labels, _ = ndimage.label(~grey)
        return Embedding(self.name, self.version, image.shape[:2], {"labels": labels.astype(np.int32)})

    def decode(self, embedding: Embedding, prompt: Prompt, multimask_output: bool) -> MaskPrediction:
        labels = embedding.arrays["labels"]
        x, y = prompt.point_coords[0]
        k = labels[int(y), int(x)]
        own = labels == k
        whole = np.ones_like(own)
        masks = np.stack([own, own, whole])
        scores = np.array([0.95, 0.9, 0.3] if k else [0.5, 0.5, 0.3], np.float32)
        logits = np.concatenate([mask_to_lowres(m) for m in masks])
        return MaskPrediction(masks, scores, logits)

    def decode_batch(self, embedding, prompts, multimask_output):
        self.batch_calls += 1
        return [self.decode(embedding, p, multimask_output) for p in prompts]


def check_records(records: list[dict], h: int, w: int) -> None:
    for r in records:
        assert set(r) == {
            "segmentation",
            "area",
            "bbox",
            "predicted_iou",
            "point_coords",
            "stability_score",
            "crop_box",
        }
        m = r["segmentation"]
        assert m.shape == (h, w) and m.dtype == bool
        assert isinstance(r["area"], int) and r["area"] == int(m.sum()) > 0
        assert all(isinstance(v, int) for v in r["bbox"])
        x, y, bw, bh = r["bbox"]
        assert x >= 0 and y >= 0 and x + bw <= w and y + bh <= h
        assert r["bbox"] == bbox_xywh(m)
        assert 0.0 <= r["predicted_iou"] <= 1.0 and 0.0 <= r["stability_score"] <= 1.0
        (px, py), *_ = r["point_coords"]
        assert 0 <= px < w and 0 <= py < h
        cx, cy, cw, ch = r["crop_box"]
        assert cx >= 0 and cy >= 0 and cx + cw <= w and cy + ch <= h


# --- array helpers ----------------------------------------------------------------------------------
def test_point_grid_is_cell_centres_x_fastest():
    np.testing.assert_allclose(build_point_grid(2), [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])
    assert build_point_grid(32).shape == (1024, 2)
    with pytest.raises(ValueError, match="n_per_side"):
        build_point_grid(0)


def test_crop_boxes_by_hand():
    boxes, layers = generate_crop_boxes((100, 200), 1, 0.25)
    # overlap = int(0.25 * 100 * 2 / 2) = 25; crop 113 x 63; starts x 0, 88 and y 0, 38.
    assert boxes == [[0, 0, 200, 100], [0, 0, 113, 63], [88, 0, 200, 63], [0, 38, 113, 100], [88, 38, 200, 100]]
    assert layers == [0, 1, 1, 1, 1]
    boxes2, layers2 = generate_crop_boxes((300, 300), 2, 512 / 1500)
    assert len(boxes2) == 1 + 4 + 16 and layers2.count(2) == 16
    assert all(0 <= x0 < x1 <= 300 and 0 <= y0 < y1 <= 300 for x0, y0, x1, y1 in boxes2)


def test_stability_score_of_hand_made_logits():
    logits = np.array([[[3.0, 2.0, 0.5, -0.5], [1.5, 0.0, -2.0, -3.0]]], np.float32)
    # > +1: 3, 2, 1.5 -> 3 pixels; > -1: 3, 2, 0.5, -0.5, 1.5, 0 -> 6 pixels.
    np.testing.assert_allclose(stability_score(logits, 0.0, 1.0), [0.5])
    np.testing.assert_allclose(stability_score(np.full((1, 2, 2), -5.0), 0.0, 1.0), [1.0])


def test_box_nms_removes_a_duplicate():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 10]])
    keep = box_nms(boxes, np.array([0.8, 0.9, 0.7, 0.6]), 0.7)
    assert keep.tolist() == [1, 2]


def test_mask_aware_nms_keeps_distinct_masks_that_share_a_box():
    masks = np.zeros((4, 20, 20), bool)
    masks[0, 2:12, 2:12] = True  # a square
    masks[1, 2:12, 2:12] = True  # the same square with one pixel more: a duplicate
    masks[1, 12, 5] = True
    masks[2, 2:12, 2:12] = True  # an L-shaped part of it with the same box: mask IoU 0.36, distinct
    masks[2, 4:12, 4:12] = False
    masks[3, 14:18, 14:18] = True  # elsewhere
    boxes = masks_to_boxes(masks)
    scores = np.array([0.8, 0.9, 0.7, 0.6])
    assert mask_aware_nms(masks, boxes, scores, 0.7, 0.75).tolist() == [1, 2, 3]
    # With mask threshold 0 it is plain box NMS (the L shape goes too).
    assert mask_aware_nms(masks, boxes, scores, 0.7, 0.0).tolist() == box_nms(boxes, scores, 0.7).tolist()
    with pytest.raises(ValueError, match="must match"):
        mask_aware_nms(masks, boxes[:2], scores, 0.7, 0.75)


def test_masks_to_boxes_exclusive_ends():
    masks = np.zeros((2, 10, 12), bool)
    masks[0, 2:5, 3:9] = True
    np.testing.assert_array_equal(masks_to_boxes(masks), [[3, 2, 9, 5], [0, 0, 0, 0]])


def test_box_near_inner_crop_edge_only():
    crop = [0, 0, 100, 100]
    image = [0, 0, 200, 200]
    boxes = np.array([[40, 40, 99, 60], [0, 40, 30, 60], [40, 40, 60, 60]])
    assert is_box_near_crop_edge(boxes, crop, image).tolist() == [True, False, False]
    # In a crop at (100, 0) the box coordinates are crop-relative: x0 = 0 is the inner edge x = 100.
    assert is_box_near_crop_edge(np.array([[0, 10, 20, 20]]), [100, 0, 200, 100], image).tolist() == [True]


# --- generator: grid strategy ------------------------------------------------------------------------
def test_grid_one_mask_per_object_in_batches():
    rgb, labels, boxes = rect_scene()
    engine = RectEngine()
    gen = AutoMaskGenerator(engine, points_per_side=12, points_per_batch=50)
    records = gen.generate(rgb)
    assert engine.batch_calls == 3  # 144 points in batches of 50
    check_records(records, *rgb.shape[:2])
    assert len(records) == 3  # each rectangle once: duplicates, background and whole image gone
    for k in range(1, 4):
        assert max(iou(r["segmentation"], labels == k) for r in records) == 1.0
    assert all(r["crop_box"] == [0, 0, 160, 120] for r in records)
    assert gen.last_stats["candidates"] == 144 * 3 and gen.last_stats["output"] == 3


@pytest.mark.parametrize("mode", ["coco_rle", "polygons"])
def test_output_modes_decode_back(mode):
    rgb, labels, _ = rect_scene()
    binary = AutoMaskGenerator(RectEngine(), points_per_side=8).generate(rgb)
    records = AutoMaskGenerator(RectEngine(), points_per_side=8, output_mode=mode).generate(rgb)
    assert len(records) == len(binary) == 3
    for r, b in zip(records, binary):
        seg = r["segmentation"]
        if mode == "coco_rle":
            assert seg["size"] == [120, 160] and isinstance(seg["counts"], str)
            np.testing.assert_array_equal(rle_decode(seg), b["segmentation"])
        else:
            np.testing.assert_array_equal(polygons_to_mask(seg, 120, 160), b["segmentation"])
        json.dumps(seg)


def test_crops_drop_inner_edge_masks_and_prefer_small_crops():
    rgb, labels, _ = rect_scene()
    gen = AutoMaskGenerator(RectEngine(), points_per_side=8, crop_n_layers=1, crop_overlap_ratio=0.3)
    records = gen.generate(rgb)
    check_records(records, *rgb.shape[:2])
    assert len(records) == 3
    # Rectangle 1 lies inside the top-left crop, which wins over the full image; rectangle 2 crosses the
    # inner edges of every crop it is in, so only the full-image mask of it survives.
    by_label = {int(np.argmax(np.bincount(labels[r["segmentation"]]))): r for r in records}
    assert by_label[1]["crop_box"] != [0, 0, 160, 120]
    assert by_label[2]["crop_box"] == [0, 0, 160, 120]
    assert iou(by_label[2]["segmentation"], labels == 2) == 1.0
    assert gen.last_stats["after_edge_filter"] < gen.last_stats["after_thresholds"]


def test_small_islands_and_holes_removed():
    rgb, labels, _ = rect_scene()
    rgb[30, 30] = 128  # a one-pixel hole in rectangle 1
    rgb[5:7, 5:7] = RECT_COLOURS[0]  # a separate speck of rectangle 1's colour
    records = AutoMaskGenerator(RectEngine(), points_per_side=16, min_mask_region_area=20).generate(rgb)
    check_records(records, *rgb.shape[:2])
    assert len(records) == 3
    assert max(iou(r["segmentation"], labels == 1) for r in records) == 1.0


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match="output_mode"):
        AutoMaskGenerator(RectEngine(), output_mode="svg")
    with pytest.raises(ValueError, match="pred_iou_thresh"):
        AutoMaskGenerator(RectEngine(), pred_iou_thresh=1.5)
    with pytest.raises(ValueError, match="predictor_or_engine"):
        AutoMaskGenerator(42)
    with pytest.raises(ValueError, match="image"):
        AutoMaskGenerator(RectEngine()).generate(np.zeros((10, 10), np.uint8))


def test_grid_path_with_classic_engine():
    rgb, labels, _ = rect_scene()
    # Classic's logits are soft (stability ~0.9 on flat rectangles), so the thresholds are relaxed here.
    gen = AutoMaskGenerator(
        "classic", strategy="grid", points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.5
    )
    records = gen.generate(rgb)
    assert gen.strategy == "grid" and gen.last_stats["candidates"] == 27
    check_records(records, *rgb.shape[:2])
    for k in range(1, 4):  # a grid point falls in each rectangle
        assert max(iou(r["segmentation"], labels == k) for r in records) > 0.9


# --- generator: region strategy (classic) -----------------------------------------------------------
def test_classic_uses_regions_and_finds_objects():
    rng = np.random.default_rng(0)
    rgb, labels, _ = rect_scene(180, 240)
    noisy = np.clip(rgb.astype(np.int16) + rng.integers(-12, 13, rgb.shape), 0, 255).astype(np.uint8)
    gen = AutoMaskGenerator("classic")
    assert gen.strategy == "regions"
    records = gen.generate(noisy)
    check_records(records, 180, 240)
    for k in range(1, 4):
        assert max(iou(r["segmentation"], labels == k) for r in records) > 0.9


def test_classic_regions_do_not_depend_on_the_thread_count():
    """The graph cuts run on a thread pool sized by OpenCV's thread setting; the masks must not change."""
    import cv2

    rng = np.random.default_rng(3)
    rgb, _, _ = rect_scene(180, 240)
    noisy = np.clip(rgb.astype(np.int16) + rng.integers(-25, 26, rgb.shape), 0, 255).astype(np.uint8)
    before = cv2.getNumThreads()
    runs = []
    try:
        for threads in (1, 2, 1):
            cv2.setNumThreads(threads)
            runs.append(AutoMaskGenerator("classic").generate(noisy))
    finally:
        cv2.setNumThreads(before)
    assert len(runs[0]) > 0
    for other in runs[1:]:
        assert len(other) == len(runs[0])
        for a, b in zip(runs[0], other):
            assert np.array_equal(a["segmentation"], b["segmentation"])
            assert a["predicted_iou"] == b["predicted_iou"] and a["stability_score"] == b["stability_score"]


def test_graph_cut_refine_snaps_a_box_to_the_object():
    from maskwright.automask.regions import graph_cut_refine

    rng = np.random.default_rng(1)
    rgb, labels, _ = rect_scene(120, 160)
    noisy = np.clip(rgb.astype(np.int16) + rng.integers(-10, 11, rgb.shape), 0, 255).astype(np.uint8)
    obj = labels == 1
    ys, xs = np.nonzero(obj)
    cut, stab = graph_cut_refine(noisy[..., ::-1].copy(), np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]))
    assert iou(cut, obj) > 0.9 and 0.9 <= stab <= 1.0
    whole, stab = graph_cut_refine(noisy, np.array([0, 0, 160, 120]))  # no background left: nothing to cut
    assert not whole.any() and stab == 0.0


def test_graph_cut_from_mask_grows_a_partial_seed_to_the_object():
    from maskwright.automask.regions import graph_cut_from_mask

    rng = np.random.default_rng(2)
    rgb, labels, _ = rect_scene(120, 160)
    noisy = np.clip(rgb.astype(np.int16) + rng.integers(-10, 11, rgb.shape), 0, 255).astype(np.uint8)
    obj = labels == 2
    seed = np.zeros_like(obj)
    seed[25:50, 85:120] = True  # the left half of rectangle 2 only
    cut, stab = graph_cut_from_mask(noisy[..., ::-1].copy(), seed, np.array([80, 20, 150, 70]))
    assert iou(seed, obj) < 0.5 and iou(cut, obj) > 0.9 and 0.9 <= stab <= 1.0


def test_regions_on_a_real_photo(grabcut):
    from scipy import ndimage

    rgb, gt, ignore = load_grabcut_sample(grabcut[0])
    records = AutoMaskGenerator("classic", output_mode="coco_rle").generate(rgb)
    assert 1 <= len(records) < 150
    masks = []
    for r in records:
        m = rle_decode(r["segmentation"])
        assert m.shape == rgb.shape[:2] and r["area"] == int(m.sum())
        assert r["bbox"] == bbox_xywh(m)
        # Clean without min_mask_region_area: no speck islands or pinholes (< 0.1 % of the image).
        for part in (m, ~m):
            sizes = np.bincount(ndimage.label(part, np.ones((3, 3)))[0].ravel())[1:]
            assert sizes.min() >= 0.001 * m.size
        masks.append(m)
    # No duplicated regions: masks sharing a box differ by their pixels.
    boxes = masks_to_boxes(np.stack(masks))
    for i in range(len(masks)):
        for j in range(i):
            assert box_nms(boxes[[i, j]], np.ones(2), 0.7).size == 2 or iou(masks[i], masks[j]) <= 0.75


# --- CLI ------------------------------------------------------------------------------------------
def test_cli_writes_coco_overlay_and_pngs(tmp_path):
    from maskwright.cli import app

    rgb, _, _ = rect_scene(180, 240)
    write_png(tmp_path / "scene.png", rgb)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["automask", str(tmp_path / "scene.png"), "--engine", "classic", "--out", str(out), "--format", "png"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "automask.json").read_text())
    assert doc["images"][0]["height"] == 180 and doc["annotations"]
    pngs = sorted((out / "masks").glob("*.png"))
    assert len(pngs) == len(doc["annotations"])
    assert (out / "overlay.png").stat().st_size > 0
    first = doc["annotations"][0]
    assert rle_decode(first["segmentation"]).sum() == first["area"]


def test_cli_bad_input_exits_2(tmp_path):
    from maskwright.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["automask", str(tmp_path / "missing.png"), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "not found" in result.output
    (tmp_path / "bad.png").write_bytes(b"not an image")
    result = runner.invoke(app, ["automask", str(tmp_path / "bad.png"), "--engine", "classic", "--format", "tif"])
    assert result.exit_code == 2 and "--format" in result.output
