"""Segmentation engines behind one interface; see :mod:`maskwright.engines.base`."""

from maskwright.engines.base import Embedding, Engine, MaskPrediction, Prompt
from maskwright.engines.registry import (
    EngineSpec,
    EngineUnavailableError,
    UnknownEngineError,
    available_engines,
    best_available,
    create_engine,
    register,
    register_resolver,
)

__all__ = [
    "Embedding",
    "Engine",
    "EngineSpec",
    "EngineUnavailableError",
    "MaskPrediction",
    "Prompt",
    "UnknownEngineError",
    "available_engines",
    "best_available",
    "create_engine",
    "register",
    "register_resolver",
]
