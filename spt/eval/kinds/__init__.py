"""The evaluation kind registry: every module of this package that defines `KIND` is one kind.

A kind is one way of measuring a model state and storing what it measured as an `evaluation` with its
per-item rows and `metric` rows: `refusal` (HarmOR-style safety prompts, losses and task accuracy: the
original `spt evaluate`), `benchmark` (lm-evaluation-harness tasks), `agentic` (tool-use trajectories).
`spt evaluate` picks the kind from its flags and dispatches here; adding a kind is adding one file with
`KIND = MyKind()` implementing `spt.eval.kinds.base.EvaluationKind`. Modules are imported on first lookup
and import nothing heavy at module level.
"""

from __future__ import annotations

import importlib
import pkgutil

from spt.errors import SptError
from spt.eval.kinds.base import DEFAULT_KIND, EvaluationKind, UnitValues, kind_of

_REGISTRY: dict[str, EvaluationKind] = {}


def _discover() -> dict[str, EvaluationKind]:
    if not _REGISTRY:
        for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
            if mod.name == "base" or mod.name.startswith("_"):
                continue
            kind = getattr(importlib.import_module(f"{__name__}.{mod.name}"), "KIND", None)
            if kind is not None:
                register(kind)
    return _REGISTRY


def register(kind: EvaluationKind) -> EvaluationKind:
    """Register a kind under its `name` (also for kinds defined outside this package)."""
    if not isinstance(kind, EvaluationKind):
        raise TypeError(f"{kind!r} does not implement spt.eval.kinds.base.EvaluationKind")
    other = _REGISTRY.get(kind.name)
    if other is not None and other is not kind:
        raise ValueError(f"two evaluation kinds are named {kind.name!r}")
    _REGISTRY[kind.name] = kind
    return kind


def kinds() -> dict[str, EvaluationKind]:
    """Every registered evaluation kind by name."""
    return dict(_discover())


def get_kind(name: str) -> EvaluationKind:
    """The kind called `name`; SptError naming the known ones otherwise."""
    found = _discover().get(name)
    if found is None:
        raise SptError(f"unknown evaluation kind {name!r}; use one of {', '.join(sorted(_discover()))}")
    return found


__all__ = ["DEFAULT_KIND", "EvaluationKind", "UnitValues", "get_kind", "kind_of", "kinds", "register"]
