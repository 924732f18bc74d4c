"""Where a tiny SAM (``tools/train_tiny_sam.py``) fails: IoU by shape size, and which click candidate wins.

    .venv/bin/python tools/tiny_sam_breakdown.py tests/fixtures/tiny-sam [more model dirs ...]

Same scenes and prompts as the trainer's evaluation (seed 12345, through ``maskwright.Predictor``): one click
at the deepest interior point (the candidate of highest predicted IoU, and the best of the three) and the
exact box. Shapes are grouped by their extent in the 1024 frame (crop steps of 512 px see only shapes that
fit a crop); a line counts which candidate the IoU head ranks first and which one is truly best; the last
two lines give, by distance from the click (1024-frame px), the share of the target's pixels the chosen
click mask covers and the share of other pixels it wrongly covers: a mask that is a disk around the click
rather than the clicked shape shows as recall falling with distance. Then where masks spill: the share of
a click mask's pixels on *other* shapes (the chosen candidate, and the single-mask output), what two
clicks on neighbouring shapes A and B cover, and the mean cosine between different shapes' mean codes
(the embedding's first ``CODE`` channels, centred): a direction shared by all shapes makes clicks spill.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_shapes import interior_point, make_scene, mask_box  # noqa: E402
from tiny_sam_wiring import CODE  # noqa: E402
from train_tiny_sam import EVAL_SIZES, INPUT  # noqa: E402

from maskwright import Predictor  # noqa: E402
from maskwright.engines.sam_registry import load_sam_engine  # noqa: E402
from maskwright.engines.transforms import longest_side_shape  # noqa: E402
from maskwright.masks import iou  # noqa: E402

EXTENTS = ((0, 256), (256, 384), (384, 512), (512, INPUT + 1))
DISTANCES = (0, 32, 64, 128, 256, 2 * INPUT)


def coverage_by_distance(mask: np.ndarray, gt: np.ndarray, click: tuple[float, float]) -> np.ndarray:
    """(2, 2, len(DISTANCES) - 1) pixel counts by distance from ``click`` (XY, image px) in the 1024 frame:
    [[target pixels covered, target pixels], [other pixels covered, other pixels]]."""
    h, w = gt.shape
    yy, xx = np.mgrid[0:h, 0:w]
    ring = np.digitize(np.hypot(xx - click[0], yy - click[1]) * INPUT / max(h, w), DISTANCES) - 1
    n = len(DISTANCES) - 1
    out = np.zeros((2, 2, n), np.int64)
    for row, region in enumerate((gt, ~gt)):
        out[row, 0] = np.bincount(ring[region & mask], minlength=n)[:n]
        out[row, 1] = np.bincount(ring[region], minlength=n)[:n]
    return out


def shape_code_cosines(embedding: np.ndarray, masks: np.ndarray) -> list[float]:
    """Cosines between the mean centred codes (``CODE`` channels of a (C, 64, 64) embedding) of every pair
    of shapes, each averaged over the tokens the shape covers by >= 90 %."""
    import cv2

    vh, vw = longest_side_shape(*masks.shape[1:], 64)
    code = embedding[CODE, :vh, :vw]
    code = code - code.mean(0, keepdims=True)
    means = []
    for m in masks:
        inside = cv2.resize(m.astype(np.float32), (vw, vh), interpolation=cv2.INTER_AREA) >= 0.9
        if inside.any():
            v = code[:, inside].mean(1)
            means.append(v / np.linalg.norm(v))
    return [float(a @ b) for i, a in enumerate(means) for b in means[:i]]


def on_other_shapes(mask: np.ndarray, shapes: np.ndarray, *targets: np.ndarray) -> float:
    """Share of ``mask``'s pixels on ``shapes`` (the union of all shapes) but on none of ``targets``."""
    other = shapes & ~np.any(targets, axis=0)
    return float((mask & other).sum() / max(mask.sum(), 1))


