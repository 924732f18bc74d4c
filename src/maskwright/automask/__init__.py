"""Segment everything: :class:`AutoMaskGenerator` and the array helpers it is built from.

Imports are lazy so ``import maskwright`` stays light (no OpenCV / scikit-image until first use).
"""

from __future__ import annotations

from typing import Any

__all__ = ["AutoMaskGenerator", "Proposals"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from maskwright.automask import generator

        return getattr(generator, name)
    raise AttributeError(f"module 'maskwright.automask' has no attribute {name!r}")
