"""maskwright: SAM-assisted image segmentation for annotation teams."""

from maskwright.automask._lazy import __getattr__  # noqa: F401  (AutoMaskGenerator, imported on first use)
from maskwright.predictor import Predictor

__version__ = "0.1.0"
__all__ = ["Predictor", "__version__"]
