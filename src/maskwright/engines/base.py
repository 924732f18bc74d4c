"""The engine interface: image -> embedding once, then prompts + embedding -> masks, many times.

Coordinate conventions (as in segment-anything): images are HxWx3 uint8 RGB; points are ``(x, y)``
pixels of the original image; boxes are XYXY pixels; masks are bool HxW at the original size; low-res
logits are ``(K, 256, 256)`` float32 covering the image resized so its longest side is 256 and padded at
the bottom/right (see :mod:`maskwright.engines.transforms`), so they can be fed back as ``mask_input``.
"""

from __future__ import annotations

import io
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

LOWRES = 256  # side of the low-resolution logit maps


@dataclass
class Embedding:
    """What an engine computes once per image; opaque to callers but serialisable to bytes.

    ``arrays`` holds every tensor as a numpy array (e.g. SAM's 256x64x64 image embedding, SAM 2's
    multi-level features, classic's feature maps); ``meta`` holds JSON-serialisable scalars.
    """

    engine: str
    engine_version: str
    original_size: tuple[int, int]  # (H, W)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.arrays.values()))

    def to_bytes(self) -> bytes:
        """Serialise to an uncompressed ``.npz`` (fast to write and to read back)."""
        header = {
            "engine": self.engine,
            "engine_version": self.engine_version,
            "original_size": list(self.original_size),
            "meta": self.meta,
        }
        buf = io.BytesIO()
        arrays = {f"a_{k}": v for k, v in self.arrays.items()}
        np.savez(buf, __header__=np.frombuffer(json.dumps(header).encode(), np.uint8), **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Embedding:
        """Inverse of :meth:`to_bytes`; raises ``ValueError`` on bytes that are not an embedding."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                header = json.loads(npz["__header__"].tobytes().decode())
                arrays = {k[2:]: npz[k] for k in npz.files if k.startswith("a_")}
        except Exception as exc:  # np.load raises several types on garbage
            raise ValueError(f"data is not a serialised maskwright embedding: {exc}") from exc
        return cls(
            engine=header["engine"],
            engine_version=header["engine_version"],
            original_size=tuple(header["original_size"]),
            arrays=arrays,
            meta=header.get("meta", {}),
        )


@dataclass
class Prompt:
    """A validated prompt in original-image pixel coordinates.

    point_coords: (N, 2) float32 XY, or None. point_labels: (N,) int32, 1 positive / 0 negative.
    box: (4,) float32 XYXY, or None. mask_input: (1, 256, 256) float32 logits, or None.
    """

    point_coords: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    box: np.ndarray | None = None
    mask_input: np.ndarray | None = None

    @property
    def n_points(self) -> int:
        return 0 if self.point_coords is None else int(len(self.point_coords))


@dataclass
class MaskPrediction:
    """masks: (K, H, W) bool at the original size; scores: (K,) float32 predicted IoU in [0, 1];
    logits: (K, 256, 256) float32 low-resolution logits."""

    masks: np.ndarray
    scores: np.ndarray
    logits: np.ndarray


class Engine(ABC):
    """A segmentation model family behind one interface.

    Subclasses implement :meth:`embed` (slow, once per image) and :meth:`decode` (fast, per prompt).
    ``decode`` receives prompts already validated by :class:`maskwright.Predictor`.
    """

    #: registry name, e.g. ``"classic"`` or ``"sam-vit-base"``
    name: str = "engine"
    #: changes whenever embeddings of an older version would no longer be valid (cache keys use it)
    version: str = "0"
    #: whether :meth:`decode_batch` is faster than looping over :meth:`decode`
    supports_batch: bool = False

    @abstractmethod
    def embed(self, image: np.ndarray) -> Embedding:
        """Compute the embedding of an HxWx3 uint8 RGB image."""

    @abstractmethod
    def decode(self, embedding: Embedding, prompt: Prompt, multimask_output: bool) -> MaskPrediction:
        """Decode one prompt: K = 3 candidates if ``multimask_output`` else 1."""

    def decode_batch(self, embedding: Embedding, prompts: list[Prompt], multimask_output: bool) -> list[MaskPrediction]:
        """Decode several independent prompts (used by segment-everything). Default: a loop."""
        return [self.decode(embedding, p, multimask_output) for p in prompts]

    def describe(self) -> str:
        return self.name
