"""Agentic evaluations for the viewer (`spt view`): each case's trajectory, steps and scores, read-only."""

from __future__ import annotations

from typing import Any

from spt.store.engine import Store


def agentic_ids(store: Store, evaluation_ids: list[str]) -> set[str]:
    """The agentic evaluations among `evaluation_ids`."""
    from sqlmodel import col, select

    from spt.eval.kinds import kind_of
    from spt.store.models import Evaluation

    if not evaluation_ids:
        return set()
    with store.session() as s:
        evs = s.exec(select(Evaluation).where(col(Evaluation.id).in_(evaluation_ids))).all()
    return {e.id for e in evs if kind_of(e) == "agentic"}


def trajectories(store: Store, evaluation_id: str, *, case: int | None = None, page: int = 1,
                 per_page: int = 10 ** 9) -> dict[str, Any]:
    """The evaluation's trajectories in case order, with their steps and per-scale scores.

    Returns {"rows": [...], "total", "page", "pages", "metrics": [metric names], "evaluators": [...]}; each row
    has case_idx, case_name, category, prompt, final_answer, finished, stop_reason, finish_reason, steps
    (thought, tool, tool_input, observation) and scores {metric: {"value": median, "replicates": [...],
    "unscored": [reasons]}} (of the first evaluator when several scored it).
    """
    import math

    from sqlmodel import col, select

    from spt.agentic.scores import case_scores
    from spt.store.models import Generation, Item, TrajectoryStep

    scores = case_scores(store, evaluation_id)
    evaluators = sorted({e for _m, e in scores})
    first = evaluators[0] if evaluators else None
    with store.session() as s:
        gens = s.exec(select(Generation).where(Generation.evaluation_id == evaluation_id)).all()
        items = {i.id: i for i in s.exec(select(Item).where(col(Item.id).in_([g.item_id for g in gens])))}
    rows = []
    for g in gens:
        it = items.get(g.item_id)
        meta = (it.meta if it else None) or {}
        idx = meta.get("case_idx")
        if case is not None and idx != case:
            continue
        rows.append({"generation_id": g.id, "case_idx": idx, "case_name": meta.get("case_name"),
                     "category": it.category if it else None, "prompt": it.prompt if it else g.prompt,
                     "final_answer": g.response, "finish_reason": g.finish_reason,
                     "stop_reason": (g.meta or {}).get("stop_reason"), "finished": g.finish_reason == "eos",
                     "n_tool_calls": (g.meta or {}).get("n_tool_calls")})
    rows.sort(key=lambda r: (r["case_idx"] is None, r["case_idx"] if r["case_idx"] is not None else 0))
    total = len(rows)
    pages = max(1, math.ceil(total / per_page))
    rows = rows[(page - 1) * per_page: page * per_page]
    ids = [r["generation_id"] for r in rows]
    with store.session() as s:
        steps: dict[str, list[Any]] = {}
        if ids:
            for st in s.exec(select(TrajectoryStep).where(col(TrajectoryStep.generation_id).in_(ids))
                             .order_by(col(TrajectoryStep.position))):
                steps.setdefault(st.generation_id, []).append(
                    {"position": st.position, "thought": st.thought, "tool": st.tool, "tool_input": st.tool_input,
                     "observation": st.observation})
    metrics = sorted({m for m, e in scores if e == first})
    for r in rows:
        r["steps"] = steps.get(r["generation_id"], [])
        r["scores"] = {}
        for m in metrics:
            cs = scores[(m, first)]
            r["scores"][m] = {"value": cs.score(r["generation_id"]),
                              "replicates": cs.replicates.get(r["generation_id"], []),
                              "unscored": cs.unscored.get(r["generation_id"], [])}
    return {"rows": rows, "total": total, "page": page, "pages": pages, "metrics": metrics,
            "evaluators": evaluators, "evaluator": first}
