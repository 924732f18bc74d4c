"""The public prediction API, with ``segment_anything.SamPredictor`` semantics.

    p = Predictor("classic")
    p.set_image(rgb)                       # HxWx3 uint8 RGB; embedding computed once (and cached)
    masks, scores, logits = p.predict(point_coords=[[x, y]], point_labels=[1])

Validation and coordinate conventions live here; model maths lives in the engines.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict

import numpy as np

from maskwright.engines.base import LOWRES, Embedding, Engine, MaskPrediction, Prompt
from maskwright.engines.registry import best_available, create_engine

log = logging.getLogger(__name__)


def validate_image(image: np.ndarray, image_format: str = "RGB") -> np.ndarray:
    """Return ``image`` as a contiguous HxWx3 uint8 RGB array or raise ``ValueError``."""
    if image_format not in ("RGB", "BGR"):
        raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array (HxWx3 uint8 RGB), got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must have shape (H, W, 3) (RGB), got {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f"image must be at least 2x2 pixels, got {image.shape[1]}x{image.shape[0]}")
    if image_format == "BGR":
        image = image[..., ::-1]
    return np.ascontiguousarray(image)


def validate_prompt(
    original_size: tuple[int, int],
    point_coords=None,
    point_labels=None,
    box=None,
    mask_input=None,
) -> Prompt:
    """Check a prompt against an image of ``original_size`` (H, W) and return it as a :class:`Prompt`."""
    h, w = original_size
    coords = labels = box_arr = mask_arr = None
    if (point_coords is None) != (point_labels is None):
        raise ValueError("point_coords and point_labels must be given together")
    if point_coords is not None:
        coords = np.asarray(point_coords, dtype=np.float32)
        labels = np.asarray(point_labels)
        if coords.ndim != 2 or coords.shape[1] != 2:
            raise ValueError(f"point_coords must have shape (N, 2) as (x, y) pixels, got {coords.shape}")
        if labels.ndim != 1 or len(labels) != len(coords):
            raise ValueError(
                f"point_labels must have shape (N,) = ({len(coords)},) matching point_coords, got {labels.shape}"
            )
        if not np.all(np.isin(labels, (0, 1))):
            raise ValueError(f"point_labels must be 1 (positive) or 0 (negative), got {labels.tolist()}")
        if not np.all(np.isfinite(coords)):
            raise ValueError("point_coords must be finite numbers")
        bad = (coords[:, 0] < 0) | (coords[:, 0] >= w) | (coords[:, 1] < 0) | (coords[:, 1] >= h)
        if bad.any():
            x, y = coords[np.argmax(bad)].tolist()
            raise ValueError(f"point ({x:g}, {y:g}) is outside the image: x must be in [0, {w}) and y in [0, {h})")
        labels = labels.astype(np.int32)
        if len(coords) == 0:
            coords = labels = None
    if box is not None:
        box_arr = np.asarray(box, dtype=np.float32).reshape(-1)
        if box_arr.shape != (4,):
            raise ValueError(f"box must be 4 numbers XYXY, got shape {np.asarray(box).shape}")
        x0, y0, x1, y1 = box_arr.tolist()
        if not np.all(np.isfinite(box_arr)):
            raise ValueError("box must be finite numbers")
        if not (x0 < x1 and y0 < y1):
            raise ValueError(f"box must be XYXY with x0 < x1 and y0 < y1, got {box_arr.tolist()}")
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            raise ValueError(f"box {box_arr.tolist()} is outside the image: XYXY must lie within [0, {w}] x [0, {h}]")
    if mask_input is not None:
        mask_arr = np.asarray(mask_input, dtype=np.float32)
        if mask_arr.shape == (LOWRES, LOWRES):
            mask_arr = mask_arr[None]
        if mask_arr.shape != (1, LOWRES, LOWRES):
            raise ValueError(
                f"mask_input must be low-res logits of shape (1, {LOWRES}, {LOWRES}), got {mask_arr.shape}"
            )
    if coords is None and box_arr is None and mask_arr is None:
        raise ValueError("empty prompt: give point_coords/point_labels, a box, or mask_input")
    return Prompt(point_coords=coords, point_labels=labels, box=box_arr, mask_input=mask_arr)


def image_key(image: np.ndarray) -> str:
    """Content hash of an image array (shape included), used as the embedding cache key."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str(image.shape).encode())
    h.update(memoryview(np.ascontiguousarray(image)).cast("B"))
    return h.hexdigest()


