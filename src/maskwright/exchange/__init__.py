"""Import and export of annotations (COCO, YOLO-seg, PNG masks) as plain functions for CLI and server."""

from __future__ import annotations

import json
from typing import BinaryIO

from sqlalchemy.orm import Session

from maskwright.exchange.archives import export_png, export_yolo
from maskwright.exchange.coco import ImportResult, export_coco, export_events, import_coco
from maskwright.exchange.images import CheckedImage, add_images, check_image
from maskwright.store.files import FileStore

#: export format -> (media type, file extension)
EXPORT_FORMATS = {
    "coco": ("application/json", "json"),
    "coco-polygons": ("application/json", "json"),
    "yolo": ("application/zip", "zip"),
    "png-instance": ("application/zip", "zip"),
    "png-semantic": ("application/zip", "zip"),
    "events": ("application/json", "json"),  # the interaction log (not annotations)
}
# Short names the CLI accepts too.
FORMAT_ALIASES = {"png": "png-instance", "yolo-seg": "yolo", "coco-rle": "coco"}


def normalise_format(fmt: str) -> str:
    fmt = FORMAT_ALIASES.get(fmt, fmt)
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    return fmt


def export_project(db: Session, files: FileStore, project_id: int, fmt: str, out: BinaryIO) -> str:
    """Write the export of a project in ``fmt`` to the binary file ``out``; returns its media type."""
    fmt = normalise_format(fmt)
    if fmt in ("coco", "coco-polygons"):
        out.write(json.dumps(export_coco(db, project_id, polygons=fmt == "coco-polygons")).encode())
    elif fmt == "events":
        out.write(json.dumps(export_events(db, project_id)).encode())
    elif fmt == "yolo":
        export_yolo(db, files, project_id, out)
    else:
        export_png(db, project_id, out, kind=fmt.split("-", 1)[1])
    return EXPORT_FORMATS[fmt][0]


__all__ = [
    "EXPORT_FORMATS",
    "CheckedImage",
    "ImportResult",
    "add_images",
    "check_image",
    "export_coco",
    "export_events",
    "export_png",
    "export_project",
    "export_yolo",
    "import_coco",
    "normalise_format",
]
