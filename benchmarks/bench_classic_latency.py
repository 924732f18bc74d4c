"""Latency of the ``classic`` engine under the standard clicker protocol (GrabCut photos).

Prints the median / p95 seconds per click (``Predictor.predict``), split into the first click (three
candidates, no previous mask) and later clicks (one mask, previous logits fed back), the median
``set_image`` time, the embedding size, and NoC@85 / NoC@90 of the same run.

    .venv/bin/python benchmarks/bench_classic_latency.py [--limit N] [--max-clicks 20] [--dataset DIR]

Timings are wall-clock on whatever else the machine is doing: run it on an idle machine for clean numbers.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from maskwright import Predictor
from maskwright.evaluation.datasets import load_dataset
from maskwright.evaluation.metrics import noc
from maskwright.evaluation.runner import evaluate_engine

DEFAULT_DATASET = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "grabcut"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--limit", type=int, default=None, help="only the first N photos")
    parser.add_argument("--max-clicks", type=int, default=20)
    args = parser.parse_args(argv)
    if not (args.dataset / "images").is_dir():
        print(f"dataset not found: {args.dataset}", file=sys.stderr)
        return 2

    samples = load_dataset(args.dataset)[: args.limit]
    predictor = Predictor("classic", cache_size=0)
    t0 = time.perf_counter()
    result = evaluate_engine(predictor, samples, max_clicks=args.max_clicks)
    total = time.perf_counter() - t0

    first = np.array([s.click_seconds[0] for s in result.samples])
    later = np.array([t for s in result.samples for t in s.click_seconds[1:]])
    every = np.array(result.click_seconds)
    embed = np.array(result.set_image_seconds)
    emb_bytes = len(predictor.get_image_embedding().to_bytes())

    def ms(values: np.ndarray, q: float) -> str:
        return f"{np.percentile(values, q) * 1000:7.1f}" if len(values) else "    n/a"

    print(f"classic engine, {len(result.samples)} photos x {args.max_clicks} clicks, total {total:.1f} s")
    print(f"{'':24s} {'median ms':>9s} {'p95 ms':>8s}")
    print(f"{'per click (all)':24s} {ms(every, 50):>9s} {ms(every, 95):>8s}")
    print(f"{'first click (K=3)':24s} {ms(first, 50):>9s} {ms(first, 95):>8s}")
    print(f"{'later clicks (K=1)':24s} {ms(later, 50):>9s} {ms(later, 95):>8s}")
    print(f"{'set_image':24s} {ms(embed, 50):>9s} {ms(embed, 95):>8s}")
    print(f"embedding of the last photo: {emb_bytes / 1e6:.2f} MB serialised")
    ious = result.all_ious
    print(f"NoC@85 {noc(ious, 0.85, args.max_clicks):.2f}  NoC@90 {noc(ious, 0.90, args.max_clicks):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
