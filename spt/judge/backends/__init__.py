"""The judge backend registry: every module of this package that defines `BACKEND` is one backend.

Adding a backend is adding one file here with a `BACKEND = MyBackend()` object implementing
`spt.judge.backends.base.Backend`; nothing else changes (`keyword_any.py` is a 43-line example).
Modules are imported on the first lookup, so `spt --help` never pays for them; they must not import
heavy libraries (torch, transformers, openai) at module level either.
"""

from __future__ import annotations

import importlib
import pkgutil

from spt.errors import SptError
from spt.judge.backends.base import (
    TRANSPORT_REASONS,
    Backend,
    BaseBackend,
    BatchReport,
    Emit,
    JudgeContext,
    Outcome,
)

_REGISTRY: dict[str, Backend] = {}


def _discover() -> dict[str, Backend]:
    if not _REGISTRY:
        for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
            if mod.name == "base" or mod.name.startswith("_"):
                continue
            backend = getattr(importlib.import_module(f"{__name__}.{mod.name}"), "BACKEND", None)
            if backend is not None:
                register(backend)
    return _REGISTRY


def register(backend: Backend) -> Backend:
    """Register a backend under its `name` (also for backends defined outside this package)."""
    if not isinstance(backend, Backend):
        raise TypeError(f"{backend!r} does not implement spt.judge.backends.base.Backend")
    other = _REGISTRY.get(backend.name)
    if other is not None and other is not backend:
        raise ValueError(f"two judge backends are named {backend.name!r}")
    _REGISTRY[backend.name] = backend
    return backend


def backends() -> dict[str, Backend]:
    """Every registered backend by name."""
    return dict(_discover())


def get_backend(name: str) -> Backend:
    """The backend called `name`; SptError naming the known ones otherwise."""
    found = _discover().get(name)
    if found is None:
        raise SptError(f"unknown judge backend {name!r}; use {usage()}")
    return found


def usage() -> str:
    """How each runnable backend is spelled, for error messages."""
    return ", ".join(b.usage for b in _discover().values() if b.usage)


__all__ = ["TRANSPORT_REASONS", "Backend", "BaseBackend", "BatchReport", "Emit", "JudgeContext", "Outcome",
           "backends", "get_backend", "register", "usage"]
