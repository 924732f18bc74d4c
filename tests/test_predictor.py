import numpy as np
import pytest

from conftest import load_grabcut_sample
from maskwright import Predictor
from maskwright.engines import Embedding, UnknownEngineError
from maskwright.masks import iou


@pytest.fixture(scope="module")
def sample(grabcut):
    rgb, gt, ignore = load_grabcut_sample(grabcut[0])
    return rgb, gt, ignore


@pytest.fixture(scope="module")
def predictor(sample):
    p = Predictor("classic")
    p.set_image(sample[0])
    return p


def interior_point(mask: np.ndarray) -> tuple[float, float]:
    import cv2

    dist = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(np.argmax(dist), dist.shape)
    return float(x), float(y)


def test_shapes_and_dtypes(predictor, sample):
    rgb, gt, _ = sample
    h, w = rgb.shape[:2]
    masks, scores, logits = predictor.predict([interior_point(gt)], [1], multimask_output=True)
    assert masks.shape == (3, h, w) and masks.dtype == bool
    assert scores.shape == (3,) and scores.dtype == np.float32
    assert np.all((scores >= 0) & (scores <= 1))
    assert logits.shape == (3, 256, 256) and logits.dtype == np.float32
    masks, scores, logits = predictor.predict([interior_point(gt)], [1], multimask_output=False)
    assert masks.shape == (1, h, w) and scores.shape == (1,) and logits.shape == (1, 256, 256)


def test_positive_click_inside_object_covers_it(predictor, sample):
    _, gt, ignore = sample
    x, y = interior_point(gt)
    masks, scores, _ = predictor.predict([[x, y]], [1])
    best = masks[np.argmax(scores)]
    assert best[int(y), int(x)]
    assert iou(best, gt, ignore) > 0.5


def test_negative_click_removes_what_it_is_on(predictor, sample):
    _, gt, _ = sample
    x, y = interior_point(gt)
    masks, scores, logits = predictor.predict([[x, y]], [1])
    best = int(np.argmax(scores))
    wrong = masks[best] & ~gt
    if not wrong.any():  # make a wrong region on purpose: a box prompt includes background
        pytest.fail("the classic engine covered the object exactly; pick a harder sample")
    nx, ny = interior_point(wrong)
    masks2, _, _ = predictor.predict(
        [[x, y], [nx, ny]], [1, 0], mask_input=logits[best : best + 1], multimask_output=False
    )
    assert not masks2[0][int(ny), int(nx)]
    assert masks2[0][int(y), int(x)]


def test_box_prompt(predictor, sample):
    _, gt, ignore = sample
    ys, xs = np.nonzero(gt)
    box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    masks, scores, _ = predictor.predict(box=box, multimask_output=False)
    assert iou(masks[0], gt, ignore) > 0.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "empty prompt"),
        ({"point_coords": [[1, 2, 3]], "point_labels": [1]}, r"shape \(N, 2\)"),
        ({"point_coords": [[1, 2]], "point_labels": [1, 0]}, "point_labels"),
        ({"point_coords": [[1, 2]], "point_labels": [5]}, "1 \\(positive\\) or 0"),
        ({"point_coords": [[-1, 2]], "point_labels": [1]}, "outside the image"),
        ({"point_coords": [[1e6, 2]], "point_labels": [1]}, "outside the image"),
        ({"point_coords": [[1, 2]]}, "together"),
        ({"box": [10, 10, 5, 20]}, "x0 < x1"),
        ({"box": [1, 2, 3]}, "4 numbers"),
        ({"box": [0, 0, 1e5, 10]}, "outside the image"),
        ({"mask_input": np.zeros((1, 64, 64))}, "mask_input"),
    ],
)
def test_bad_prompts_raise_clear_errors(predictor, kwargs, match):
    with pytest.raises(ValueError, match=match):
        predictor.predict(**kwargs)


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((10, 10), np.uint8), r"\(H, W, 3\)"),
        (np.zeros((10, 10, 4), np.uint8), r"\(H, W, 3\)"),
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        ([[1, 2, 3]], "numpy array"),
    ],
)
def test_bad_images_raise(image, match):
    with pytest.raises(ValueError, match=match):
        Predictor("classic").set_image(image)


def test_predict_before_set_image():
    with pytest.raises(RuntimeError, match="set_image"):
        Predictor("classic").predict(point_coords=[[1, 1]], point_labels=[1])


def test_unknown_engine():
    with pytest.raises(UnknownEngineError, match="classic"):
        Predictor("no-such-engine")


def test_embedding_bytes_roundtrip_and_cache(sample):
    rgb = sample[0]
    p = Predictor("classic")
    p.set_image(rgb)
    emb = p.get_image_embedding()
    back = Embedding.from_bytes(emb.to_bytes())
    assert back.original_size == emb.original_size and back.meta == emb.meta
    for k, v in emb.arrays.items():
        assert np.array_equal(back.arrays[k], v)
    q = Predictor("classic")
    q.set_embedding(back)
    pt = [[rgb.shape[1] / 2, rgb.shape[0] / 2]]
    assert np.array_equal(p.predict(pt, [1])[0], q.predict(pt, [1])[0])
    p.set_image(rgb.copy())  # same content: served from the cache, same object
    assert p.get_image_embedding() is emb
    with pytest.raises(ValueError, match="not a serialised"):
        Embedding.from_bytes(b"garbage")
