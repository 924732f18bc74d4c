"""Adding image files to a project (shared by the upload endpoint and ``maskwright import DIR``).

All files are decoded and checked before anything is stored, and rows are added in the caller's
transaction, so a batch with one bad file stores none of them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image as PILImage
from sqlalchemy import select
from sqlalchemy.orm import Session

from maskwright.imageio import DEFAULT_MAX_PIXELS, decode_image
from maskwright.store.files import FORMAT_EXTENSIONS, FileStore, display_name, sha256_hex
from maskwright.store.models import Image, Project

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class CheckedImage:
    file_name: str
    data: bytes
    sha256: str
    format: str
    width: int
    height: int


def check_image(data: bytes, file_name: str | None, max_pixels: int = DEFAULT_MAX_PIXELS) -> CheckedImage:
    """Decode ``data`` fully (type from content, not extension) and return what the store needs.

    Raises ``ImageTooLargeError`` past ``max_pixels`` and ``ImageDecodeError`` for corrupt or unknown data
    (both ``ValueError``); the message names the file.
    """
    name = display_name(file_name)
    if not data:
        from maskwright.imageio import ImageDecodeError

        raise ImageDecodeError(f"{name} is empty")
    rgb = decode_image(data, max_pixels=max_pixels, name=name)  # width/height after EXIF orientation
    with PILImage.open(io.BytesIO(data)) as img:
        fmt = img.format or "unknown"
    if fmt not in FORMAT_EXTENSIONS:
        from maskwright.imageio import ImageDecodeError

        raise ImageDecodeError(f"{name} is a {fmt} image; supported: {', '.join(FORMAT_EXTENSIONS)}")
    return CheckedImage(name, data, sha256_hex(data), fmt, int(rgb.shape[1]), int(rgb.shape[0]))


def add_images(db: Session, files: FileStore, project: Project, checked: list[CheckedImage]) -> list[Image]:
    """Store checked images in ``project`` (flushes, the caller commits); an image already in the project
    (same bytes) is returned as is. Returns one ``Image`` per input, in order."""
    existing = {
        img.sha256: img
        for img in db.execute(
            select(Image).where(Image.project_id == project.id, Image.sha256.in_([c.sha256 for c in checked]))
        ).scalars()
    }
    out: list[Image] = []
    for c in checked:
        img = existing.get(c.sha256)
        if img is None:
            files.put_image(c.data, c.format)  # content-addressed: rewriting identical bytes changes nothing
            img = Image(
                project_id=project.id,
                sha256=c.sha256,
                file_name=c.file_name,
                format=c.format,
                width=c.width,
                height=c.height,
                status="new",
            )
            db.add(img)
            existing[c.sha256] = img
        out.append(img)
    db.flush()
    return out