class Predictor:
    """Set an image once, predict masks for many prompts (``SamPredictor`` semantics).

    Args:
        engine: registry name (``"classic"``, ``"sam-vit-base"``, ...), a local model directory, an
            :class:`Engine` instance, or None for the best engine available here.
        cache_size: how many image embeddings to keep in memory (LRU), so returning to a
            recent image does not recompute its embedding.
    """

    def __init__(self, engine: str | Engine | None = None, cache_size: int = 4) -> None:
        if engine is None:
            name = best_available()
            if name == "classic":
                log.warning("no SAM weights found: using the weight-free 'classic' engine")
            engine = name
        self.engine: Engine = create_engine(engine) if isinstance(engine, str) else engine
        self.cache_size = max(0, int(cache_size))
        self._cache: OrderedDict[str, Embedding] = OrderedDict()
        self._embedding: Embedding | None = None

    # --- image -----------------------------------------------------------------------------------
    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Compute (or fetch from cache) the embedding of an HxWx3 uint8 image."""
        image = validate_image(image, image_format)
        key = image_key(image)
        emb = self._cache.get(key)
        if emb is None:
            emb = self.engine.embed(image)
            if self.cache_size:
                self._cache[key] = emb
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        self._embedding = emb

    def set_embedding(self, embedding: Embedding) -> None:
        """Use a precomputed embedding (e.g. loaded from disk with ``Embedding.from_bytes``)."""
        if embedding.engine != self.engine.name or embedding.engine_version != self.engine.version:
            raise ValueError(
                f"embedding was computed by {embedding.engine!r} v{embedding.engine_version}, "
                f"not by this predictor's {self.engine.name!r} v{self.engine.version}"
            )
        self._embedding = embedding

    def get_image_embedding(self) -> Embedding:
        if self._embedding is None:
            raise RuntimeError("no image is set: call set_image() before this")
        return self._embedding

    @property
    def is_image_set(self) -> bool:
        return self._embedding is not None

    @property
    def original_size(self) -> tuple[int, int]:
        """(H, W) of the current image."""
        return tuple(self.get_image_embedding().original_size)

    def reset_image(self) -> None:
        self._embedding = None

    # --- prompts ---------------------------------------------------------------------------------
    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predict masks for a prompt on the current image.

        Args:
            point_coords: (N, 2) (x, y) pixels of the original image.
            point_labels: (N,) 1 = positive, 0 = negative.
            box: (4,) XYXY pixels.
            mask_input: (1, 256, 256) low-res logits from a previous call.
            multimask_output: 3 candidates if True, else 1.
        Returns:
            masks (K, H, W) bool, scores (K,) float32 predicted IoU, logits (K, 256, 256) float32;
            candidates sorted as the engine returns them (use ``scores`` to pick).
        """
        emb = self.get_image_embedding()
        prompt = validate_prompt(emb.original_size, point_coords, point_labels, box, mask_input)
        pred = self.engine.decode(emb, prompt, bool(multimask_output))
        check_prediction(pred, emb.original_size, 3 if multimask_output else 1)
        return pred.masks, pred.scores, pred.logits


def check_prediction(pred: MaskPrediction, original_size: tuple[int, int], k: int) -> None:
    """Guard the engine contract (cheap checks only; the click path must stay fast)."""
    h, w = original_size
    if pred.masks.shape != (k, h, w) or pred.masks.dtype != bool:
        raise RuntimeError(
            f"engine returned masks {pred.masks.shape} {pred.masks.dtype}, expected ({k}, {h}, {w}) bool"
        )
    if pred.scores.shape != (k,) or pred.logits.shape != (k, LOWRES, LOWRES):
        raise RuntimeError(f"engine returned scores {pred.scores.shape} / logits {pred.logits.shape}")
