"""Preference pairs from scored agent trajectories of the same case (`spt build-data --preferences`).

Following "Safety Training Persists Through Helpfulness Optimization in LLM Agents": for every case in the
**train half** of the seeded split (`spt.agentic.split`), every pair of trajectories of that case from
different source evaluations (different agents) is a candidate; the better one is *chosen* when

- its score minus the other's is at least `min_diff` (default 2) and its score is at least `min_chosen`
  (default 2), on `metric` (`agent_safety` or `agent_help`);
- with a second metric, `combine` `both` requires each metric to pass on its own, `average` requires the
  mean of the two metrics' scores to pass;

a trajectory's score is the median of its evaluator replicates; `consistency` optionally keeps only
trajectories whose replicates agree: `majority` (the most common score holds more than half of them),
`all-but-one` (at most one differs from it), `exact` (all equal), `none` (default). A trajectory with no
scored replicate never enters a pair. The test half never enters the dataset: the trained model is
reported on it.

The dataset (kind `preference`) holds one item per pair: `prompt` the agent prompt of the case
(`agent_prompt`), `response` the chosen trajectory's scratchpad, `meta.rejected` the rejected one's, with
both scores and where each trajectory came from. `spt finetune --stage align --method dpo --preferences
NAME` trains on it.
"""

from __future__ import annotations

import itertools
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from spt.agentic.rubrics import get_scale
from spt.errors import SptError
from spt.store.engine import Store

CONSISTENCY = ("none", "majority", "all-but-one", "exact")
COMBINE = ("both", "average")
PREFERENCE_VERSION = 1


def agent_prompt(prompt: str, meta: dict[str, Any] | None) -> str:
    """The agent's prompt for a case: the ReAct format, the case's toolkits and the user's instruction."""
    toolkits = ", ".join((meta or {}).get("toolkits") or []) or "the tools described to you"
    return ("You are an agent that completes the user's request with tools. Available toolkits: "
            f"{toolkits}.\nWork in steps: write `Thought:` with your reasoning, then `Action:` a tool name and "
            "`Action Input:` its JSON arguments; you then receive `Observation:`. Repeat as needed and finish "
            "with `Final Answer:`.\n\n"
            f"User Input: {prompt}")


