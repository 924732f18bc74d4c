"""Segment everything on the GrabCut photos: seconds per photo, masks before/after filtering, object recall.

Recall: the fraction of photos where some automatic mask has IoU >= 0.75 with the one annotated object
(pixels marked 128 in the ground truth are ignored). Goal for ``classic``: >= 0.6 in under 5 s a photo.

    .venv/bin/python benchmarks/bench_automask.py                      # every available engine, all photos
    .venv/bin/python benchmarks/bench_automask.py --engine classic --limit 10
    .venv/bin/python benchmarks/bench_automask.py --engine classic --half even --threads 1   # tuning half

Photos are indexed in name order; "even" and "odd" recalls are over the photos with even / odd index (the
classic constants were tuned on the even ones, the odd ones are held out).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import grabcut_pairs, load_grabcut_sample  # noqa: E402
from maskwright.automask import AutoMaskGenerator  # noqa: E402
from maskwright.engines.registry import available_engines  # noqa: E402

IOU_HIT = 0.75


def best_iou(records: list[dict], gt: np.ndarray, ignore: np.ndarray) -> float:
    keep = ~ignore
    best = 0.0
    for r in records:
        m = r["segmentation"]
        union = np.count_nonzero((m | gt) & keep)
        if union:
            best = max(best, np.count_nonzero(m & gt & keep) / union)
    return best


def bench_engine(name: str, indexed_pairs: list, points_per_side: int) -> dict:
    gen = AutoMaskGenerator(name, points_per_side=points_per_side)
    gen.generate(np.zeros((64, 64, 3), np.uint8))  # warm-up (imports, model load)
    seconds, candidates, outputs, ious, indices = [], [], [], [], []
    for index, pair in indexed_pairs:
        indices.append(index)
        rgb, gt, ignore = load_grabcut_sample(pair)
        t0 = time.perf_counter()
        records = gen.generate(rgb)
        seconds.append(time.perf_counter() - t0)
        candidates.append(gen.last_stats["candidates"])
        outputs.append(len(records))
        ious.append(best_iou(records, gt, ignore))
        print(
            f"  {pair[0].name:16s} {seconds[-1]:6.2f}s  {candidates[-1]:5d} -> {outputs[-1]:4d} masks  "
            f"best IoU {ious[-1]:.3f}",
            flush=True,
        )
    ious_arr = np.asarray(ious)
    even = np.asarray(indices) % 2 == 0
    return {
        "engine": name,
        "strategy": gen.strategy,
        "photos": len(indexed_pairs),
        "s_mean": statistics.mean(seconds),
        "s_median": statistics.median(seconds),
        "s_max": max(seconds),
        "candidates": statistics.mean(candidates),
        "output": statistics.mean(outputs),
        "recall": float(np.mean(ious_arr >= IOU_HIT)),
        "recall_even": float(np.mean(ious_arr[even] >= IOU_HIT)) if even.any() else float("nan"),
        "recall_odd": float(np.mean(ious_arr[~even] >= IOU_HIT)) if (~even).any() else float("nan"),
        "mean_best_iou": float(ious_arr.mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", action="append", help="engine name (repeatable; default: every available)")
    parser.add_argument("--limit", type=int, default=0, help="first N photos only (0 = all)")
    parser.add_argument("--points-per-side", type=int, default=32, help="grid points per side (grid engines)")
    parser.add_argument("--half", choices=("all", "even", "odd"), default="all", help="photos by index parity")
    parser.add_argument("--threads", type=int, default=0, help="OpenCV threads (0 = OpenCV's default)")
    args = parser.parse_args()
    if args.threads:
        import cv2

        cv2.setNumThreads(args.threads)
    pairs = list(enumerate(grabcut_pairs()))
    if not pairs:
        sys.exit("GrabCut dataset not found (see tests/conftest.py)")
    if args.half != "all":
        pairs = [(i, p) for i, p in pairs if i % 2 == (0 if args.half == "even" else 1)]
    if args.limit:
        pairs = pairs[: args.limit]
    names = args.engine or [spec.name for spec, ok, _ in available_engines() if ok]
    rows = []
    for name in names:
        print(f"{name}:", flush=True)
        rows.append(bench_engine(name, pairs, args.points_per_side))
    print()
    print(
        "| engine | strategy | photos | s/photo mean (median, max) | masks before -> after filtering "
        "| recall@0.75 (even / odd photos) | mean best IoU |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['engine']} | {r['strategy']} | {r['photos']} | {r['s_mean']:.2f} ({r['s_median']:.2f}, "
            f"{r['s_max']:.2f}) | {r['candidates']:.0f} -> {r['output']:.0f} | {r['recall']:.2f} "
            f"({r['recall_even']:.2f} / {r['recall_odd']:.2f}) | {r['mean_best_iou']:.3f} |"
        )


if __name__ == "__main__":
    main()
