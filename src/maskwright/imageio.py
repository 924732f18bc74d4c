"""Reading images from files and bytes into HxWx3 uint8 RGB arrays, with clear errors."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 100_000_000  # 100 MP


class ImageTooLargeError(ValueError):
    """The image has more pixels than the configured limit."""


class ImageDecodeError(ValueError):
    """The bytes are not a readable image."""


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "image") -> np.ndarray:
    """Decode image bytes (any format Pillow reads) into HxWx3 uint8 RGB, honouring EXIF orientation.

    Raises :class:`ImageTooLargeError` past ``max_pixels`` (checked from the header, before decoding)
    and :class:`ImageDecodeError` for bytes that are not a readable image.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise ImageTooLargeError(
                    f"{name} is {w}x{h} = {w * h / 1e6:.1f} MP, over the limit of {max_pixels / 1e6:.0f} MP"
                )
            img = ImageOps.exif_transpose(img)
            rgb = np.asarray(img.convert("RGB"))
    except ImageTooLargeError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"{name} is not a readable image: {exc}") from exc
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB; ``FileNotFoundError`` / ``ValueError`` with the path."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image file not found: {p}")
    return decode_image(p.read_bytes(), max_pixels=max_pixels, name=str(p))


def read_mask(path: str | Path) -> np.ndarray:
    """Read a single-channel mask file as a 2-D uint8 array (palette PNGs give their indices)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"mask file not found: {p}")
    try:
        with Image.open(p) as img:
            if img.mode not in ("L", "P", "1", "I", "I;16"):
                img = img.convert("L")
            arr = np.asarray(img)
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageDecodeError(f"{p} is not a readable mask image: {exc}") from exc
    if arr.ndim != 2:
        raise ImageDecodeError(f"{p} must be a single-channel mask, got shape {arr.shape}")
    return arr.astype(np.uint8) if arr.dtype != np.uint8 and arr.max() <= 255 else arr


def write_png(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 HxW or HxWx3 (RGB) array as PNG."""
    Image.fromarray(np.asarray(array)).save(str(path), format="PNG")
