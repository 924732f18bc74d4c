"""The real SAM path end to end with a SAM trained by this project (``tests/fixtures/tiny-sam``).

``Predictor(<fixture dir>)`` runs maskwright's own pre-processing (longest side -> 1024, normalisation,
bottom/right padding), prompt transforms, decoder (ONNX by default) and post-processing on fresh synthetic
scenes of non-square sizes. The model was trained on such scenes (``tools/train_tiny_sam.py``), so a click
or a box must recover the shape; a coordinate or padding bug anywhere on the path misplaces the prompt or
the mask and fails these bars (``test_coordinate_bug_is_caught`` checks that on purpose).

Status: the committed fixture's prompt path is wired by hand (``tools/tiny_sam_wiring.py``) and the rest
trained on a 2-core CPU by the trainer's default recipe, its click-matching threshold fitted on validation
scenes afterwards. On this module's scenes (``tools/tiny_sam_bars.py``: 32 shapes, colors >= 120 apart):
click IoU 0.90, box IoU 0.89, two clicks cover B 0.94, the negative click leaves 0.02 of B and A at 0.91 --
issue 4's bars hold, and on 19 of 20 other draws of such scenes too. Only the segment-everything recall
stays ``xfail``: the fixture's IoU head scores its good masks too low for SAM's default filters (it runs,
and reports XPASS once a fixture meets it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from maskwright import Predictor  # noqa: E402
from maskwright.engines import sam_common  # noqa: E402
from maskwright.masks import iou  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "tiny-sam"
sys.path.insert(0, str(REPO / "tools"))
from synthetic_shapes import interior_point, mask_box  # noqa: E402
from tiny_sam_bars import (  # noqa: E402
    IOU_BARS,
    NEGATIVE_BARS,
    SIZES,
    bar_scenes,
    box_ious,
    click_ious,
    iou_bars,
    negative_click_shares,
)

# The bars of issue 4 (click / box IoU >= 0.85, negative click, ONNX == torch) hold for the committed
# fixture. Segment-everything with SAM's quality filters needs a better IoU head than it has yet.
IOU_HEAD_TOO_WEAK = pytest.mark.xfail(
    reason="tiny-sam fixture: its IoU head scores good masks below SAM's filters (tests/fixtures/tiny-sam/README.md)",
    strict=False,
)

GOOD_PRECISION = 0.75  # share of mask pixels on shapes (session 8's fixture: 0.93 real path, 0.43 padding bug)


@pytest.fixture(scope="module")
def scenes():
    """Fresh scenes (tools/tiny_sam_bars.py: seed 2024; training draws from streams seeded by its --seed)."""
    return bar_scenes()


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    import os

    # The exported ONNX decoders go to a throwaway cache, not the user's.
    old = os.environ.get("MASKWRIGHT_CACHE")
    os.environ["MASKWRIGHT_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    try:
        yield Predictor(str(FIXTURE))
    finally:
        if old is None:
            os.environ.pop("MASKWRIGHT_CACHE", None)
        else:
            os.environ["MASKWRIGHT_CACHE"] = old


def test_fixture_is_small_and_in_hf_format():
    assert (FIXTURE / "config.json").is_file()
    weights = FIXTURE / "model.safetensors"
    assert weights.stat().st_size <= 5 * 1024 * 1024
    from transformers import SamConfig

    config = SamConfig.from_pretrained(FIXTURE)
    assert config.vision_config.image_size == 1024 and config.vision_config.patch_size == 16


def test_engine_runs_real_sam_path(predictor, scenes):
    assert predictor.engine.family == "sam"
    predictor.set_image(scenes[0].image)
    emb = predictor.get_image_embedding()
    width = predictor.engine.model.config.vision_config.output_channels
    assert emb.arrays["image_embeddings"].shape == (1, width, 64, 64)  # SAM's 64x64 embedding of 1024x1024
    masks, scores, logits = predictor.predict(np.array([interior_point(scenes[0].masks[0])]), np.array([1]))
    assert masks.shape == (3, *SIZES[0]) and scores.shape == (3,) and logits.shape == (3, 256, 256)


def shape_precision(predictor: Predictor, scenes) -> float:
    """Fraction of predicted mask pixels (all candidates of a click, and box masks) that lie on a shape."""
    on_shapes = predicted = 0
    for scene in scenes:
        predictor.set_image(scene.image)
        shapes = scene.masks.any(0)
        for gt in scene.masks:
            masks, _, _ = predictor.predict(np.array([interior_point(gt)]), np.array([1]))
            box_masks, _, _ = predictor.predict(box=mask_box(gt), multimask_output=False)
            for m in (*masks, *box_masks):
                on_shapes += int(m[shapes].sum())
                predicted += int(m.sum())
    return on_shapes / max(predicted, 1)


def test_masks_land_on_the_shapes(predictor, scenes, monkeypatch):
    """What the fixture does reliably: its masks cover the shapes' foreground. Dropping the crop of the
    padded region before resizing (a classic post-processing bug) shifts/stretches them off the shapes."""
    import cv2

    good = shape_precision(predictor, scenes)

    def no_crop(lowres, original_size):
        h, w = original_size
        return np.stack([cv2.resize(m, (w, h)) > 0 for m in lowres]), lowres

    monkeypatch.setattr(predictor.engine, "_postprocess", no_crop)
    bad = shape_precision(predictor, scenes)
    assert good >= GOOD_PRECISION > bad, f"precision on shapes {good:.3f} (real path) vs {bad:.3f} (padding bug)"


def assert_iou_bars(ious: list[float], scenes, what: str) -> None:
    bars = iou_bars(ious, scenes)
    detail = f"{what} IoU per shape: {np.round(ious, 2).tolist()}"
    assert bars["mean"] >= IOU_BARS["mean"], f"mean {bars['mean']:.3f}; {detail}"
    assert bars["size_mean"] >= IOU_BARS["size_mean"], f"one image size's mean {bars['size_mean']:.3f}; {detail}"
    assert bars["low_share"] <= IOU_BARS["low_share"], f"{bars['low_share']:.0%} below {IOU_BARS['low']}; {detail}"


def test_one_click_segments_the_shape(predictor, scenes):
    assert_iou_bars(click_ious(predictor, scenes), scenes, "click")


def test_box_segments_the_shape(predictor, scenes):
    assert_iou_bars(box_ious(predictor, scenes), scenes, "box")


def test_negative_click_removes_wrongly_included_shape(predictor, scenes):
    """Clicks on shapes A and B give both; a negative click on B leaves A alone."""
    covered_before, covered_after, kept = negative_click_shares(predictor, scenes)
    assert np.mean(covered_before) >= NEGATIVE_BARS[0], f"B not included by the two positive clicks: {covered_before}"
    assert np.mean(covered_after) <= NEGATIVE_BARS[1], f"B still included after the negative click: {covered_after}"
    assert np.mean(kept) >= NEGATIVE_BARS[2], f"A lost with B: IoU {np.round(kept, 2).tolist()}"


def test_onnx_decoder_matches_torch(predictor, scenes):
    engine = predictor.engine
    assert engine.decoder_backend == "onnx"
    prompts = []
    for scene in scenes[:2]:
        for gt in scene.masks:
            prompts.append((scene, dict(point_coords=np.array([interior_point(gt)]), point_labels=np.array([1]))))
            prompts.append((scene, dict(box=mask_box(gt), multimask_output=False)))
    results = {}
    try:
        for backend in ("onnx", "torch"):
            engine.set_decoder(backend)
            results[backend] = []
            for scene, kwargs in prompts:
                predictor.set_image(scene.image)
                results[backend].append(predictor.predict(**kwargs))
    finally:
        engine.set_decoder("onnx")
    for (m_onnx, s_onnx, _), (m_torch, s_torch, _) in zip(results["onnx"], results["torch"]):
        for a, b in zip(m_onnx, m_torch):
            assert iou(a, b) >= 0.99
        np.testing.assert_allclose(s_onnx, s_torch, atol=1e-3)


def test_coordinate_bug_is_caught(predictor, scenes, monkeypatch):
    """Sanity check of the bars above: scaling points by (1024 / W, 1024 / H), as if the image had been
    squashed to a square instead of resized and padded (a classic bug), must fail the click bars -- every
    one of them, not only by a hair."""
    good = iou_bars(click_ious(predictor, scenes), scenes)
    monkeypatch.setattr(predictor.engine, "_transform_coords", sam_common.transform_coords_sam2)
    bad = iou_bars(click_ious(predictor, scenes), scenes)
    assert good["pass"], good
    assert bad["mean"] < IOU_BARS["mean"] and bad["size_mean"] < IOU_BARS["size_mean"], bad
    assert bad["low_share"] > IOU_BARS["low_share"], bad


def grid_records(predictor, scene, **thresholds):
    from maskwright.automask import AutoMaskGenerator

    generator = AutoMaskGenerator(predictor, points_per_side=8, points_per_batch=16, **thresholds)
    assert generator.strategy == "grid"
    return generator.generate(scene.image), generator.last_stats


def test_segment_everything_grid_path_on_the_real_sam_engine(predictor, scenes):
    """SAM's own "everything" path through the real SAM engine: a point grid decoded in batches, the
    filters and box NMS, records in SAM's conventions. Thresholds are open so the records do not depend on
    how well the fixture is trained; the recall test below holds the fixture to quality."""
    scene = scenes[0]
    records, stats = grid_records(predictor, scene, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    assert stats["candidates"] == 8 * 8 * 3  # every grid point decoded, 3 masks each
    assert 0 < len(records) < stats["candidates"]  # NMS merged the duplicates of neighbouring points
    h, w = scene.masks.shape[1:]
    for r in records:
        x, y, bw, bh = r["bbox"]
        assert x >= 0 and y >= 0 and x + bw <= w and y + bh <= h
        assert r["area"] == int(r["segmentation"].sum()) > 0
        assert r["crop_box"] == [0, 0, w, h]
        assert 0.0 <= r["stability_score"] <= 1.0


@IOU_HEAD_TOO_WEAK
def test_segment_everything_grid_path_finds_the_shapes(predictor, scenes):
    """With SAM's quality filters on, the grid proposals must contain every shape of the scene."""
    scene = scenes[0]
    records, _ = grid_records(predictor, scene, pred_iou_thresh=0.7, stability_score_thresh=0.85)
    assert records, "no proposal passed the predicted-IoU and stability filters"
    assert all(r["predicted_iou"] >= 0.7 and r["stability_score"] >= 0.85 for r in records)
    best = [max(iou(r["segmentation"], gt) for r in records) for gt in scene.masks]
    assert min(best) >= 0.75, f"best IoU per shape {np.round(best, 2).tolist()}"
