"""YOLO-seg and PNG mask exports, written as zip archives.

YOLO-seg: ``data.yaml``, ``images/<name>``, ``labels/<stem>.txt`` with one line per polygon part,
``<class> x0 y0 x1 y1 ...`` normalised to 0..1 by the image width and height (holes cannot be
expressed in YOLO-seg and are dropped). PNG: ``instance/<stem>.png`` (16-bit, 0 background, k = the
k-th annotation of the image in ``index.json``) or ``semantic/<stem>.png`` (8-bit, 0 background,
k = label k in ``index.json``); where annotations overlap the later one wins.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import PurePosixPath
from typing import BinaryIO

import numpy as np
from PIL import Image as PILImage
from sqlalchemy.orm import Session

from maskwright.exchange.coco import project_annotations
from maskwright.masks import rle_decode
from maskwright.store.files import FileStore
from maskwright.store.models import Image, Project


def unique_stems(images: list[Image]) -> dict[int, str]:
    """File stem per image id, made unique by prefixing the id where names collide."""
    stems: dict[int, str] = {}
    seen: dict[str, int] = {}
    for img in images:
        stem = PurePosixPath(img.file_name).stem or f"image_{img.id}"
        seen[stem] = seen.get(stem, 0) + 1
    for img in images:
        stem = PurePosixPath(img.file_name).stem or f"image_{img.id}"
        stems[img.id] = stem if seen[stem] == 1 else f"{img.id}_{stem}"
    return stems


def yolo_polygon_line(class_index: int, exterior: list[float], width: int, height: int) -> str | None:
    """One YOLO-seg line from a flat pixel XY list; None when the polygon has fewer than 3 points."""
    pts = np.asarray(exterior, dtype=np.float64).reshape(-1, 2)
    if len(pts) < 3:
        return None
    norm = np.clip(pts / np.array([width, height], dtype=np.float64), 0.0, 1.0)
    return f"{class_index} " + " ".join(f"{v:.6f}" for v in norm.ravel())


def export_yolo(db: Session, files: FileStore, project_id: int, out: BinaryIO, include_images: bool = True) -> None:
    """Write a YOLO-seg zip of a project to the binary file ``out``."""
    project = db.get(Project, project_id)
    if project is None:
        raise ValueError(f"project {project_id} does not exist")
    class_of = {lab.id: k for k, lab in enumerate(project.labels)}
    pairs = project_annotations(db, project_id)
    stems = unique_stems([img for img, _ in pairs])
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        names = "\n".join(f"  {k}: {json.dumps(lab.name)}" for k, lab in enumerate(project.labels))
        zf.writestr("data.yaml", f"path: .\ntrain: images\nval: images\nnames:\n{names}\n")
        for img, anns in pairs:
            lines = []
            for a in anns:
                for part in a.polygons:
                    line = yolo_polygon_line(class_of[a.label_id], part["exterior"], img.width, img.height)
                    if line:
                        lines.append(line)
            zf.writestr(f"labels/{stems[img.id]}.txt", "\n".join(lines) + ("\n" if lines else ""))
            if include_images:
                ext = files.image_path(img.sha256, img.format).suffix
                zf.writestr(f"images/{stems[img.id]}{ext}", files.read_image(img.sha256, img.format))


def _png_bytes(array: np.ndarray) -> bytes:
    """PNG of a uint8 (8-bit grey) or uint16 (16-bit grey) HxW array."""
    buf = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG")
    return buf.getvalue()


def export_png(db: Session, project_id: int, out: BinaryIO, kind: str = "instance") -> None:
    """Write a zip of PNG masks (``kind`` = ``instance`` or ``semantic``) of a project to ``out``."""
    if kind not in ("instance", "semantic"):
        raise ValueError(f"kind must be 'instance' or 'semantic', got {kind!r}")
    project = db.get(Project, project_id)
    if project is None:
        raise ValueError(f"project {project_id} does not exist")
    value_of_label = {lab.id: k + 1 for k, lab in enumerate(project.labels)}
    if kind == "semantic" and len(value_of_label) > 255:
        raise ValueError(f"semantic PNG holds at most 255 labels, the project has {len(value_of_label)}")
    pairs = project_annotations(db, project_id)
    stems = unique_stems([img for img, _ in pairs])
    index: dict = {
        "kind": kind,
        "labels": [{"value": value_of_label[lab.id], "id": lab.id, "name": lab.name, "color": lab.color}
                   for lab in project.labels],
        "images": [],
    }  # fmt: skip
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for img, anns in pairs:
            dtype = np.uint16 if kind == "instance" else np.uint8
            canvas = np.zeros((img.height, img.width), dtype)
            instances = []
            for k, a in enumerate(anns, start=1):
                value = k if kind == "instance" else value_of_label[a.label_id]
                canvas[rle_decode(a.rle)] = value
                instances.append({"value": k, "annotation_id": a.id, "label_id": a.label_id})
            path = f"{kind}/{stems[img.id]}.png"
            zf.writestr(path, _png_bytes(canvas))
            entry = {"image_id": img.id, "file_name": img.file_name, "mask": path}
            if kind == "instance":
                entry["instances"] = instances
            index["images"].append(entry)
        zf.writestr("index.json", json.dumps(index, indent=1))
