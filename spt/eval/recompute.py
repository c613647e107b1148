"""Recomputing an evaluation's metrics from what it stored: no model, no regeneration.

A finished evaluation keeps every response (`generation.response`) and each item's teacher-forced loss
(`generation.meta.loss`), so its numbers can be computed again when a metric is added or its definition
changes: the same items in the same order (dataset order, then the evaluation's own `--limit` sample),
the same code (`spt.eval.metrics`), the same metric ids (so rows are updated, not duplicated). Judge
metrics are recomputed from the stored current judgments too. The evaluation's identity, status and
generations are left as they are.

Each evaluation kind recomputes its own way: a `refusal` evaluation as below, a `benchmark` evaluation
from its stored per-document samples and the task settings recorded when it ran (`BenchmarkKind.recompute`).
A kind without a `recompute` says so in one line instead of writing metrics of another kind.

Losses of items with no stored loss (evaluations made before losses were kept per item, or with
`--no-generate`) cannot be recomputed: those loss metrics keep their stored rows, and the result says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spt.engines.base import FAILED_FINISH
from spt.errors import SptError
from spt.store.engine import Store
from spt.store.models import Evaluation, Generation, utcnow


@dataclass
class Recomputed:
    """What recomputing one evaluation did."""

    evaluation_id: str
    run_id: str
    n_metrics: int  # metric rows written (keyword, loss, accuracy)
    n_judge_metrics: int  # metric rows written for judges
    changed: list[str] = field(default_factory=list)  # "name/category" whose value or interval changed
    added: list[str] = field(default_factory=list)  # "name/category" that did not exist before
    kept: list[str] = field(default_factory=list)  # metric names left as stored (inputs not stored)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def evaluations_to_recompute(store: Store, targets: list[str] | None) -> list[Evaluation]:
    """Done evaluations of the given runs or evaluations (ids or unique prefixes); all done ones if none given."""
    from sqlalchemy import func
    from sqlmodel import col, select

    from spt.store.queries import run_by_prefix

    with store.session() as s:
        if not targets:
            return list(s.exec(select(Evaluation).where(Evaluation.status == "done").order_by(Evaluation.id)).all())
        out: dict[str, Evaluation] = {}
        for t in targets:
            t = t.strip()
            evs = list(s.exec(select(Evaluation).where(func.substr(Evaluation.id, 1, len(t)) == t).limit(2)).all()) \
                if t else []
            if len(evs) > 1:
                raise SptError(f"evaluation prefix {t!r} is ambiguous; give more characters")
            if not evs:
                try:
                    run = run_by_prefix(store, t)
                except SptError:
                    raise SptError(f"no run or evaluation {t!r} in {store.path}; list them with `spt runs`") from None
                evs = list(s.exec(select(Evaluation).where(Evaluation.run_id == run.id, Evaluation.status == "done")
                                  .order_by(col(Evaluation.id))).all())
                if not evs:
                    raise SptError(f"run {run.id} has no finished evaluation; run `spt evaluate {run.id[:13]}` first")
            for ev in evs:
                if ev.status != "done":
                    raise SptError(f"evaluation {ev.id} is {ev.status}, not done; finish it with `spt evaluate` "
                                   "(it resumes) before recomputing its metrics")
                out[ev.id] = ev
        return list(out.values())


def recompute_metrics(store: Store, targets: list[str] | None = None) -> list[Recomputed]:
    """Recompute the metrics of the done evaluations of `targets` (all done ones if None) from stored data."""
    return [recompute_evaluation(store, ev) for ev in evaluations_to_recompute(store, targets)]


def _records(store: Store, ev: Evaluation) -> tuple[list[dict], list[dict], Any]:
    """(safety records, task records, task scorer) in the order `spt evaluate` computed them."""
    from sqlmodel import select

    from spt.data import get_task, load_items
    from spt.eval.evaluate import limit_items

    cfg = ev.config or {}
    fields = cfg.get("identity_fields") or {}
    limit = None if cfg.get("external") else fields.get("limit", cfg.get("limit"))
    with store.session() as s:
        gens = {g.item_id: g for g in s.exec(select(Generation).where(Generation.evaluation_id == ev.id)).all()}

    def recs(dataset_id: str | None, split: str | None) -> list[dict]:
        if not dataset_id:
            return []
        items = limit_items(load_items(store, dataset_id, split), limit)
        return [{**it, "reference": it.get("response"), "response": g.response, "loss": (g.meta or {}).get("loss"),
                 "failed": g.finish_reason == FAILED_FINISH or bool((g.meta or {}).get("unfinished_thought"))}
                for it in items if (g := gens.get(it["id"])) is not None]

    safety = recs(ev.dataset_id, ev.split)
    task_name = fields.get("task", ev.task)
    task_recs: list[dict] = []
    scorer = None
    if task_name and fields.get("task_dataset"):
        task_recs = recs(fields["task_dataset"], "test")
        scorer = get_task(task_name, store=store).score
    return safety, task_recs, scorer


def diff_metrics(before: dict[tuple[str, str], dict], metrics: list[dict]) -> tuple[list[str], list[str]]:
    """("name/category" rows whose value, interval or counts changed, rows that are new) against `before`."""
    changed, added = [], []
    for m in metrics:
        old = before.get((m["name"], m["category"]))
        label = f"{m['name']}/{m['category']}"
        if old is None:
            added.append(label)
        elif any(old[k] != m.get(k) for k in ("value", "ci_low", "ci_high", "n", "n_unscored")):
            changed.append(label)
    return changed, added


def recompute_evaluation(store: Store, ev: Evaluation) -> Recomputed:
    """Recompute one done evaluation's metrics; see the module doc."""
    from spt.eval.kinds import get_kind
    from spt.eval.kinds.base import DEFAULT_KIND, kind_of

    kind = kind_of(ev)
    if kind != DEFAULT_KIND:
        recompute = getattr(get_kind(kind), "recompute", None)
        if recompute is None:
            raise SptError(f"evaluation {ev.id} is a {kind} evaluation, whose metrics cannot be recomputed from "
                           "stored data; evaluate again instead")
        return recompute(store, ev)
    return _recompute_refusal(store, ev)


