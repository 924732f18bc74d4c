"""The synthetic scenes the tiny SAM is trained and tested on (tools/synthetic_shapes.py)."""

from __future__ import annotations

import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from synthetic_shapes import MIN_COLOR_DISTANCE, make_scene  # noqa: E402


@pytest.mark.parametrize("distance", [70.0, MIN_COLOR_DISTANCE])
def test_colors_keep_their_distance(distance):
    closest = []
    for seed in range(20):
        scene = make_scene(np.random.default_rng(seed), 240, 320, n_shapes=4, min_color_distance=distance)
        assert len(scene.colors) == len(scene.masks) + 1  # the background's, then one per shape
        closest.append(min(np.linalg.norm(a - b) for a, b in combinations(scene.colors, 2)))
    assert min(closest) >= distance, f"closest colors per scene: {np.round(closest, 1).tolist()}"


def test_colors_are_the_shapes_colors():
    """Each base color is its shape's: the visible pixels' mean lies near it (textures are zero-mean)."""
    scene = make_scene(np.random.default_rng(7), 300, 400, n_shapes=4)
    for i, mask in enumerate(scene.masks, start=1):
        distances = np.linalg.norm(scene.colors - scene.image[mask].mean(0), axis=1)
        assert distances[i] < 30 < np.delete(distances, i).min(), np.round(distances, 1).tolist()
