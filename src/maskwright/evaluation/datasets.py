"""Evaluation datasets: an ``images/`` + ``masks/`` folder, or a COCO instances JSON.

Ground-truth conventions:

* A mask file whose values are within {0, 128, 255} and that contains 255 follows the GrabCut/Berkeley
  convention: 255 = object, 0 = background, 128 = ignore.
* Any other mask file (palette PNG, 0/1 PNG, ...) counts every value > 0 as object, with no ignore region.
* A COCO JSON gives one sample per non-crowd instance (polygons or RLE), with no ignore region.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from maskwright.imageio import read_image, read_mask

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
MASK_SUFFIXES = {".png", ".bmp", ".tif", ".tiff", ".gif", ".pgm", ".jpg", ".jpeg"}
GRABCUT_VALUES = (0, 128, 255)


@dataclass
class Sample:
    """One object to segment: an image file and a way to get its (object, ignore) masks."""

    name: str
    image_path: Path
    size: tuple[int, int]  # (H, W)
    load_masks: Callable[[], tuple[np.ndarray, np.ndarray]] = field(repr=False)

    def load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(HxWx3 uint8 RGB image, HxW bool object mask, HxW bool ignore mask)."""
        rgb = read_image(self.image_path)
        gt, ignore = self.load_masks()
        if gt.shape != rgb.shape[:2]:
            raise ValueError(
                f"sample {self.name}: mask is {gt.shape[1]}x{gt.shape[0]} but image {self.image_path} is "
                f"{rgb.shape[1]}x{rgb.shape[0]}"
            )
        return rgb, gt, ignore


def decode_mask_values(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(object, ignore) bool masks of a 2-D mask image, following the conventions of this module."""
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"mask must be a 2-D array, got shape {values.shape}")
    present = np.unique(values)
    if 255 in present and np.isin(present, GRABCUT_VALUES).all():
        return values == 255, values == 128
    return values > 0, np.zeros(values.shape, dtype=bool)


def load_dataset(path: str | Path, images_dir: str | Path | None = None) -> list[Sample]:
    """Samples of a dataset folder (``images/`` + ``masks/`` matched by file stem) or a COCO JSON file.

    Sizes of images and masks are checked from the file headers here, so a bad pair fails before a long
    run starts. Raises ``FileNotFoundError`` / ``ValueError`` naming the file and the problem.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset not found: {path}")
    if path.is_file():
        if path.suffix.lower() != ".json":
            raise ValueError(f"dataset must be a folder with images/ and masks/ or a COCO .json file, got {path}")
        return load_coco(path, images_dir)
    if images_dir is not None:
        raise ValueError("--images only applies to a COCO JSON dataset, not to a folder")
    return load_folder(path)


def load_folder(root: Path) -> list[Sample]:
    """Samples of ``root/images/NAME.ext`` paired with ``root/masks/NAME.ext``, sorted by name."""
    img_dir, mask_dir = root / "images", root / "masks"
    for d in (img_dir, mask_dir):
        if not d.is_dir():
            raise ValueError(f"dataset folder {root} must contain images/ and masks/ subfolders; {d} is missing")
    images = _files_by_stem(img_dir, IMAGE_SUFFIXES)
    masks = _files_by_stem(mask_dir, MASK_SUFFIXES)
    stems = sorted(set(images) & set(masks))
    if not stems:
        raise ValueError(
            f"dataset folder {root} has no image/mask pairs: {len(images)} image(s) in images/ and "
            f"{len(masks)} mask(s) in masks/ share no file name stem"
        )
    samples = []
    for stem in stems:
        img_size = image_size(images[stem])
        mask_size = image_size(masks[stem], exif=False)
        if img_size != mask_size:
            raise ValueError(
                f"size mismatch: image {images[stem]} is {img_size[1]}x{img_size[0]} but mask {masks[stem]} "
                f"is {mask_size[1]}x{mask_size[0]} (W x H)"
            )
        mask_path = masks[stem]
        samples.append(Sample(stem, images[stem], img_size, lambda p=mask_path: decode_mask_values(read_mask(p))))
    return samples


def load_coco(json_path: Path, images_dir: str | Path | None = None) -> list[Sample]:
    """One sample per non-crowd instance of a COCO instances JSON, sorted by image then annotation id.

    ``file_name`` of each image is resolved against ``images_dir`` if given, else the JSON's folder.
    """
    from pycocotools import mask as mask_utils

    try:
        data = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{json_path} is not a readable JSON file: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or "annotations" not in data:
        raise ValueError(f"{json_path} is not a COCO instances file: expected 'images' and 'annotations' lists")
    base = Path(images_dir) if images_dir is not None else json_path.parent
    if not base.is_dir():
        raise FileNotFoundError(f"images folder not found: {base}")
    images = {}
    for entry in data["images"]:
        try:
            images[entry["id"]] = (str(entry["file_name"]), int(entry["height"]), int(entry["width"]))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{json_path}: image entry needs id, file_name, height, width; got {entry!r}") from None
    checked: dict[int, Path] = {}
    samples = []
    anns = sorted(data["annotations"], key=lambda a: (str(images.get(a.get("image_id"), ("",))[0]), a.get("id", 0)))
    for ann in anns:
        if ann.get("iscrowd", 0):
            continue
        if ann.get("image_id") not in images or "segmentation" not in ann:
            raise ValueError(f"{json_path}: annotation {ann.get('id')} has no known image_id or no segmentation")
        file_name, h, w = images[ann["image_id"]]
        if ann["image_id"] not in checked:
            img_path = base / file_name
            if not img_path.is_file():
                raise FileNotFoundError(f"image of {json_path} not found: {img_path}")
            real = image_size(img_path)
            if real != (h, w):
                raise ValueError(
                    f"size mismatch: image {img_path} is {real[1]}x{real[0]} but {json_path} says {w}x{h} (W x H)"
                )
            checked[ann["image_id"]] = img_path
        segm = ann["segmentation"]

        def load_masks(segm=segm, h=h, w=w) -> tuple[np.ndarray, np.ndarray]:
            if isinstance(segm, list):  # polygons
                rle = mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
            elif isinstance(segm.get("counts"), list):  # uncompressed RLE
                rle = mask_utils.frPyObjects(segm, h, w)
            else:
                rle = dict(
                    segm, counts=segm["counts"].encode("ascii") if isinstance(segm["counts"], str) else segm["counts"]
                )
            gt = mask_utils.decode(rle).astype(bool)
            return gt, np.zeros_like(gt)

        stem = Path(file_name).stem
        samples.append(Sample(f"{stem}#{ann.get('id')}", checked[ann["image_id"]], (h, w), load_masks))
    if not samples:
        raise ValueError(f"{json_path} has no (non-crowd) instance annotations to evaluate")
    return samples


def image_size(path: Path, exif: bool = True) -> tuple[int, int]:
    """(H, W) of an image file from its header (after EXIF rotation if ``exif``); ValueError if unreadable."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            if exif and img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # orientations that swap W and H
                w, h = h, w
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path} is not a readable image: {exc}") from None
    return h, w


def _files_by_stem(folder: Path, suffixes: set[str]) -> dict[str, Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    out: dict[str, Path] = {}
    for p in files:
        if p.suffix.lower() in suffixes:
            out.setdefault(p.stem, p)
    return out
