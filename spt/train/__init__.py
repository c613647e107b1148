"""Fine-tuning with safety-preserving defenses (`spt finetune`, `spt merge`).

    from spt.train import FinetuneConfig, finetune, merge_run, DEFENSES
    res = finetune(store, FinetuneConfig(model="tiny-random", stage="align", max_steps=20))

Importing this package does not import torch; `finetune` and `merge_run` import it when called.
Defenses are modules of `spt/train/defenses/` (one file each, found by the registry); see
`spt.train.defenses.base` for the interface.
"""

from __future__ import annotations

from typing import Any

from spt.progress import ProgressFn
from spt.signals import INTERRUPTED, Interrupted
from spt.train.config import FinetuneConfig
from spt.train.defenses import DEFENSES, Defense, Option, all_defenses, get_defense
from spt.train.result import CheckpointInfo, FinetuneResult


def finetune(store: Any, config: FinetuneConfig, progress: ProgressFn | None = None) -> FinetuneResult:
    """Train (or resume, or report an identical finished run); see `spt.train.loop.finetune`."""
    from spt.train.loop import finetune as _finetune

    return _finetune(store, config, progress)


def merge_run(store: Any, run_id: str, checkpoint_id: str | None = None, out: Any = None,
              dtype: str = "float32") -> dict[str, Any]:
    """Fold a run's LoRA adapter into full weights; see `spt.train.merge.merge_run`."""
    from spt.train.merge import merge_run as _merge

    return _merge(store, run_id, checkpoint_id, out, dtype)


all_defenses()  # fill DEFENSES (the registry imports every module of spt/train/defenses/)

__all__ = ["DEFENSES", "INTERRUPTED", "CheckpointInfo", "Defense", "FinetuneConfig", "FinetuneResult", "Interrupted",
           "Option", "all_defenses", "finetune", "get_defense", "merge_run"]
