"""maskwright: SAM-assisted image segmentation for annotation teams."""

from maskwright.predictor import Predictor

__version__ = "0.1.0"
__all__ = ["Predictor", "__version__"]
