"""The ``classic`` engine on real GrabCut photos: clicks, boxes, previous masks, candidates, degenerate images."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import load_grabcut_sample
from maskwright import Predictor
from maskwright.engines import Embedding
from maskwright.engines.classic import ClassicEngine
from maskwright.engines.transforms import mask_to_lowres
from maskwright.masks import iou

# photos whose object a single click separates well; chosen by name so the tests do not depend on order
EASY = ("flower", "sheep", "music")


def interior_point(mask: np.ndarray) -> tuple[float, float]:
    """(x, y) of the pixel of ``mask`` farthest from its border."""
    dist = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(np.argmax(dist), dist.shape)
    return float(x), float(y)


@pytest.fixture(scope="module")
def easy(grabcut):
    pairs = [p for p in grabcut if p[0].stem in EASY] or grabcut[:1]
    rgb, gt, ignore = load_grabcut_sample(pairs[0])
    predictor = Predictor("classic")
    predictor.set_image(rgb)
    return predictor, gt, ignore


@pytest.fixture(scope="module")
def first_click(easy):
    predictor, gt, _ = easy
    x, y = interior_point(gt)
    masks, scores, logits = predictor.predict([[x, y]], [1], multimask_output=True)
    return (x, y), masks, scores, logits


def test_positive_click_gives_the_object(easy, first_click):
    _, gt, ignore = easy
    (x, y), masks, scores, logits = first_click
    best = int(np.argmax(scores))
    assert masks[best][int(y), int(x)]
    assert iou(masks[best], gt, ignore) > 0.85
    assert logits.shape == (3, 256, 256) and np.all((scores >= 0) & (scores <= 1))


def test_candidates_differ(first_click):
    _, masks, _, _ = first_click
    for i in range(3):
        for j in range(i + 1, 3):
            assert (masks[i] != masks[j]).any(), f"candidates {i} and {j} are identical"


def test_negative_click_removes_wrong_region_and_keeps_the_rest(easy):
    predictor, gt, ignore = easy
    h, w = gt.shape
    # a previous mask that wrongly includes a blob of background far from the object
    dist_to_object = cv2.distanceTransform((~gt).astype(np.uint8), cv2.DIST_L2, 5)
    by, bx = np.unravel_index(np.argmax(dist_to_object), gt.shape)
    radius = int(max(6, min(dist_to_object[by, bx] * 0.6, 0.12 * min(h, w))))
    blob = np.zeros((h, w), np.uint8)
    cv2.circle(blob, (int(bx), int(by)), radius, 1, -1)
    previous = gt | blob.astype(bool)
    x, y = interior_point(gt)
    masks, _, _ = predictor.predict(
        [[x, y], [bx, by]], [1, 0], mask_input=mask_to_lowres(previous), multimask_output=False
    )
    assert not masks[0][by, bx]
    assert (masks[0] & blob.astype(bool)).sum() < 0.1 * blob.sum()
    assert iou(masks[0], gt, ignore) > 0.85


def test_positive_click_adds_missed_part_building_on_previous_mask(easy):
    predictor, gt, ignore = easy
    # previous mask: the object minus its right half
    ys, xs = np.nonzero(gt)
    cut = int(np.median(xs))
    previous = gt.copy()
    previous[:, cut:] = False
    missed = gt & ~previous
    mx, my = interior_point(missed)
    x, y = interior_point(previous)
    masks, _, _ = predictor.predict(
        [[x, y], [mx, my]], [1, 1], mask_input=mask_to_lowres(previous), multimask_output=False
    )
    assert masks[0][int(my), int(mx)]
    assert iou(masks[0], gt, ignore) > iou(previous, gt, ignore) + 0.1
    # what the previous mask had right stays
    assert (masks[0] & previous).sum() > 0.95 * previous.sum()


def test_box_prompts(easy):
    predictor, gt, ignore = easy
    ys, xs = np.nonzero(gt)
    box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    masks, scores, _ = predictor.predict(box=box, multimask_output=False)
    assert iou(masks[0], gt, ignore) > 0.8
    # nothing outside the box
    outside = np.ones_like(gt)
    outside[box[1] : box[3], box[0] : box[2]] = False
    assert not (masks[0] & outside).any()
    # box + clicks: the positive click is inside the mask, the negative one outside
    x, y = interior_point(gt)
    nx, ny = interior_point(~gt[box[1] : box[3], box[0] : box[2]])
    nx, ny = nx + box[0], ny + box[1]
    masks, _, _ = predictor.predict([[x, y], [nx, ny]], [1, 0], box=box, multimask_output=False)
    assert masks[0][int(y), int(x)] and not masks[0][int(ny), int(nx)]
    assert iou(masks[0], gt, ignore) > 0.8


def test_mask_input_alone_reproduces_the_previous_mask(easy, first_click):
    predictor, gt, ignore = easy
    _, masks, scores, logits = first_click
    best = int(np.argmax(scores))
    again, _, _ = predictor.predict(mask_input=logits[best : best + 1], multimask_output=False)
    assert iou(again[0], masks[best]) > 0.95


def test_embedding_round_trip_gives_identical_masks(grabcut):
    rgb, gt, _ = load_grabcut_sample(grabcut[-1])
    engine = ClassicEngine()
    emb = engine.embed(rgb)
    restored = Embedding.from_bytes(emb.to_bytes())
    assert restored.nbytes == emb.nbytes and restored.nbytes < 4_000_000
    p1, p2 = Predictor(engine), Predictor(engine)
    p1.set_embedding(emb)
    p2.set_embedding(restored)
    x, y = interior_point(gt)
    a = p1.predict([[x, y]], [1], multimask_output=False)
    b = p2.predict([[x, y]], [1], multimask_output=False)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[2], b[2])


@pytest.mark.parametrize(
    "image",
    [
        np.array([[[0, 0, 0], [255, 255, 255]], [[255, 0, 0], [0, 0, 255]]], np.uint8),  # 2x2
        np.full((60, 80, 3), 128, np.uint8),  # constant colour
        np.random.default_rng(0).integers(0, 256, (10, 2000, 3), dtype=np.uint8),  # very elongated
    ],
    ids=["2x2", "constant", "10x2000"],
)
def test_degenerate_images_do_not_crash(image):
    predictor = Predictor("classic")
    predictor.set_image(image)
    h, w = image.shape[:2]
    masks, scores, logits = predictor.predict([[w // 2, h // 2]], [1], multimask_output=True)
    assert masks.shape == (3, h, w) and masks[:, h // 2, w // 2].all()
    assert np.all(np.isfinite(scores)) and np.all(np.isfinite(logits))
    masks, _, _ = predictor.predict(
        [[w // 2, h // 2], [0, 0]], [1, 0], mask_input=logits[:1], box=[0, 0, w, h], multimask_output=False
    )
    assert masks.shape == (1, h, w) and masks[0, h // 2, w // 2] and not masks[0, 0, 0]
    masks, _, _ = predictor.predict([[0, 0]], [0], multimask_output=False)  # only a negative click
    assert not masks.any()
