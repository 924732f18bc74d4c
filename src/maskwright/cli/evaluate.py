"""``maskwright eval``: NoC@85/90 and IoU-vs-clicks of engines on a dataset (RITM protocol)."""

from __future__ import annotations

import csv
import json
import platform
import time
from pathlib import Path

import typer

from maskwright.cli.common import user_errors


def register(app: typer.Typer) -> None:
    @app.command("eval")
    @user_errors
    def eval_command(
        dataset: Path = typer.Argument(..., help="Folder with images/ and masks/ (matched by stem), or a COCO JSON."),
        engine: list[str] = typer.Option([], "--engine", "-e", help="Engine name; repeat to compare engines."),
        max_clicks: int = typer.Option(20, "--max-clicks", help="Clicks per sample."),
        limit: int | None = typer.Option(None, "--limit", help="Evaluate only the first N samples."),
        images: Path | None = typer.Option(None, "--images", help="Image folder of a COCO JSON (default: its folder)."),
        out: Path = typer.Option(..., "--out", "-o", help="Output folder for summary.json, CSV and plot."),
    ) -> None:
        """Simulate clicks (RITM protocol); write summary.json, per_sample.csv, clicks.json, iou_vs_clicks.png."""
        from tqdm import tqdm

        from maskwright import Predictor
        from maskwright.evaluation import evaluate_engine, load_dataset, summarize
        from maskwright.evaluation.metrics import clicks_to_reach
        from maskwright.evaluation.plots import plot_iou_vs_clicks

        if max_clicks < 1:
            raise ValueError(f"--max-clicks must be >= 1, got {max_clicks}")
        if limit is not None and limit < 1:
            raise ValueError(f"--limit must be >= 1, got {limit}")
        samples = load_dataset(dataset, images)
        if limit is not None:
            samples = samples[:limit]
        # Create every predictor first so an unknown/unavailable engine fails before any work.
        predictors = [Predictor(name) for name in dict.fromkeys(engine)] if engine else [Predictor()]
        out.mkdir(parents=True, exist_ok=True)

        summary = {
            "dataset": str(dataset),
            "n_samples": len(samples),
            "max_clicks": max_clicks,
            "protocol": "RITM clicker (exact L2 distance transform, padded), NoC with max_clicks when not reached",
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": f"{platform.machine()} {platform.system()}",
            "engines": {},
        }
        curves = {}
        rows = []
        clicks = {}  # engine -> sample -> [[x, y, label], ...], to compare runs click by click
        for predictor in predictors:
            name = predictor.engine.name
            with tqdm(total=len(samples), desc=f"eval {name}", unit="sample") as bar:

                def advance(res, bar=bar):
                    bar.set_postfix(iou_last=f"{res.ious[-1]:.3f}")
                    bar.update(1)

                result = evaluate_engine(predictor, samples, max_clicks, on_sample=advance)
            stats = summarize(result.all_ious, result.click_seconds, result.set_image_seconds, max_clicks)
            summary["engines"][name] = stats
            curves[name] = stats["mean_iou_per_click"]
            clicks[name] = {res.name: [[c.x, c.y, c.label] for c in res.clicks] for res in result.samples}
            for res in result.samples:
                rows.append(
                    [
                        name,
                        res.name,
                        clicks_to_reach(res.ious, 0.85, max_clicks),
                        clicks_to_reach(res.ious, 0.90, max_clicks),
                    ]
                    + [f"{v:.6f}" for v in res.ious]
                )
            typer.echo(
                f"{name}: NoC@85 {stats['noc85']:.2f}  NoC@90 {stats['noc90']:.2f}  "
                f"never@90 {stats['never_reached_90']}/{stats['n_samples']}  "
                f"mIoU@1 {stats['mean_iou_per_click'][0]:.3f}  "
                f"{stats['seconds_per_click']['median']:.3f} s/click (median)"
            )

        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        with open(out / "per_sample.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["engine", "sample", "noc85", "noc90"] + [f"iou_{k}" for k in range(1, max_clicks + 1)])
            writer.writerows(rows)
        (out / "clicks.json").write_text(json.dumps(clicks))
        plot_iou_vs_clicks(curves, out / "iou_vs_clicks.png", title=f"{dataset.name} ({len(samples)} samples)")
        typer.echo(f"wrote {out}/summary.json, per_sample.csv, clicks.json, iou_vs_clicks.png")
