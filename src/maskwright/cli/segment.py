"""``maskwright segment``: one prompt on one image -> mask PNG, overlay PNG, COCO-style JSON."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import typer

from maskwright.cli.common import parse_floats, parse_point, user_errors

SAMPLES = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")


def load_sample(name: str) -> np.ndarray:
    """A photo shipped with scikit-image (no download)."""
    from skimage import data

    if name not in SAMPLES:
        raise ValueError(f"--sample must be one of {', '.join(SAMPLES)}, got {name!r}")
    return np.ascontiguousarray(getattr(data, name)()[..., :3])


def register(app: typer.Typer) -> None:
    @app.command()
    @user_errors
    def segment(
        image: Path | None = typer.Argument(None, help="Image file (or use --sample)."),
        point: list[str] = typer.Option([], "--point", "-p", help="X,Y[,pos|neg] pixel click; repeatable."),
        box: str | None = typer.Option(None, "--box", help="X0,Y0,X1,Y1 box in pixels."),
        engine: str | None = typer.Option(None, "--engine", "-e", help="Engine name (default: best available)."),
        out: Path = typer.Option(Path("maskwright-out"), "--out", "-o", help="Output folder."),
        sample: str | None = typer.Option(None, "--sample", help=f"Use a bundled photo: {', '.join(SAMPLES)}."),
    ) -> None:
        """Segment one object from clicks and/or a box; write mask.png, overlay.png and mask.json."""
        from maskwright import Predictor
        from maskwright.imageio import read_image, write_png
        from maskwright.masks import area, bbox_xywh, coco_segmentation, mask_to_polygons, rle_encode
        from maskwright.masks.overlay import draw_prompt, overlay_masks

        if (image is None) == (sample is None):
            raise ValueError("give exactly one of IMAGE or --sample")
        rgb = read_image(image) if image is not None else load_sample(sample)
        pts = [parse_point(p) for p in point]
        box_xyxy = parse_floats(box, 4, "--box") if box else None
        if not pts and box_xyxy is None:
            raise ValueError("give at least one --point or a --box")
        coords = np.array([[x, y] for x, y, _ in pts], np.float32) if pts else None
        labels = np.array([lab for _, _, lab in pts], np.int32) if pts else None

        predictor = Predictor(engine)
        t0 = time.perf_counter()
        predictor.set_image(rgb)
        t1 = time.perf_counter()
        masks, scores, _ = predictor.predict(coords, labels, box_xyxy, multimask_output=True)
        t2 = time.perf_counter()
        best = int(np.argmax(scores))
        mask = masks[best]

        out.mkdir(parents=True, exist_ok=True)
        write_png(out / "mask.png", mask.astype(np.uint8) * 255)
        shown = overlay_masks(rgb, [mask], colors=np.array([[30, 144, 255]], np.uint8))
        write_png(out / "overlay.png", draw_prompt(shown, coords, labels, box_xyxy))
        parts = mask_to_polygons(mask, tolerance=1.0)
        record = {
            "image": str(image) if image is not None else f"sample:{sample}",
            "height": int(rgb.shape[0]),
            "width": int(rgb.shape[1]),
            "engine": predictor.engine.name,
            "segmentation": rle_encode(mask),
            "polygons": parts,
            "coco_polygons": coco_segmentation(parts),
            "bbox": bbox_xywh(mask),
            "area": area(mask),
            "score": float(scores[best]),
            "candidate_scores": [float(s) for s in scores],
            "points": [[x, y] for x, y, _ in pts],
            "labels": [lab for _, _, lab in pts],
            "box": box_xyxy,
            "timing_s": {"set_image": round(t1 - t0, 4), "predict": round(t2 - t1, 4)},
        }
        (out / "mask.json").write_text(json.dumps(record, indent=1))
        typer.echo(
            f"{predictor.engine.name}: mask of {record['area']} px (score {record['score']:.3f}) "
            f"in {t2 - t1:.3f}s after set_image {t1 - t0:.3f}s -> {out}/mask.png, overlay.png, mask.json"
        )
