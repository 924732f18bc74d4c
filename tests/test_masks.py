import json

import numpy as np
import pytest

from conftest import load_grabcut_sample
from maskwright.masks import (
    area,
    bbox_xywh,
    clean_mask,
    coco_segmentation,
    iou,
    mask_to_polygons,
    polygons_to_mask,
    remove_small_regions,
    rle_area,
    rle_decode,
    rle_encode,
    rle_to_bbox,
    simplify_polygons,
)

# pycocotools' decode warns about numpy 2's copy keyword on every call (harmless; polygons rasterise through it)
PYCOCO_NUMPY2_WARNING = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def ring_and_blob() -> np.ndarray:
    """A square ring (one part with a hole) plus a separate disk-ish blob, and an island in the hole."""
    m = np.zeros((80, 120), bool)
    m[10:60, 10:60] = True
    m[25:45, 25:45] = False  # hole
    m[32:38, 32:38] = True  # island inside the hole
    m[20:50, 80:110] = True  # second part
    return m


def test_rle_roundtrip_exact_and_json():
    rng = np.random.default_rng(0)
    m = rng.random((37, 53)) > 0.6
    rle = rle_encode(m)
    assert isinstance(rle["counts"], str)
    json.dumps(rle)
    assert np.array_equal(rle_decode(rle), m)
    assert rle_area(rle) == m.sum() == area(m)


def test_rle_bbox_matches_mask_bbox():
    m = np.zeros((30, 40), bool)
    m[5:12, 7:20] = True
    assert bbox_xywh(m) == [7, 5, 13, 7]
    assert rle_to_bbox(rle_encode(m)) == [7.0, 5.0, 13.0, 7.0]


def test_uncompressed_rle_decodes():
    m = np.zeros((4, 3), bool)
    m[1:3, 1] = True  # column-major counts: 5 zeros, 2 ones, 5 zeros
    assert np.array_equal(rle_decode({"size": [4, 3], "counts": [5, 2, 5]}), m)


@PYCOCO_NUMPY2_WARNING
def test_polygons_keep_holes_and_parts():
    m = ring_and_blob()
    parts = mask_to_polygons(m)
    assert len(parts) == 3  # ring, blob, island
    assert sum(len(p["holes"]) for p in parts) == 1
    back = polygons_to_mask(parts, *m.shape)
    assert np.array_equal(back, m)
    assert not back[28, 28]  # the hole is still a hole
    assert back[35, 35]  # the island is still there


@PYCOCO_NUMPY2_WARNING
def test_polygons_exact_on_pixel_noise_and_agree_with_coco_tools():
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(3)
    for _ in range(40):  # single pixels, diagonal contacts, holes with islands: tolerance 0 is exact
        m = rng.random((23, 31)) > rng.uniform(0.3, 0.7)
        assert np.array_equal(polygons_to_mask(mask_to_polygons(m), *m.shape), m)
    one = np.zeros((5, 6), bool)
    one[2, 3] = True  # pixel (x=3, y=2) is centred at (3, 2): its outline runs on its edges
    xy = np.asarray(mask_to_polygons(one)[0]["exterior"]).reshape(-1, 2)
    assert np.allclose(xy.min(axis=0), [2.5, 1.5]) and np.allclose(xy.max(axis=0), [3.5, 2.5])
    solid = np.zeros((40, 50), bool)
    solid[5:30, 8:20] = True
    solid[12:35, 25:45] = True  # COCO tools rasterise our polygons back to the same pixels
    rle = mask_utils.merge(mask_utils.frPyObjects(coco_segmentation(mask_to_polygons(solid)), 40, 50))
    assert np.array_equal(mask_utils.decode(rle).astype(bool), solid)


@PYCOCO_NUMPY2_WARNING
def test_simplified_polygons_stay_close():
    m = ring_and_blob()
    parts = simplify_polygons(mask_to_polygons(m), tolerance=1.0)
    assert iou(polygons_to_mask(parts, *m.shape), m) > 0.97


@PYCOCO_NUMPY2_WARNING
def test_polygons_roundtrip_on_every_grabcut_mask(grabcut):
    worst = 1.0
    for pair in grabcut:
        _, gt, _ = load_grabcut_sample(pair)
        parts = mask_to_polygons(gt, tolerance=1.0)
        worst = min(worst, iou(polygons_to_mask(parts, *gt.shape), gt))
    assert worst >= 0.98


def test_remove_small_regions_islands_and_holes():
    m = np.zeros((50, 50), bool)
    m[5:40, 5:40] = True
    m[20:22, 20:22] = False  # 4-px hole
    m[45:47, 45:47] = True  # 4-px speck
    filled, changed = remove_small_regions(m, 10, "holes")
    assert changed and filled[20, 20]
    cleaned, changed = remove_small_regions(m, 10, "islands")
    assert changed and not cleaned[45, 45] and cleaned[10, 10]
    both = clean_mask(m, min_island_area=10, min_hole_area=10)
    assert both[21, 21] and not both[46, 46]


def test_remove_small_regions_keeps_largest_when_all_small():
    m = np.zeros((20, 20), bool)
    m[1:3, 1:3] = True
    m[10:13, 10:13] = True
    out, _ = remove_small_regions(m, 100, "islands")
    assert out.sum() == 9


def test_iou_ignores_pixels_and_checks_shapes():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[:5] = True
    b[:6] = True
    ignore = np.zeros((10, 10), bool)
    ignore[5] = True
    assert iou(a, b) == pytest.approx(50 / 60)
    assert iou(a, b, ignore) == 1.0
    with pytest.raises(ValueError, match="same shape"):
        iou(a, np.zeros((3, 3), bool))