def breakdown(model_dir: str, seed: int = 12345, scenes_per_size: int = 4) -> None:
    predictor = Predictor(load_sam_engine(model_dir, decoder="torch"))
    rng = np.random.default_rng(seed)
    extent, chosen, best, box, chosen_k, best_k = [], [], [], [], [], []
    counts = np.zeros((2, 2, len(DISTANCES) - 1), np.int64)
    spill, spill_single, union, cosines = [], [], [], []
    for h, w in EVAL_SIZES:
        for _ in range(scenes_per_size):
            scene = make_scene(rng, h, w)
            predictor.set_image(scene.image)
            shapes = scene.masks.any(0)
            cosines += shape_code_cosines(predictor.get_image_embedding().arrays["image_embeddings"][0], scene.masks)
            for a, b in zip(scene.masks[:-1], scene.masks[1:]):
                pts = np.array([interior_point(a), interior_point(b)])
                m = predictor.predict(pts, np.array([1, 1]), multimask_output=False)[0][0]
                union.append((m[a].mean(), m[b].mean(), on_other_shapes(m, shapes, a, b)))
            for gt in scene.masks:
                click = interior_point(gt)
                single = predictor.predict(np.array([click]), np.array([1]), multimask_output=False)[0][0]
                spill_single.append(on_other_shapes(single, shapes, gt))
                masks, scores, _ = predictor.predict(np.array([click]), np.array([1]))
                ious = [iou(m, gt) for m in masks]
                pick = masks[int(np.argmax(scores))]
                spill.append(on_other_shapes(pick, shapes, gt))
                counts += coverage_by_distance(pick, gt, click)
                x0, y0, x1, y1 = mask_box(gt)
                extent.append(max(x1 - x0, y1 - y0) * INPUT / max(h, w))
                chosen_k.append(int(np.argmax(scores)))
                best_k.append(int(np.argmax(ious)))
                chosen.append(ious[chosen_k[-1]])
                best.append(max(ious))
                masks, _, _ = predictor.predict(box=mask_box(gt), multimask_output=False)
                box.append(iou(masks[0], gt))
    extent, chosen, best, box = map(np.array, (extent, chosen, best, box))
    print(f"{model_dir}: {len(extent)} shapes")
    for lo, hi in EXTENTS:
        k = (extent >= lo) & (extent < hi)
        if k.any():
            print(
                f"  extent {lo}-{min(hi, INPUT)} px: n={k.sum():2d}  click {chosen[k].mean():.3f}  "
                f"best of 3 {best[k].mean():.3f}  box {box[k].mean():.3f}"
            )
    print(
        f"  all: click {chosen.mean():.3f}  best of 3 {best.mean():.3f}  box {box.mean():.3f}; candidate ranked "
        f"first {np.bincount(chosen_k, minlength=3).tolist()}, truly best {np.bincount(best_k, minlength=3).tolist()}"
    )
    rings = ", ".join(f"{lo}-{hi}" for lo, hi in zip(DISTANCES[:-1], DISTANCES[1:]))
    share = counts[:, 0] / np.maximum(counts[:, 1], 1)
    print(f"  click mask by distance from the click ({rings} px):")
    print(f"    target pixels covered {np.round(share[0], 2).tolist()}")
    print(f"    other pixels covered  {np.round(share[1], 2).tolist()}")
    union = np.array(union)
    print(
        f"  click mask pixels on other shapes: chosen candidate {np.mean(spill):.3f}, single mask "
        f"{np.mean(spill_single):.3f}; two clicks on A and B: cover A {union[:, 0].mean():.2f}, B "
        f"{union[:, 1].mean():.2f}, pixels on other shapes {union[:, 2].mean():.2f}, one of the two missed "
        f"(< 50 %) in {int((union[:, :2].min(1) < 0.5).sum())} of {len(union)} pairs"
    )
    print(f"  cosine between different shapes' mean codes: {np.mean(cosines):.2f}")


if __name__ == "__main__":
    for path in sys.argv[1:] or [str(Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tiny-sam")]:
        breakdown(path)
