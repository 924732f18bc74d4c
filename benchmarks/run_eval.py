"""Run ``maskwright eval`` and print its summary as a markdown table row per engine (for docs/benchmarks.md).

    .venv/bin/python benchmarks/run_eval.py /work/shared/datasets/grabcut --engine classic --out eval-grabcut

Any ``maskwright eval`` options are passed through. Timings are wall-clock on whatever machine runs it.
Curves of separate runs (e.g. two commits of one engine) on one plot:

    .venv/bin/python benchmarks/run_eval.py --plot out.png "classic (old)=old/summary.json" "classic=new/summary.json"
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


def plot_runs(out_png: str, labelled: list[str]) -> int:
    """Draw every engine curve of several summary.json files, as ``LABEL=path`` (one curve per engine)."""
    from maskwright.evaluation.plots import plot_iou_vs_clicks

    curves, n = {}, set()
    for item in labelled:
        label, _, path = item.partition("=")
        summary = json.loads(Path(path).read_text())
        n.add(summary["n_samples"])
        for name, stats in summary["engines"].items():
            key = label if len(summary["engines"]) == 1 else f"{label} {name}"
            curves[key] = stats["mean_iou_per_click"]
    title = f"{Path(json.loads(Path(labelled[0].partition('=')[2]).read_text())['dataset']).name}"
    plot_iou_vs_clicks(curves, out_png, title=f"{title} ({'/'.join(str(v) for v in sorted(n))} samples)")
    print(f"wrote {out_png}")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--plot"] and len(argv) >= 3:
        return plot_runs(argv[1], argv[2:])
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
