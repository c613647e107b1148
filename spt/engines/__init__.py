"""The generation engine registry: every module of this package that defines `FACTORY` is one engine.

Adding an engine is adding one file here with `FACTORY = MyFactory()` implementing
`spt.engines.base.EngineFactory` (and an `Engine` it opens); nothing else changes. Modules are imported
on first lookup and must not import torch, transformers, vllm or openai at module level, so `spt --help`
never pays for them.
"""

from __future__ import annotations

import importlib
import pkgutil

from spt.engines.base import (
    FAILED,
    OK,
    Engine,
    EngineFactory,
    EngineSpec,
    GenerationRequest,
    GenerationResult,
    OnResults,
)
from spt.errors import SptError

DEFAULT_ENGINE = "hf"

_REGISTRY: dict[str, EngineFactory] = {}


def _discover() -> dict[str, EngineFactory]:
    if not _REGISTRY:
        for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
            if mod.name == "base" or mod.name.startswith("_"):
                continue
            factory = getattr(importlib.import_module(f"{__name__}.{mod.name}"), "FACTORY", None)
            if factory is not None:
                register(factory)
    return _REGISTRY


def register(factory: EngineFactory) -> EngineFactory:
    """Register an engine under its `name` (also for engines defined outside this package)."""
    if not isinstance(factory, EngineFactory):
        raise TypeError(f"{factory!r} does not implement spt.engines.base.EngineFactory")
    other = _REGISTRY.get(factory.name)
    if other is not None and other is not factory:
        raise ValueError(f"two engines are named {factory.name!r}")
    _REGISTRY[factory.name] = factory
    return factory


def engines() -> dict[str, EngineFactory]:
    """Every registered engine by name."""
    return dict(_discover())


def get_engine(name: str) -> EngineFactory:
    """The engine called `name`; SptError naming the known ones otherwise."""
    found = _discover().get(name)
    if found is None:
        raise SptError(f"unknown engine {name!r}; use one of {', '.join(sorted(_discover()))}")
    return found


def open_engine(spec: EngineSpec) -> Engine:
    """Validate and open `spec`; SptError (one line, with the fix) when the engine cannot run here."""
    factory = get_engine(spec.engine)
    missing = factory.available()
    if missing:
        raise SptError(missing)
    factory.validate(spec)
    return factory.open(spec)


__all__ = ["DEFAULT_ENGINE", "FAILED", "OK", "Engine", "EngineFactory", "EngineSpec", "GenerationRequest",
           "GenerationResult", "OnResults", "engines", "get_engine", "open_engine", "register"]
