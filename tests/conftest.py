"""Shared fixtures: the GrabCut evaluation photos (read in place, skipped cleanly when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
GRABCUT = Path(os.environ.get("MASKWRIGHT_GRABCUT", REPO.parent / "shared" / "datasets" / "grabcut"))


def grabcut_pairs() -> list[tuple[Path, Path]]:
    """(image, mask) paths of the GrabCut set, sorted by name; empty when the set is absent."""
    if not (GRABCUT / "images").is_dir():
        return []
    masks = {p.stem: p for p in (GRABCUT / "masks").iterdir()}
    return [(p, masks[p.stem]) for p in sorted((GRABCUT / "images").iterdir()) if p.stem in masks]


@pytest.fixture(scope="session")
def grabcut() -> list[tuple[Path, Path]]:
    pairs = grabcut_pairs()
    if not pairs:
        pytest.skip(f"GrabCut dataset not found at {GRABCUT}")
    return pairs


def load_grabcut_sample(pair: tuple[Path, Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rgb, object mask, ignore mask) of one GrabCut sample."""
    from maskwright.imageio import read_image, read_mask

    rgb = read_image(pair[0])
    gt = read_mask(pair[1])
    return rgb, gt == 255, gt == 128
