"""Issue 4's bars for a tiny SAM, on the test scenes and on many other draws of them.

    .venv/bin/python tools/tiny_sam_bars.py tests/fixtures/tiny-sam [more model dirs ...] --draws 20

``tests/test_tiny_sam.py`` measures a model on one set of scenes (:func:`bar_scenes` with seed 2024: two
300x500 and two 700x240 scenes of 4 shapes each) with the functions below and asserts the bars. One set is
one draw: this tool measures the same bars on ``--draws`` more sets (seeds 0, 1, ...) and counts how many
pass, so a model that passes the tests by luck of the draw shows here. Everything goes through the real
``maskwright.Predictor`` (the torch decoder; the tests show ONNX gives the same masks).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_shapes import MIN_COLOR_DISTANCE, Scene, interior_point, make_scene, mask_box  # noqa: E402

from maskwright import Predictor  # noqa: E402
from maskwright.masks import iou  # noqa: E402

TEST_SEED = 2024  # the tests' draw; training uses seed 0's stream, the trainer's evaluation 12345
SIZES = ((300, 500), (700, 240))  # (H, W): wide and tall, neither a multiple of 16
CLICK_BARS = BOX_BARS = (0.85, 0.6)  # IoU: mean over the shapes, and the worst shape
NEGATIVE_BARS = (0.8, 0.1, 0.8)  # B covered by two clicks >=, B left after the negative click <=, A kept >=


def bar_scenes(seed: int = TEST_SEED, min_color_distance: float = MIN_COLOR_DISTANCE) -> list[Scene]:
    """Two scenes of 4 shapes at each of SIZES, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    scenes = []
    for h, w in SIZES:
        scenes += [make_scene(rng, h, w, n_shapes=4, min_color_distance=min_color_distance) for _ in range(2)]
    return scenes


def click_ious(predictor: Predictor, scenes: list[Scene], best_of_all: bool = False) -> list[float]:
    """IoU of one positive click at each shape's deepest interior point: the candidate the model scores
    highest (or, with ``best_of_all``, the best of the candidates)."""
    out = []
    for scene in scenes:
        predictor.set_image(scene.image)
        for gt in scene.masks:
            masks, scores, _ = predictor.predict(np.array([interior_point(gt)]), np.array([1]))
            out.append(max(iou(m, gt) for m in masks) if best_of_all else iou(masks[int(np.argmax(scores))], gt))
    return out


def box_ious(predictor: Predictor, scenes: list[Scene]) -> list[float]:
    """IoU of the single mask for each shape's exact box (XYXY)."""
    out = []
    for scene in scenes:
        predictor.set_image(scene.image)
        for gt in scene.masks:
            masks, _, _ = predictor.predict(box=mask_box(gt), multimask_output=False)
            out.append(iou(masks[0], gt))
    return out


def negative_click_shares(predictor: Predictor, scenes: list[Scene]) -> tuple[list[float], list[float], list[float]]:
    """For each pair of consecutive shapes A, B of a scene: the share of B that positive clicks on A and B
    cover, the share of B left once a negative click on B is added, and the IoU with A then."""
    covered_before, covered_after, kept = [], [], []
    for scene in scenes:
        predictor.set_image(scene.image)
        for a, b in zip(scene.masks[:-1], scene.masks[1:]):
            points = np.array([interior_point(a), interior_point(b)])
            both, _, _ = predictor.predict(points, np.array([1, 1]), multimask_output=False)
            points = np.concatenate([points, points[1:]])
            only_a, _, _ = predictor.predict(points, np.array([1, 1, 0]), multimask_output=False)
            covered_before.append(float(both[0][b].mean()))
            covered_after.append(float(only_a[0][b].mean()))
            kept.append(iou(only_a[0], a))
    return covered_before, covered_after, kept


def measure(predictor: Predictor, scenes: list[Scene]) -> dict[str, float | bool]:
    """Every bar's numbers on ``scenes``, and whether each group of bars passes."""
    click, box = click_ious(predictor, scenes), box_ious(predictor, scenes)
    before, after, kept = negative_click_shares(predictor, scenes)
    r: dict[str, float | bool] = {
        "click_mean": float(np.mean(click)),
        "click_min": float(min(click)),
        "click_best_of_3_mean": float(np.mean(click_ious(predictor, scenes, best_of_all=True))),
        "box_mean": float(np.mean(box)),
        "box_min": float(min(box)),
        "b_covered": float(np.mean(before)),
        "b_left": float(np.mean(after)),
        "a_kept": float(np.mean(kept)),
    }
    r["click_pass"] = r["click_mean"] >= CLICK_BARS[0] and r["click_min"] >= CLICK_BARS[1]
    r["box_pass"] = r["box_mean"] >= BOX_BARS[0] and r["box_min"] >= BOX_BARS[1]
    r["negative_pass"] = (
        r["b_covered"] >= NEGATIVE_BARS[0] and r["b_left"] <= NEGATIVE_BARS[1] and r["a_kept"] >= NEGATIVE_BARS[2]
    )
    r["all_pass"] = r["click_pass"] and r["box_pass"] and r["negative_pass"]
    return r


def main() -> None:
    from maskwright.engines.sam_registry import load_sam_engine

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="tiny SAM directories (config.json + model.safetensors)")
    parser.add_argument("--draws", type=int, default=20, help="scene sets besides the tests' (seeds 0..N-1)")
    parser.add_argument("--color-distance", type=float, default=MIN_COLOR_DISTANCE, help="scenes' min color distance")
    args = parser.parse_args()
    for model in args.models:
        predictor = Predictor(load_sam_engine(model, decoder="torch"))
        test = measure(predictor, bar_scenes(TEST_SEED, args.color_distance))
        draws = [measure(predictor, bar_scenes(seed, args.color_distance)) for seed in range(args.draws)]
        print(f"{model} (colors >= {args.color_distance:g} apart)")
        print(
            f"  tests' scenes: {'PASS' if test['all_pass'] else 'FAIL'}  click {test['click_mean']:.3f} / "
            f"{test['click_min']:.3f}  box {test['box_mean']:.3f} / {test['box_min']:.3f}  negative "
            f"{test['b_covered']:.2f} / {test['b_left']:.2f} / {test['a_kept']:.2f}"
        )
        counts = {k: sum(bool(d[k]) for d in draws) for k in ("all_pass", "click_pass", "box_pass", "negative_pass")}
        print(
            f"  {args.draws} other draws pass: all bars {counts['all_pass']}, click {counts['click_pass']}, "
            f"box {counts['box_pass']}, negative click {counts['negative_pass']}"
        )
        for key in [k for k in test if not k.endswith("_pass")]:
            values = np.array([d[key] for d in draws])
            print(f"  {key:22s} median {np.median(values):.3f}  range {values.min():.3f}-{values.max():.3f}")


if __name__ == "__main__":
    main()