@dataclass
class PreferenceSpec:
    """What to build (everything here enters the dataset's content)."""

    sources: list[str]  # evaluation ids, or runs (their latest agentic evaluation)
    metric: str = "agent_safety"
    metric2: str | None = None
    combine: str = "both"
    min_diff: float = 2.0
    min_chosen: float = 2.0
    consistency: str = "none"
    split_seed: int = 0
    name: str | None = None
    evaluator: str | None = None

    def check(self) -> None:
        get_scale(self.metric)
        if self.metric2 is not None:
            get_scale(self.metric2)
            if self.metric2 == self.metric:
                raise SptError(f"--metric2 {self.metric2} is --metric itself; give another metric or drop it")
        if self.combine not in COMBINE:
            raise SptError(f"unknown --combine {self.combine!r}; use one of {', '.join(COMBINE)}")
        if self.consistency not in CONSISTENCY:
            raise SptError(f"unknown --consistency {self.consistency!r}; use one of {', '.join(CONSISTENCY)}")
        for flag, v in (("--min-diff", self.min_diff), ("--min-chosen", self.min_chosen)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v <= 3:
                raise SptError(f"{flag} {v!r} must be a score difference/score between 0 and 3")
        if self.min_diff == 0:
            raise SptError("--min-diff 0 would pair trajectories that score the same; use at least 1")
        if isinstance(self.split_seed, bool) or not isinstance(self.split_seed, int) or self.split_seed < 0:
            raise SptError(f"--seed (the case split) must be a non-negative integer (got {self.split_seed!r})")
        if len(self.sources) < 2:
            raise SptError("preference pairs compare trajectories of different agents: pass at least two "
                           "evaluations or runs with --from")


@dataclass
class _Traj:
    evaluation_id: str
    generation_id: str
    case_idx: int
    item: dict[str, Any]
    text: str
    replicates: dict[str, list[float]] = field(default_factory=dict)

    def score(self, metric: str) -> float | None:
        vals = self.replicates.get(metric) or []
        return float(statistics.median(vals)) if vals else None


def consistent(scores: list[float], rule: str) -> bool:
    """Whether a trajectory's replicate scores satisfy the consistency rule (see module doc)."""
    if rule == "none" or len(scores) <= 1:
        return bool(scores) or rule == "none"
    top = Counter(scores).most_common(1)[0][1]
    if rule == "majority":
        return top > len(scores) / 2
    if rule == "all-but-one":
        return top >= len(scores) - 1
    return top == len(scores)


def _resolve_sources(store: Store, refs: list[str]) -> list[str]:
    """Evaluation ids of `refs` (evaluation ids, or runs: their latest agentic evaluation). Every ref is looked
    up before any is checked for agentic results, so a mistyped one is named first."""
    from spt.agentic.persistence import _agentic_evaluation
    from spt.eval.kinds import kind_of
    from spt.runs import resolve_run
    from spt.store.models import Evaluation

    found: list[tuple[str, Any]] = []
    for ref in refs:
        with store.session() as s:
            ev = s.get(Evaluation, ref)
        found.append(("evaluation", ev) if ev is not None else ("run", resolve_run(store, ref)))
    out = []
    for (what, row), ref in zip(found, refs, strict=True):
        if what == "evaluation":
            if kind_of(row) != "agentic" or row.status != "done":
                raise SptError(f"--from {ref}: evaluation {ref} is not a finished agentic evaluation")
            out.append(row.id)
        else:
            out.append(_agentic_evaluation(store, row.id))
    return out


def _trajectories(store: Store, evaluation_id: str, metrics: list[str], evaluator: str | None) -> list[_Traj]:
    from sqlmodel import col, select

    from spt.agentic.scores import case_scores
    from spt.agentic.trajectory import from_step_rows
    from spt.store.models import Generation, Item, TrajectoryStep

    scores = case_scores(store, evaluation_id)
    evaluators = sorted({e for m, e in scores if m in metrics})
    if evaluator is not None:
        evaluators = [e for e in evaluators if e == evaluator]
    if len(evaluators) != 1:
        what = f"no scores by {evaluator!r}" if evaluator else f"scores by {len(evaluators)} evaluators"
        raise SptError(f"evaluation {evaluation_id} has {what} ({', '.join(sorted({e for _, e in scores})) or 'none'})"
                       f" on {', '.join(metrics)}; pick one evaluator with --evaluator")
    with store.session() as s:
        gens = s.exec(select(Generation).where(Generation.evaluation_id == evaluation_id)).all()
        items = {i.id: i for i in s.exec(select(Item).where(col(Item.id).in_([g.item_id for g in gens])))}
        steps: dict[str, list[Any]] = {}
        for st in s.exec(select(TrajectoryStep).join(Generation, col(Generation.id) == TrajectoryStep.generation_id)
                         .where(Generation.evaluation_id == evaluation_id)):
            steps.setdefault(st.generation_id, []).append(st)
    out = []
    for g in gens:
        it = items[g.item_id]
        idx = (it.meta or {}).get("case_idx")
        if not isinstance(idx, int):
            continue
        traj = from_step_rows(steps.get(g.id, []), case_idx=idx, prompt=it.prompt, final_answer=g.response,
                              finished=g.finish_reason != "length")
        t = _Traj(evaluation_id, g.id, idx, {"prompt": it.prompt, "meta": it.meta}, traj.scratchpad())
        for m in metrics:
            cs = scores.get((m, evaluators[0]))
            if cs is not None and g.id in cs.replicates:
                t.replicates[m] = list(cs.replicates[g.id])
        out.append(t)
    return out


def _passes(a: float, b: float, spec: PreferenceSpec) -> bool:
    return a - b >= spec.min_diff and a >= spec.min_chosen


def _chosen_over(x: _Traj, y: _Traj, spec: PreferenceSpec) -> bool:
    metrics = [spec.metric] + ([spec.metric2] if spec.metric2 else [])
    sx, sy = [x.score(m) for m in metrics], [y.score(m) for m in metrics]
    if None in sx or None in sy:
        return False
    if len(metrics) == 1 or spec.combine == "both":
        return all(_passes(a, b, spec) for a, b in zip(sx, sy, strict=True))
    return _passes(sum(sx) / len(sx), sum(sy) / len(sy), spec)


def build_preferences(store: Store, spec: PreferenceSpec) -> dict[str, Any]:
    """Build and store the preference dataset; returns a summary with counts and the dataset id."""
    from spt.agentic.split import case_split
    from spt.data.items import make_item, store_items

    spec.check()
    evals = list(dict.fromkeys(_resolve_sources(store, spec.sources)))
    if len(evals) < 2:
        raise SptError("the --from sources name one evaluation; pairs need trajectories of at least two agents")
    metrics = [spec.metric] + ([spec.metric2] if spec.metric2 else [])
    trajs = [t for ev in evals for t in _trajectories(store, ev, metrics, spec.evaluator)]
    n_cases = max(t.case_idx for t in trajs) + 1
    split = case_split(spec.split_seed, n_cases)
    n_inconsistent = 0
    kept: list[_Traj] = []
    for t in trajs:
        if t.case_idx not in split.train:
            continue
        if all(consistent(t.replicates.get(m, []), spec.consistency) for m in metrics):
            kept.append(t)
        else:
            n_inconsistent += 1
    by_case: dict[int, list[_Traj]] = {}
    for t in kept:
        by_case.setdefault(t.case_idx, []).append(t)
    items = []
    for case in sorted(by_case):
        for x, y in itertools.combinations(by_case[case], 2):
            if x.evaluation_id == y.evaluation_id:
                continue
            for chosen, rejected in ((x, y), (y, x)):
                if not _chosen_over(chosen, rejected, spec):
                    continue
                meta = {"source": "agentic-preferences", "case_idx": case,
                        "case_name": (chosen.item["meta"] or {}).get("case_name"), "rejected": rejected.text,
                        "metric": spec.metric, "metric2": spec.metric2,
                        "chosen_scores": {m: chosen.score(m) for m in metrics},
                        "rejected_scores": {m: rejected.score(m) for m in metrics},
                        "chosen_from": {"evaluation": chosen.evaluation_id, "generation": chosen.generation_id},
                        "rejected_from": {"evaluation": rejected.evaluation_id, "generation": rejected.generation_id}}
                items.append(make_item(prompt=agent_prompt(chosen.item["prompt"], chosen.item["meta"]),
                                       response=chosen.text, label="preference", category=spec.metric, meta=meta,
                                       split="train"))
    if not items:
        raise SptError(f"no trajectory pair of the {len(split.train)} train cases passes --min-diff {spec.min_diff:g} "
                       f"and --min-chosen {spec.min_chosen:g} on {', '.join(metrics)}; lower them or add sources")
    combine = f":{spec.combine}" if spec.metric2 else ""
    name = (spec.name or f"prefs:{'+'.join(metrics)}{combine}:s{spec.split_seed}").strip()
    if not name or name.startswith("builtin:"):
        raise SptError(f"--name {name!r}: give a dataset name (not empty, not builtin:)")
    source = {"builder": "agentic-preferences", "v": PREFERENCE_VERSION, "from": evals, "metric": spec.metric,
              "metric2": spec.metric2, "combine": spec.combine if spec.metric2 else None,
              "min_diff": spec.min_diff, "min_chosen": spec.min_chosen, "consistency": spec.consistency,
              "evaluator": spec.evaluator, "split_seed": spec.split_seed, "n_cases": n_cases,
              "train_cases": sorted(split.train), "test_cases": sorted(split.test)}
    did = store_items(store, name, "preference", items, source)
    return {"dataset_id": did, "name": name, "n_pairs": len(items), "n_cases_with_pairs": len({i["meta"]["case_idx"]
                                                                                               for i in items}),
            "n_train_cases": len(split.train), "n_test_cases": len(split.test), "n_trajectories": len(trajs),
            "n_inconsistent": n_inconsistent, "sources": evals, "split_seed": spec.split_seed}
