"""``maskwright.__getattr__``: exports ``AutoMaskGenerator`` from the top-level package on first use."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "AutoMaskGenerator":
        from maskwright.automask.generator import AutoMaskGenerator

        return AutoMaskGenerator
    raise AttributeError(f"module 'maskwright' has no attribute {name!r}")
