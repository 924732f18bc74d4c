"""Pure functions on masks (bool HxW arrays): RLE, polygons, cleanup, geometry.

Conventions follow COCO / segment-anything: boxes out are XYWH in pixels, polygons are flat
``[x0, y0, x1, y1, ...]`` lists in pixel coordinates, RLE is COCO compressed RLE (``counts`` as str).
Nothing here imports torch.
"""

from maskwright.masks.cleanup import clean_mask, remove_small_regions
from maskwright.masks.geometry import area, bbox_xywh, bbox_xyxy, iou
from maskwright.masks.polygons import coco_segmentation, mask_to_polygons, polygons_to_mask, simplify_polygons
from maskwright.masks.rle import rle_area, rle_decode, rle_encode, rle_to_bbox

__all__ = [
    "area",
    "clean_mask",
    "coco_segmentation",
    "bbox_xywh",
    "bbox_xyxy",
    "iou",
    "mask_to_polygons",
    "polygons_to_mask",
    "remove_small_regions",
    "rle_area",
    "rle_decode",
    "rle_encode",
    "rle_to_bbox",
    "simplify_polygons",
]
