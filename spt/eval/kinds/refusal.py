"""`refusal`: HarmOR-style safety prompts (refusal, over-refusal, pair score), losses and task accuracy.

This is `spt.eval.evaluate.evaluate`, the original `spt evaluate`; the kind only gives it a registry name.
"""

from __future__ import annotations

from typing import Any

from spt.eval.kinds.base import UnitValues
from spt.progress import ProgressFn
from spt.store.engine import Store


class RefusalKind:
    name = "refusal"
    summary = "safety prompts (refusal, over-refusal, pair score), alignment/task loss, task accuracy"

    def run(self, store: Store, target: str, config: Any, progress: ProgressFn | None = None) -> Any:
        from spt.eval.evaluate import evaluate

        return evaluate(store, target, config, progress=progress)

    def unit_values(self, store: Store, evaluation_id: str, **options: Any) -> UnitValues:
        """Refusal/over-refusal/pair/accuracy 0-1 values and per-item losses (today in `spt.compare`)."""
        raise NotImplementedError("moved here from spt.compare by the statistics work")


KIND = RefusalKind()
