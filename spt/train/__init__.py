"""Fine-tuning with safety-preserving defenses (`spt finetune`, `spt merge`).

    from spt.train import FinetuneConfig, finetune, merge_run, DEFENSES
    res = finetune(store, FinetuneConfig(model="tiny-random", stage="align", max_steps=20))

Importing this package does not import torch; `finetune` and `merge_run` import it when called.
Defenses live in flat modules `spt/train/defense_<name>.py`, each registering one class; list a new
module in `DEFENSE_MODULES`.
"""

from __future__ import annotations

from typing import Any

from spt.train.config import FinetuneConfig
from spt.train.defense_base import DEFENSES, Defense, get_defense, register
from spt.train.signals import INTERRUPTED, Interrupted

DEFENSE_MODULES = (
    "spt.train.defense_none",
    "spt.train.defense_anchor",
    "spt.train.defense_proximal",
    "spt.train.defense_safelora",
)


def finetune(store: Any, config: FinetuneConfig, progress: Any = None) -> dict[str, Any]:
    """Train (or resume, or report an identical finished run); see `spt.train.loop.finetune`."""
    from spt.train.loop import finetune as _finetune

    return _finetune(store, config, progress)


def merge_run(store: Any, run_id: str, checkpoint_id: str | None = None, out: Any = None,
              dtype: str = "float32") -> dict[str, Any]:
    """Fold a run's LoRA adapter into full weights; see `spt.train.merge.merge_run`."""
    from spt.train.merge import merge_run as _merge

    return _merge(store, run_id, checkpoint_id, out, dtype)


def _load_defenses() -> None:
    import importlib

    for m in DEFENSE_MODULES:
        importlib.import_module(m)


_load_defenses()

__all__ = ["DEFENSES", "DEFENSE_MODULES", "INTERRUPTED", "Defense", "FinetuneConfig", "Interrupted", "finetune",
           "get_defense", "merge_run",
           "register"]
