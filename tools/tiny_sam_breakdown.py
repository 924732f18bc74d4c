"""Where a tiny SAM (``tools/train_tiny_sam.py``) fails: IoU by shape size, and which click candidate wins.

    .venv/bin/python tools/tiny_sam_breakdown.py tests/fixtures/tiny-sam [more model dirs ...]

Same scenes and prompts as the trainer's evaluation (seed 12345, through ``maskwright.Predictor``): one click
at the deepest interior point (the candidate of highest predicted IoU, and the best of the three) and the
exact box. Shapes are grouped by their extent in the 1024 frame (crop steps of 512 px see only shapes that
fit a crop); a line counts which candidate the IoU head ranks first and which one is truly best; the last
two lines give, by distance from the click (1024-frame px), the share of the target's pixels the chosen
click mask covers and the share of other pixels it wrongly covers: a mask that is a disk around the click
rather than the clicked shape shows as recall falling with distance.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_shapes import interior_point, make_scene, mask_box  # noqa: E402
from train_tiny_sam import EVAL_SIZES, INPUT, iou  # noqa: E402

from maskwright import Predictor  # noqa: E402
from maskwright.engines.sam_registry import load_sam_engine  # noqa: E402

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


def breakdown(model_dir: str, seed: int = 12345, scenes_per_size: int = 4) -> None:
    predictor = Predictor(load_sam_engine(model_dir, decoder="torch"))
    rng = np.random.default_rng(seed)
    extent, chosen, best, box, chosen_k, best_k = [], [], [], [], [], []
    counts = np.zeros((2, 2, len(DISTANCES) - 1), np.int64)
    for h, w in EVAL_SIZES:
        for _ in range(scenes_per_size):
            scene = make_scene(rng, h, w)
            predictor.set_image(scene.image)
            for gt in scene.masks:
                click = interior_point(gt)
                masks, scores, _ = predictor.predict(np.array([click]), np.array([1]))
                ious = [iou(m, gt) for m in masks]
                counts += coverage_by_distance(masks[int(np.argmax(scores))], gt, click)
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


if __name__ == "__main__":
    for path in sys.argv[1:] or [str(Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tiny-sam")]:
        breakdown(path)
