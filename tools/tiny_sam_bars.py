"""Issue 4's bars for a tiny SAM, on the test scenes and on many other draws of them.

    .venv/bin/python tools/tiny_sam_bars.py tests/fixtures/tiny-sam [more model dirs ...] --draws 20

``tests/test_tiny_sam.py`` measures a model on one set of scenes (:func:`bar_scenes` with seed 2024: four
300x500 and four 700x240 scenes of 4 shapes each) with the functions below and asserts the bars. One set is
one draw: this tool measures the same bars on ``--draws`` more sets (seeds 0, 1, ...) and counts how many
pass, so a model that passes the tests by luck of the draw shows here. Everything goes through the real
``maskwright.Predictor`` (the torch decoder; the tests show ONNX gives the same masks).

The bars for one click and one box per shape: IoU mean >= 0.85 (issue 4), each image size's mean >= 0.8 (a
transform wrong for one aspect ratio cannot hide in the mean), and at most a tenth of the shapes below 0.6
(a bug that breaks some prompts, e.g. near the padded edge, cannot either). Not the worst shape: over 16
shapes that is the model's tail -- a click spilling onto another shape -- and models whose mean is 0.89 pass
it on half the draws (docs/benchmarks.md, "Session 16").
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

TEST_SEED = 2024  # the tests' draw; training draws from streams seeded by its --seed, the trainer's evaluation 12345
SIZES = ((300, 500), (700, 240))  # (H, W): wide and tall, neither a multiple of 16
SCENES_PER_SIZE = 4
IOU_BARS = {"mean": 0.85, "size_mean": 0.8, "low": 0.6, "low_share": 0.1}  # for clicks and for boxes
NEGATIVE_BARS = (0.8, 0.1, 0.8)  # B covered by two clicks >=, B left after the negative click <=, A kept >=


def bar_scenes(
    seed: int = TEST_SEED, min_color_distance: float = MIN_COLOR_DISTANCE, per_size: int = SCENES_PER_SIZE
) -> list[Scene]:
    """``per_size`` scenes of 4 shapes at each of SIZES (in that order), drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    scenes = []
    for h, w in SIZES:
        scenes += [make_scene(rng, h, w, n_shapes=4, min_color_distance=min_color_distance) for _ in range(per_size)]
    return scenes


def iou_bars(ious: list[float], scenes: list[Scene]) -> dict[str, float | bool]:
    """The numbers :data:`IOU_BARS` judge, for one IoU per shape of ``scenes`` (in order), and whether they
    pass: ``mean``, ``size_mean`` (the lowest of the image sizes' means), ``low_share`` (share below
    ``IOU_BARS["low"]``), ``worst``."""
    ious_arr = np.asarray(ious, dtype=float)
    sizes = np.repeat([scene.image.shape[:2] for scene in scenes], [len(scene.masks) for scene in scenes], axis=0)
    size_means = [ious_arr[(sizes == size).all(1)].mean() for size in np.unique(sizes, axis=0)]
    r: dict[str, float | bool] = {
        "mean": float(ious_arr.mean()),
        "size_mean": float(min(size_means)),
        "low_share": float((ious_arr < IOU_BARS["low"]).mean()),
        "worst": float(ious_arr.min()),
    }
    r["pass"] = (
        r["mean"] >= IOU_BARS["mean"]
        and r["size_mean"] >= IOU_BARS["size_mean"]
        and r["low_share"] <= IOU_BARS["low_share"]
    )
    return r


def click_candidate_ious(predictor: Predictor, scenes: list[Scene]) -> list[tuple[float, float]]:
    """For one positive click at each shape's deepest interior point: (IoU of the candidate the model scores
    highest, IoU of the best candidate)."""
    out = []
    for scene in scenes:
        predictor.set_image(scene.image)
        for gt in scene.masks:
            masks, scores, _ = predictor.predict(np.array([interior_point(gt)]), np.array([1]))
            out.append((iou(masks[int(np.argmax(scores))], gt), max(iou(m, gt) for m in masks)))
    return out


def click_ious(predictor: Predictor, scenes: list[Scene]) -> list[float]:
    """IoU of one positive click at each shape's deepest interior point (the candidate scored highest)."""
    return [chosen for chosen, _ in click_candidate_ious(predictor, scenes)]


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
    r: dict[str, float | bool] = {}
    chosen, best = zip(*click_candidate_ious(predictor, scenes))
    for name, ious in (("click", list(chosen)), ("box", box_ious(predictor, scenes))):
        r |= {f"{name}_{key}": value for key, value in iou_bars(ious, scenes).items()}
    r["click_best_of_3_mean"] = float(np.mean(best))
    before, after, kept = negative_click_shares(predictor, scenes)
    r |= {"b_covered": float(np.mean(before)), "b_left": float(np.mean(after)), "a_kept": float(np.mean(kept))}
    r["negative_pass"] = (
        r["b_covered"] >= NEGATIVE_BARS[0] and r["b_left"] <= NEGATIVE_BARS[1] and r["a_kept"] >= NEGATIVE_BARS[2]
    )
    r["all_pass"] = bool(r["click_pass"] and r["box_pass"] and r["negative_pass"])
    return r


def main() -> None:
    from maskwright.engines.sam_registry import load_sam_engine

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="tiny SAM directories (config.json + model.safetensors)")
    parser.add_argument("--draws", type=int, default=20, help="scene sets besides the tests' (seeds 0..N-1)")
    parser.add_argument("--color-distance", type=float, default=MIN_COLOR_DISTANCE, help="scenes' min color distance")
    parser.add_argument("--scenes-per-size", type=int, default=SCENES_PER_SIZE, help="scenes of each size per draw")
    args = parser.parse_args()
    for model in args.models:
        predictor = Predictor(load_sam_engine(model, decoder="torch"))
        scene_args = (args.color_distance, args.scenes_per_size)
        test = measure(predictor, bar_scenes(TEST_SEED, *scene_args))
        draws = [measure(predictor, bar_scenes(seed, *scene_args)) for seed in range(args.draws)]
        print(f"{model} (colors >= {args.color_distance:g} apart, {args.scenes_per_size} scenes per size)")
        print(
            f"  tests' scenes: {'PASS' if test['all_pass'] else 'FAIL'}  click {test['click_mean']:.3f} (size "
            f"{test['click_size_mean']:.3f}, low {test['click_low_share']:.2f})  box {test['box_mean']:.3f} (size "
            f"{test['box_size_mean']:.3f}, low {test['box_low_share']:.2f})  negative {test['b_covered']:.2f} / "
            f"{test['b_left']:.2f} / {test['a_kept']:.2f}"
        )
        counts = {k: sum(bool(d[k]) for d in draws) for k in ("all_pass", "click_pass", "box_pass", "negative_pass")}
        print(
            f"  {args.draws} other draws pass: all bars {counts['all_pass']}, click {counts['click_pass']}, "
            f"box {counts['box_pass']}, negative click {counts['negative_pass']}"
        )
        for key in [k for k in test if not k.endswith("pass")] if draws else []:  # --draws 0: the tests' only
            values = np.array([d[key] for d in draws])
            print(f"  {key:22s} median {np.median(values):.3f}  range {values.min():.3f}-{values.max():.3f}")


if __name__ == "__main__":
    main()
