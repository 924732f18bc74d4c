"""Engine registry: names -> factories, with availability checks that never load a model.

Engine families register :class:`EngineSpec` entries at import of their *light* module (no torch
import at module level), so listing engines is cheap. Local model directories are resolved by
``path resolvers`` that families register too.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from maskwright.engines.base import Engine

log = logging.getLogger(__name__)

# Modules that register engines when imported. A module that fails to import (missing optional
# dependency) simply contributes no engines; the reason is kept for `maskwright engines`.
FAMILY_MODULES = ["maskwright.engines.classic", "maskwright.engines.sam_registry"]


class UnknownEngineError(ValueError):
    """The requested engine name is not registered (and is not a model directory)."""


class EngineUnavailableError(RuntimeError):
    """The engine is known but cannot run here (missing weights or dependencies)."""


@dataclass
class EngineSpec:
    name: str
    family: str
    description: str
    factory: Callable[[], Engine]
    #: returns (available, reason); must be cheap (no model loading)
    availability: Callable[[], tuple[bool, str]] = lambda: (True, "")
    #: higher wins when picking the default engine among available ones
    priority: int = 0


_SPECS: dict[str, EngineSpec] = {}
_RESOLVERS: list[Callable[[str], Engine | None]] = []
_FAMILY_ERRORS: dict[str, str] = {}
_loaded = False


def register(spec: EngineSpec) -> None:
    _SPECS[spec.name] = spec


def register_resolver(resolver: Callable[[str], Engine | None]) -> None:
    """Add a function that turns a string (e.g. a local model directory) into an engine, or None."""
    _RESOLVERS.append(resolver)


def _load_families() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in FAMILY_MODULES:
        try:
            importlib.import_module(mod)
        except ImportError as exc:
            _FAMILY_ERRORS[mod] = str(exc)
            log.debug("engine family %s not loaded: %s", mod, exc)


def specs() -> list[EngineSpec]:
    _load_families()
    return list(_SPECS.values())


def get_spec(name: str) -> EngineSpec:
    _load_families()
    try:
        return _SPECS[name]
    except KeyError:
        known = ", ".join(sorted(_SPECS)) or "none"
        raise UnknownEngineError(f"unknown engine {name!r}; known engines: {known}") from None


def create_engine(name: str) -> Engine:
    """Instantiate an engine by registry name or by local model directory."""
    _load_families()
    if name in _SPECS:
        spec = _SPECS[name]
        ok, reason = spec.availability()
        if not ok:
            raise EngineUnavailableError(f"engine {name!r} is not available here: {reason}")
        return spec.factory()
    for resolver in _RESOLVERS:
        engine = resolver(name)
        if engine is not None:
            return engine
    get_spec(name)  # raises UnknownEngineError with the list of names
    raise AssertionError("unreachable")


def available_engines() -> list[tuple[EngineSpec, bool, str]]:
    """Every registered engine with (available, reason)."""
    out = []
    for spec in specs():
        try:
            ok, reason = spec.availability()
        except Exception as exc:  # an availability probe must never break listing
            ok, reason = False, f"availability check failed: {exc}"
        out.append((spec, ok, reason))
    return out


def best_available() -> str:
    """Name of the highest-priority available engine (``classic`` is always available)."""
    ranked = sorted(((s, ok) for s, ok, _ in available_engines() if ok), key=lambda t: -t[0].priority)
    return ranked[0][0].name if ranked else "classic"


def family_errors() -> dict[str, str]:
    _load_families()
    return dict(_FAMILY_ERRORS)
