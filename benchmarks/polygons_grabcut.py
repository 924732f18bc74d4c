"""Polygon round trip on every GrabCut ground-truth mask: IoU of polygons_to_mask(mask_to_polygons(gt, tol)).

    .venv/bin/python benchmarks/polygons_grabcut.py [/work/shared/datasets/grabcut] [--tolerance 1.0]

Prints the worst and mean IoU, vertex counts and timings (wall clock; noisy on a shared CPU).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from maskwright.evaluation.datasets import load_folder
from maskwright.masks import iou, mask_to_polygons, polygons_to_mask


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "dataset", nargs="?", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/grabcut")
    )
    parser.add_argument("--tolerance", type=float, default=1.0)
    args = parser.parse_args()
    rows = []
    for sample in load_folder(Path(args.dataset)):
        gt, _ = sample.load_masks()  # 255 = object (128 = ignore counts as background here)
        t0 = time.perf_counter()
        parts = mask_to_polygons(gt, args.tolerance)
        t1 = time.perf_counter()
        back = polygons_to_mask(parts, *gt.shape)
        t2 = time.perf_counter()
        vertices = sum(len(p["exterior"]) // 2 + sum(len(h) // 2 for h in p["holes"]) for p in parts)
        rows.append((iou(back, gt), sample.name, gt.size, vertices, t1 - t0, t2 - t1))
    rows.sort()
    ious = np.array([r[0] for r in rows])
    print(
        f"{len(rows)} masks, tolerance {args.tolerance}: "
        f"worst IoU {ious.min():.4f} ({rows[0][1]}), mean {ious.mean():.4f}"
    )
    print("worst five:", ", ".join(f"{r[1]} {r[0]:.4f}" for r in rows[:5]))
    print(f"vertices per mask: median {np.median([r[3] for r in rows]):.0f}")
    mp = np.array([r[2] for r in rows]) / 1e6
    trace, raster = np.array([r[4] for r in rows]), np.array([r[5] for r in rows])
    print(
        f"trace: median {1e3 * np.median(trace):.1f} ms ({np.median(trace / mp) * 1e3:.1f} ms/MP); "
        f"rasterise: median {1e3 * np.median(raster):.1f} ms ({np.median(raster / mp) * 1e3:.1f} ms/MP)"
    )


if __name__ == "__main__":
    main()
