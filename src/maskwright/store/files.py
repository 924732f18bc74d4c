"""File storage under the data directory: images by content hash, embeddings by cache key.

Layout::

    DATA/images/ab/abcdef....jpg          # SHA-256 of the bytes; the extension comes from the decoded format
    DATA/embeddings/<engine>-<version>/ab/abcdef....npz

Client file names never reach the file system: paths are built from hex digests only.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

FORMAT_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "BMP": "bmp", "GIF": "gif", "TIFF": "tif", "WEBP": "webp"}
MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "BMP": "image/bmp", "GIF": "image/gif",
               "TIFF": "image/tiff", "WEBP": "image/webp"}  # fmt: skip
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def safe_component(text: str) -> str:
    """Reduce ``text`` to ``[A-Za-z0-9._-]`` so it can be a single path component (engine names)."""
    out = _SAFE.sub("_", text).strip(".")
    return out or "_"


def display_name(file_name: str | None) -> str:
    """Last component of a client-supplied file name (``../../x.jpg`` -> ``x.jpg``), for display only."""
    name = (file_name or "").replace("\\", "/").split("/")[-1].strip()
    name = "".join(ch for ch in name if ch.isprintable())
    return name[:255] or "image"


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class FileStore:
    """Content-addressed files under ``root`` (created on first use)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.images_dir = self.root / "images"
        self.embeddings_dir = self.root / "embeddings"

    # --- images ----------------------------------------------------------------------------------
    def image_path(self, sha256: str, image_format: str) -> Path:
        if not _HEX64.match(sha256):
            raise ValueError(f"sha256 must be 64 lowercase hex digits, got {sha256!r}")
        ext = FORMAT_EXTENSIONS.get(image_format, "img")
        return self.images_dir / sha256[:2] / f"{sha256}.{ext}"

    def put_image(self, data: bytes, image_format: str) -> tuple[str, bool]:
        """Store image bytes; returns (sha256, newly_written). Identical bytes are stored once."""
        digest = sha256_hex(data)
        path = self.image_path(digest, image_format)
        if path.exists():
            return digest, False
        _atomic_write(path, data)
        return digest, True

    def read_image(self, sha256: str, image_format: str) -> bytes:
        return self.image_path(sha256, image_format).read_bytes()

    def delete_image(self, sha256: str, image_format: str) -> None:
        self.image_path(sha256, image_format).unlink(missing_ok=True)

    # --- embeddings ------------------------------------------------------------------------------
    def embedding_path(self, sha256: str, engine: str, engine_version: str) -> Path:
        if not _HEX64.match(sha256):
            raise ValueError(f"sha256 must be 64 lowercase hex digits, got {sha256!r}")
        folder = safe_component(f"{engine}-{engine_version}")
        return self.embeddings_dir / folder / sha256[:2] / f"{sha256}.npz"

    def has_embedding(self, sha256: str, engine: str, engine_version: str) -> bool:
        return self.embedding_path(sha256, engine, engine_version).exists()

    def put_embedding(self, sha256: str, engine: str, engine_version: str, data: bytes) -> None:
        _atomic_write(self.embedding_path(sha256, engine, engine_version), data)

    def get_embedding(self, sha256: str, engine: str, engine_version: str) -> bytes | None:
        path = self.embedding_path(sha256, engine, engine_version)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
