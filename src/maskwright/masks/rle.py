"""COCO compressed RLE through pycocotools.

An RLE here is the COCO dict ``{"size": [H, W], "counts": str}``; ``counts`` is decoded to ``str``
so it is JSON-serialisable as is.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from maskwright.masks.validation import as_bool_mask

RLE = dict


def rle_encode(mask: np.ndarray) -> RLE:
    """Encode a bool HxW mask as COCO compressed RLE with ``counts`` as ``str``."""
    m = as_bool_mask(mask)
    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"]}


def _to_pycoco(rle: RLE) -> dict:
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError(f"rle must be a dict with 'size' and 'counts', got {type(rle).__name__}")
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed RLE, as in COCO iscrowd annotations
        return mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return {"size": [h, w], "counts": counts}


def rle_decode(rle: RLE) -> np.ndarray:
    """Decode a COCO RLE (compressed or uncompressed) into a bool HxW mask."""
    return mask_utils.decode(_to_pycoco(rle)).astype(bool)


def rle_area(rle: RLE) -> int:
    """Number of foreground pixels of an RLE, without decoding it."""
    return int(mask_utils.area(_to_pycoco(rle)))


def rle_to_bbox(rle: RLE) -> list[float]:
    """XYWH box of an RLE (COCO convention: ``[x, y, w, h]`` in pixels)."""
    return [float(v) for v in mask_utils.toBbox(_to_pycoco(rle))]
