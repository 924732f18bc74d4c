"""Run ``maskwright eval`` and print its summary as a markdown table row per engine (for docs/benchmarks.md).

    .venv/bin/python benchmarks/run_eval.py /work/shared/datasets/grabcut --engine classic --out eval-grabcut

Any ``maskwright eval`` options are passed through. Timings are wall-clock on whatever machine runs it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def markdown_rows(summary: dict) -> list[str]:
    rows = [
        "| engine | NoC@85 | NoC@90 | >=20 @90 (never reached) | mIoU@1 | mIoU@3 | mIoU@5 | s/click median (mean) "
        "| set_image s median (mean) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary["engines"].items():
        curve = s["mean_iou_per_click"]
        at = [f"{curve[k - 1]:.3f}" if k <= len(curve) else "-" for k in (1, 3, 5)]
        click, setimg = s["seconds_per_click"], s["set_image_seconds"]
        rows.append(
            f"| {name} | {s['noc85']:.2f} | {s['noc90']:.2f} | {s['noc_at_max_90']} ({s['never_reached_90']}) "
            f"| {' | '.join(at)} | {click['median']:.3f} ({click['mean']:.3f}) "
            f"| {setimg['median']:.3f} ({setimg['mean']:.3f}) |"
        )
    return rows


def main(argv: list[str]) -> int:
    if "--out" not in argv and "-o" not in argv:
        print("usage: run_eval.py DATASET [maskwright eval options] --out DIR", file=sys.stderr)
        return 2
    # A child process, so the progress bar and messages go straight to the terminal.
    code = subprocess.call([sys.executable, "-m", "maskwright.cli", "eval", *argv])
    if code != 0:
        return code
    out = Path(argv[(argv.index("--out") if "--out" in argv else argv.index("-o")) + 1])
    summary = json.loads((out / "summary.json").read_text())
    print(f"\n{summary['n_samples']} samples, {summary['max_clicks']} clicks, {summary['date_utc']}\n")
    print("\n".join(markdown_rows(summary)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
