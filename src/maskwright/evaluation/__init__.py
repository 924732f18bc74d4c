"""Interactive-segmentation evaluation (RITM / isegm protocol): automatic clicker, NoC metrics, runner.

Evaluation is separate from models: it only uses the public :class:`maskwright.Predictor` API.
"""

from maskwright.evaluation.clicker import Click, Clicker, next_click
from maskwright.evaluation.datasets import Sample, decode_mask_values, load_dataset
from maskwright.evaluation.metrics import clicks_to_reach, mean_iou_curve, never_reached, noc, summarize
from maskwright.evaluation.runner import EngineResult, SampleResult, evaluate_engine, evaluate_sample

__all__ = [
    "Click",
    "Clicker",
    "EngineResult",
    "Sample",
    "SampleResult",
    "clicks_to_reach",
    "decode_mask_values",
    "evaluate_engine",
    "evaluate_sample",
    "load_dataset",
    "mean_iou_curve",
    "never_reached",
    "next_click",
    "noc",
    "summarize",
]
