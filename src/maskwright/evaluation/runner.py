"""Run the interactive protocol: clicker -> Predictor -> IoU, up to ``max_clicks`` clicks per sample.

Per click: the clicker looks at the current prediction (empty before the first click) and adds one
click; ``Predictor.predict`` gets all clicks so far as (x, y) points. The first call asks for three
candidates and keeps the best-scored one; later calls ask for one mask. The logits of the mask kept
are fed back as ``mask_input`` of the next call. IoU ignores the ignore pixels.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from maskwright.evaluation.clicker import Click, Clicker
from maskwright.evaluation.datasets import Sample
from maskwright.masks import iou


@dataclass
class SampleResult:
    """IoU after click 1..K (``ious[k - 1]`` after k clicks), the clicks, and seconds per predict call."""

    name: str
    ious: np.ndarray
    clicks: list[Click]
    click_seconds: list[float]
    set_image_seconds: float | None = None


@dataclass
class EngineResult:
    engine: str
    samples: list[SampleResult] = field(default_factory=list)
    set_image_seconds: list[float] = field(default_factory=list)

    @property
    def all_ious(self) -> np.ndarray:
        """(samples, max_clicks) IoU matrix."""
        return np.stack([s.ious for s in self.samples])

    @property
    def click_seconds(self) -> list[float]:
        return [t for s in self.samples for t in s.click_seconds]


def evaluate_sample(
    predictor,
    gt: np.ndarray,
    ignore: np.ndarray | None = None,
    max_clicks: int = 20,
    name: str = "",
) -> SampleResult:
    """Simulate ``max_clicks`` clicks on the image already set on ``predictor`` (a :class:`Predictor`).

    Args:
        gt: HxW bool object mask; ignore: HxW bool ignore pixels or None.
    """
    if max_clicks < 1:
        raise ValueError(f"max_clicks must be >= 1, got {max_clicks}")
    if tuple(gt.shape) != tuple(predictor.original_size):
        raise ValueError(f"gt mask {gt.shape} does not match the image set on the predictor {predictor.original_size}")
    clicker = Clicker(gt, ignore)
    pred = np.zeros(gt.shape, dtype=bool)
    logits = None
    ious = np.zeros(max_clicks, dtype=np.float64)
    seconds = []
    for k in range(max_clicks):
        clicker.make_next_click(pred)
        coords, labels = clicker.points()
        first = k == 0
        t0 = time.perf_counter()
        masks, scores, all_logits = predictor.predict(
            point_coords=coords, point_labels=labels, mask_input=logits, multimask_output=first
        )
        seconds.append(time.perf_counter() - t0)
        best = int(np.argmax(scores)) if first else 0
        pred = masks[best]
        logits = all_logits[best][None]
        ious[k] = iou(pred, gt, ignore)
    return SampleResult(name=name, ious=ious, clicks=list(clicker.clicks), click_seconds=seconds)


def evaluate_engine(
    predictor,
    samples: Iterable[Sample],
    max_clicks: int = 20,
    on_sample: Callable[[SampleResult], None] | None = None,
) -> EngineResult:
    """Evaluate one predictor on samples; ``set_image`` runs once per distinct image (timed).

    ``on_sample`` is called after each sample (e.g. to advance a progress bar).
    """
    result = EngineResult(engine=predictor.engine.name)
    current_image = None
    for sample in samples:
        set_time = None
        if sample.image_path == current_image:  # another object of the same image (COCO): no re-encode
            gt, ignore = sample.load_masks()
        else:
            rgb, gt, ignore = sample.load()
            t0 = time.perf_counter()
            predictor.set_image(rgb)
            set_time = time.perf_counter() - t0
            result.set_image_seconds.append(set_time)
            current_image = sample.image_path
        res = evaluate_sample(predictor, gt, ignore, max_clicks, name=sample.name)
        res.set_image_seconds = set_time
        result.samples.append(res)
        if on_sample is not None:
            on_sample(res)
    return result
