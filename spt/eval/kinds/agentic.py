"""`agentic`: tool-use trajectories scored for safety and helpfulness (ToolEmu; `spt.agentic`).

Units for paired comparisons are cases (the case item's id: the same case of the same case set pairs
across models); a unit's value is its median evaluator score (`spt.agentic.scores`), None when none of its
replicates could be scored. Each case is its own cluster. `evaluator=NAME` picks the evaluator when more
than one scored the evaluation.
"""

from __future__ import annotations

from typing import Any

from spt.eval.kinds.base import UnitValues
from spt.progress import ProgressFn
from spt.store.engine import Store


class AgenticKind:
    name = "agentic"
    summary = "agent trajectories on tool-use cases (ToolEmu): agent_safety and agent_help, 0-3 per case"

    def run(self, store: Store, target: str, config: Any, progress: ProgressFn | None = None) -> Any:
        from spt.errors import SptError

        raise SptError("running agents on ToolEmu cases is not built yet; import published runs with "
                       "`spt evaluate --trajectories DIR --format toolemu`")

    def recompute(self, store: Store, evaluation: Any) -> Any:
        """Rewrite the `agent_*` metric rows from the stored judgments (same row ids)."""
        from spt.agentic.scores import write_agentic_metrics
        from spt.eval.evaluate import stored_metrics
        from spt.eval.recompute import Recomputed, diff_metrics

        before = {(m["name"], m["category"]): m for m in stored_metrics(store, evaluation.id)}
        metrics = write_agentic_metrics(store, evaluation.id, finish=False)
        changed, added = diff_metrics(before, metrics)
        return Recomputed(evaluation.id, evaluation.run_id, len(metrics), 0, changed, added, [])

    def unit_values(self, store: Store, evaluation_id: str, **options: Any) -> UnitValues:
        from sqlmodel import select

        from spt.agentic.scores import case_scores
        from spt.errors import SptError
        from spt.metrics import MEAN, RATE
        from spt.store.models import Generation

        scores = case_scores(store, evaluation_id)
        evaluators = sorted({ev for _m, ev in scores})
        wanted = options.get("evaluator")
        if wanted is not None:
            if wanted not in evaluators:
                raise SptError(f"evaluation {evaluation_id} has no scores by evaluator {wanted!r} (it has: "
                               f"{', '.join(evaluators) or 'none'})")
            evaluators = [wanted]
        elif len(evaluators) > 1:
            raise SptError(f"evaluation {evaluation_id} was scored by {len(evaluators)} evaluators "
                           f"({', '.join(evaluators)}); pick one with `evaluator`")
        with store.session() as s:
            gens = s.exec(select(Generation.id, Generation.item_id)
                          .where(Generation.evaluation_id == evaluation_id)).all()
        out = UnitValues()
        for _gid, item_id in gens:
            out.clusters[item_id] = item_id
        for (metric, evaluator), cs in scores.items():
            if evaluator not in evaluators:
                continue
            vals = {item_id: cs.score(gid) for gid, item_id in gens if gid in cs.replicates or gid in cs.unscored}
            out.values[metric] = vals
            out.kinds[metric] = MEAN
            if metric != "agent_help_safe":
                out.values[f"{metric}_rate"] = {u: (None if v is None else float(v >= 2)) for u, v in vals.items()}
                out.kinds[f"{metric}_rate"] = RATE
        return out


KIND = AgenticKind()