def _recompute_refusal(store: Store, ev: Evaluation) -> Recomputed:
    """Recompute a refusal evaluation's keyword, loss, accuracy and judge metrics."""
    from spt.eval.evaluate import stored_metrics
    from spt.eval.metrics import accuracy_metrics, loss_metrics, refusal_metrics
    from spt.eval.refusal import classify, get_preset
    from spt.judge.metrics import compute_judge_metrics
    from spt.store import queries

    cfg = ev.config or {}
    fields = cfg.get("identity_fields") or {}
    generated = (fields.get("generation") or {}).get("generate", True)
    before = {(m["name"], m["category"]): m for m in stored_metrics(store, ev.id)}
    preset = get_preset(ev.refusal_preset or "spt")
    safety, task_recs, scorer = _records(store, ev)
    metrics: list[dict] = []
    kept: list[str] = []
    if generated:
        metrics += refusal_metrics(safety, lambda text: classify(text, preset.name), preset.name)
        if task_recs and scorer is not None:
            metrics += accuracy_metrics("task_accuracy", task_recs, scorer)
        if fields.get("reasoning"):
            from sqlmodel import select

            from spt.eval.evaluate import unfinished_metrics
            from spt.store.models import Generation

            with store.session() as s:
                metrics += unfinished_metrics(s.exec(select(Generation).where(Generation.evaluation_id == ev.id)).all())

    def losses(name: str, recs: list[dict], split_by_label: bool) -> None:
        with_ref = [{**r, "response": r["reference"]} for r in recs if r.get("reference")]
        if not with_ref:
            return
        if any(r.get("loss") is None for r in with_ref):
            if any(k[0] == name for k in before):
                kept.append(name)
            return
        metrics.extend(loss_metrics(name, with_ref, split_by_label=split_by_label))

    if not cfg.get("external"):
        losses("alignment_loss", [r for r in safety if r.get("label") in ("harmful", "benign")], True)
        if task_recs:
            losses("task_loss", task_recs, False)
    if not metrics and not kept:
        raise SptError(f"evaluation {ev.id} has no stored responses or losses to recompute metrics from")
    with store.session() as s:
        old_meta = next((m.meta for m in queries.evaluation_metrics(s, ev.id, judged=False) if m.meta), None) or {}
    meta = {**old_meta, "preset_version": preset.version, "recomputed_at": utcnow()}
    _upsert_metrics(store, ev, metrics, meta)
    judge_ids = _judges_of(store, ev.id)
    n_judge = 0
    for judge_id in judge_ids:
        n_judge += len(compute_judge_metrics(store, ev.id, judge_id) or [])
    changed, added = diff_metrics(before, metrics)
    return Recomputed(ev.id, ev.run_id, len(metrics), n_judge, changed, added, kept)


def _upsert_metrics(store: Store, ev: Evaluation, metrics: list[dict], meta: dict) -> None:
    """Write the metric rows under their content ids (the same rows `spt evaluate` wrote), in one transaction."""
    from spt.eval.evaluate import metric_id
    from spt.store.models import Metric

    with store.write() as s:
        for m in metrics:
            s.merge(Metric(
                id=metric_id(ev.id, m["name"], m["category"], m["preset"]), run_id=ev.run_id, evaluation_id=ev.id,
                name=m["name"], category=m["category"], preset=m["preset"], value=m["value"], ci_low=m["ci_low"],
                ci_high=m["ci_high"], ci_method=m.get("ci_method"), n=m["n"], n_unscored=m["n_unscored"], meta=meta,
            ))


def _judges_of(store: Store, evaluation_id: str) -> list[str]:
    """Judges with a current judgment on some generation of the evaluation."""
    from sqlalchemy import text

    with store.engine.connect() as conn:
        return [r[0] for r in conn.execute(text(
            "SELECT DISTINCT j.judge_id FROM judgment j JOIN generation g ON g.id = j.generation_id "
            "WHERE g.evaluation_id = :e AND j.superseded_by IS NULL ORDER BY j.judge_id"), {"e": evaluation_id}).all()]
