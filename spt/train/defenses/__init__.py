"""The defense registry: every `Defense` subclass with a `name` in a module of this package.

Modules are found with `pkgutil` (no list to edit): adding `spt/train/defenses/<name>.py` that defines a
`Defense` subclass adds the defense to `spt finetune --defense`, its options to the flags, YAML keys and
sweep axes, and its identity fields to the run identity. Modules starting with `_` and `base` are
skipped. Importing this package does not import torch (defense modules import it inside their hooks).
See `spt.train.defenses.base` for the interface.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from spt.errors import SptError
from spt.train.defenses.base import STAGES, Batch, Defense, Option, StepStats

DEFENSES: dict[str, type[Defense]] = {}
_loaded = False


def _discover() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name == "base":
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(mod).values():
            if (isinstance(obj, type) and issubclass(obj, Defense) and obj.name
                    and obj.__module__ == mod.__name__):
                if obj.name in DEFENSES and DEFENSES[obj.name] is not obj:
                    raise RuntimeError(f"two defenses named {obj.name!r}: {DEFENSES[obj.name].__module__} "
                                       f"and {obj.__module__}")
                DEFENSES[obj.name] = obj


def all_defenses() -> dict[str, type[Defense]]:
    """{name: class} of every defense, in name order (none first)."""
    _discover()
    return dict(sorted(DEFENSES.items(), key=lambda kv: (kv[0] != "none", kv[0])))


def get_defense(name: str) -> type[Defense]:
    """The class of defense `name`; SptError listing the valid names otherwise."""
    _discover()
    if name not in DEFENSES:
        raise SptError(f"unknown defense {name!r}; valid: {', '.join(sorted(DEFENSES))}")
    return DEFENSES[name]


def option_fields() -> dict[str, tuple[str, Option]]:
    """{config field: (defense name, Option)} over all defenses (λ excluded: it is the shared `lam`)."""
    out: dict[str, tuple[str, Option]] = {}
    for name, cls in all_defenses().items():
        for f, o in cls.fields().items():
            if f in out and out[f][0] != name:
                raise RuntimeError(f"option field {f!r} declared by both {out[f][0]} and {name}")
            out[f] = (name, o)
    return out


def owner_of(field_name: str) -> str | None:
    """The defense that declares config field `field_name` (None: not a defense option)."""
    hit = option_fields().get(field_name)
    return hit[0] if hit else None


def describe(name: str) -> dict[str, Any]:
    """A defense's declarations as plain data (for `--help`, the README table and `spt sweep`)."""
    cls = get_defense(name)
    opts = [{"field": "lam", "name": "lam", "kind": cls.lam.kind, "default": cls.lam.default,
             "range": cls.lam.range, "help": cls.lam.help, "paper": cls.lam.paper}] if cls.lam else []
    opts += [{"field": f, "name": o.name, "kind": o.kind, "default": o.default, "range": o.range,
              "choices": o.choices, "help": o.help, "paper": o.paper} for f, o in cls.fields().items()]
    return {"name": cls.name, "summary": cls.summary, "paper": cls.paper, "stages": list(cls.stages),
            "options": opts}


__all__ = ["DEFENSES", "STAGES", "Batch", "Defense", "Option", "StepStats", "all_defenses", "describe",
           "get_defense", "option_fields", "owner_of"]
