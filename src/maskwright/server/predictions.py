"""Prediction handles: the low-res logits of recent predict responses, kept for the next click."""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict

import numpy as np


class PredictionCache:
    """Bounded LRU of ``handle -> (image_id, logits (K, 256, 256) float32)``."""

    def __init__(self, max_items: int = 64) -> None:
        self.max_items = max(1, int(max_items))
        self._items: OrderedDict[str, tuple[int, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, image_id: int, logits: np.ndarray) -> str:
        handle = secrets.token_urlsafe(9)
        with self._lock:
            self._items[handle] = (image_id, logits)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return handle

    def get(self, mask_handle: str, image_id: int) -> np.ndarray:
        """Logits ``(1, 256, 256)`` of ``"<handle>:<candidate index>"``; ``ValueError`` if unknown or stale."""
        handle, sep, index = (mask_handle or "").rpartition(":")
        if not sep or not index.isdigit():
            raise ValueError(f"mask_handle must be '<handle>:<candidate index>', got {mask_handle!r}")
        with self._lock:
            item = self._items.get(handle)
            if item is not None:
                self._items.move_to_end(handle)
        if item is None:
            raise ValueError(f"mask_handle {mask_handle!r} is unknown or expired: predict again without it")
        owner, logits = item
        if owner != image_id:
            raise ValueError(f"mask_handle {mask_handle!r} belongs to image {owner}, not image {image_id}")
        k = int(index)
        if k >= len(logits):
            raise ValueError(f"mask_handle candidate index must be in [0, {len(logits)}), got {k}")
        return logits[k : k + 1]

    def __len__(self) -> int:
        return len(self._items)
