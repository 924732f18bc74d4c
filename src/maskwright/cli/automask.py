"""``maskwright automask``: segment everything in one image -> COCO JSON (RLE), overlay PNG, mask PNGs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import typer

from maskwright.cli.common import user_errors

FORMATS = ("coco", "png")


def coco_document(image_name: str, height: int, width: int, records: list[dict], engine: str) -> dict:
    """A COCO detection document with one annotation per automatic mask (segmentation as RLE)."""
    annotations = []
    for i, r in enumerate(records, start=1):
        annotations.append(
            {
                "id": i,
                "image_id": 1,
                "category_id": 1,
                "segmentation": r["segmentation"],
                "area": r["area"],
                "bbox": r["bbox"],
                "iscrowd": 0,
                "predicted_iou": round(r["predicted_iou"], 4),
                "stability_score": round(r["stability_score"], 4),
                "point_coords": r["point_coords"],
                "crop_box": r["crop_box"],
            }
        )
    return {
        "info": {"description": f"maskwright automask ({engine})"},
        "images": [{"id": 1, "file_name": image_name, "height": height, "width": width}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "object", "supercategory": "object"}],
    }


def register(app: typer.Typer) -> None:
    @app.command()
    @user_errors
    def automask(
        image: Path = typer.Argument(..., help="Image file."),
        engine: str | None = typer.Option(None, "--engine", "-e", help="Engine name (default: best available)."),
        out: Path = typer.Option(Path("maskwright-automask"), "--out", "-o", help="Output folder."),
        fmt: str = typer.Option("coco", "--format", "-f", help="coco: JSON + overlay; png: also one PNG per mask."),
        points_per_side: int = typer.Option(32, "--points-per-side", help="Grid points per side (grid engines)."),
        pred_iou_thresh: float = typer.Option(0.88, "--pred-iou-thresh", help="Minimum predicted IoU."),
        stability_thresh: float = typer.Option(0.95, "--stability-thresh", help="Minimum stability score."),
        crop_layers: int = typer.Option(0, "--crop-layers", help="Extra layers of zoomed crops."),
        min_area: int = typer.Option(0, "--min-area", help="Remove islands and holes under this many pixels."),
    ) -> None:
        """Propose masks for everything in IMAGE; write automask.json (COCO, RLE) and overlay.png."""
        from rich.progress import Progress

        from maskwright import Predictor
        from maskwright.automask import AutoMaskGenerator
        from maskwright.imageio import read_image, write_png
        from maskwright.masks import rle_decode
        from maskwright.masks.overlay import overlay_masks

        if fmt not in FORMATS:
            raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        rgb = read_image(image)
        predictor = Predictor(engine, cache_size=1)
        generator = AutoMaskGenerator(
            predictor,
            points_per_side=points_per_side,
            pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_thresh,
            crop_n_layers=crop_layers,
            min_mask_region_area=min_area,
            output_mode="coco_rle",
        )
        t0 = time.perf_counter()
        with Progress(transient=True) as bar:
            task = bar.add_task(f"automask ({predictor.engine.name})", total=None)
            generator.progress = lambda done, total: bar.update(task, completed=done, total=total)
            records = generator.generate(rgb)
        seconds = time.perf_counter() - t0

        out.mkdir(parents=True, exist_ok=True)
        h, w = rgb.shape[:2]
        doc = coco_document(image.name, h, w, records, predictor.engine.name)
        doc["info"]["seconds"] = round(seconds, 3)
        doc["info"]["counts"] = generator.last_stats
        (out / "automask.json").write_text(json.dumps(doc))
        masks = [rle_decode(r["segmentation"]) for r in records]
        write_png(out / "overlay.png", overlay_masks(rgb, masks, alpha=0.45))
        if fmt == "png":
            mask_dir = out / "masks"
            mask_dir.mkdir(exist_ok=True)
            for i, m in enumerate(masks, start=1):
                write_png(mask_dir / f"mask_{i:04d}.png", m.astype(np.uint8) * 255)
        typer.echo(
            f"{predictor.engine.name}: {len(records)} masks ({generator.last_stats.get('candidates', 0)} candidates) "
            f"in {seconds:.2f}s -> {out}/automask.json, overlay.png" + (", masks/*.png" if fmt == "png" else "")
        )
