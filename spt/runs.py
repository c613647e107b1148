"""Listing, inspecting and correcting runs (the library behind `spt runs`)."""

from __future__ import annotations

import math
import re
from typing import Any

from sqlalchemy import text
from sqlmodel import select

from spt.errors import SptError
from spt.metrics import KEY_METRICS
from spt.store import queries
from spt.store.engine import Store
from spt.store.models import Evaluation, Run, RunAudit, utcnow
from spt.store.selection import MetricValue, latest_metrics, parse_where, select_runs

SETTABLE = ("defense", "lam", "tags", "notes")
_DEFENSE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def _mv(m: MetricValue | None) -> dict[str, Any] | None:
    return None if m is None else m.to_dict()


def list_runs(store: Store, where: Any = None, *, metrics: tuple[str, ...] = KEY_METRICS) -> list[dict[str, Any]]:
    """Runs matching `where` (oldest first) as dicts with their key metrics (`metrics[name]` = value).

    Two queries in all (runs, then every needed metric row), so 10k runs list in well under a second.
    Metric values are the overall ("all") non-judge numbers from the most recent evaluation that has them.
    """
    where_d = parse_where(where)
    runs = select_runs(store, where_d)
    values = latest_metrics(store, list(metrics), categories=["all"], judge_mode="none", where=where_d)
    stale = _stale_ids(store) if any(r["status"] == "running" for r in runs) else set()
    for r in runs:
        r["metrics"] = {name: (values[(r["id"], name, "all", None)].value
                               if (r["id"], name, "all", None) in values else None) for name in metrics}
        r["stale"] = r["id"] in stale
    return runs


def _stale_ids(store: Store) -> set[str]:
    """Running runs whose lease expired (their process is gone); `spt runs reap` marks them interrupted."""
    from spt.store.lease import stale_runs

    return {r["id"] for r in stale_runs(store)}


def list_configurations(store: Store, where: Any = None, *,
                        metrics: tuple[str, ...] = KEY_METRICS) -> list[dict[str, Any]]:
    """Runs that differ only in seed, pooled: per key metric the mean across seeds and its interval.

    The interval is `spt.metrics.pool_seeds`: a Student t across seeds, never narrower than the exact
    interval of the pooled counts for a rate, nor than a single seed's own interval.
    """
    from spt.frontier.comparable import is_bounded
    from spt.metrics import pool_seeds

    where_d = parse_where(where)
    runs = select_runs(store, where_d)
    values = latest_metrics(store, list(metrics), categories=["all"], judge_mode="none", where=where_d)
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault(r["configuration"], []).append(r)
    out = []
    for cfg, members in groups.items():
        head = members[0]
        row = {k: head[k] for k in ("kind", "model_ref", "base_model", "task", "defense", "lam", "poison_ratio")}
        row.update({"configuration": cfg, "runs": [m["id"] for m in members], "seeds": [m["seed"] for m in members],
                    "status": sorted({m["status"] for m in members}), "metrics": {}})
        for name in metrics:
            mvs = [values[(m["id"], name, "all", None)] for m in members if (m["id"], name, "all", None) in values]
            mvs = [mv for mv in mvs if mv.value is not None]
            est = pool_seeds([mv.value for mv in mvs], ns=[mv.n for mv in mvs], bounded=is_bounded(name),
                             run_intervals=[(mv.ci_low, mv.ci_high) for mv in mvs])
            row["metrics"][name] = {"mean": est.value, "ci_low": est.ci_low, "ci_high": est.ci_high,
                                    "n_seeds": len(mvs), "per_seed": [mv.value for mv in mvs], "n": est.n,
                                    "ci_method": est.method}
        out.append(row)
    return out


def resolve_configuration(store: Store, ref: str) -> tuple[str, list[dict[str, Any]]]:
    """A configuration by `cfg:` prefix or exact `model:NAME`: (its key, its runs oldest first); SptError otherwise."""
    from spt.store.selection import select_runs

    ref = ref.strip()
    exact = ref.startswith("model:")
    runs = [r for r in select_runs(store)
            if (r["configuration"] == ref if exact else r["configuration"].startswith(ref))]
    if not runs:
        what = "imported model" if exact else "configuration"
        raise SptError(f"no {what} {ref!r}; `spt runs --configurations` lists them")
    cfgs = {r["configuration"] for r in runs}
    if len(cfgs) > 1:
        raise SptError(f"configuration prefix {ref!r} is ambiguous ({len(cfgs)} configurations); give more digits")
    return cfgs.pop(), runs


def resolve_run(store: Store, run_id: str) -> Run:
    """A run by full id or unique prefix; a clear error otherwise."""
    return queries.run_by_prefix(store, run_id)


def _run_metrics(store: Store, run_ids: list[str]) -> dict[str, dict[str, MetricValue]]:
    """Every overall metric of each run (latest evaluation wins), keyed `name` or `name@judge`."""
    names = queries.metric_names_of_runs(store, run_ids)
    if not names:
        return {r: {} for r in run_ids}
    values = latest_metrics(store, names, categories=["all"], judge_mode="split", run_ids=run_ids)
    out: dict[str, dict[str, MetricValue]] = {r: {} for r in run_ids}
    for (run_id, name, _cat, judge_id), mv in values.items():
        key = name if judge_id is None else f"{name}@{mv.judge_name or judge_id[:15]}"
        out[run_id][key] = mv
    return out


def lineage(store: Store, run: Run) -> list[Run]:
    """The run's ancestors and the run itself, root first."""
    return queries.lineage(store, run)


def judgment_summary(store: Store, run_id: str) -> list[dict[str, Any]]:
    """Current (not superseded) judgments of the run's generations, counted by judge and status."""
    sql = (
        "SELECT j.judge_id, jd.name, j.status, "
        "SUM(CASE WHEN j.superseded_by IS NULL THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN j.superseded_by IS NULL THEN 0 ELSE 1 END) "
        "FROM judgment j JOIN generation g ON g.id = j.generation_id "
        "JOIN evaluation e ON e.id = g.evaluation_id LEFT JOIN judge jd ON jd.id = j.judge_id "
        "WHERE e.run_id = :r GROUP BY j.judge_id, jd.name, j.status ORDER BY jd.name, j.status"
    )
    with store.engine.connect() as conn:
        rows = conn.execute(text(sql), {"r": run_id}).all()
    out: dict[str, dict[str, Any]] = {}
    for judge_id, name, status, current, superseded in rows:
        d = out.setdefault(judge_id, {"judge_id": judge_id, "judge": name, "total": 0, "superseded": 0,
                                      "by_status": {}})
        d["by_status"][status] = int(current or 0)
        d["total"] += int(current or 0)
        d["superseded"] += int(superseded or 0)
    return list(out.values())


def show_run(store: Store, run_id: str) -> dict[str, Any]:
    """A run: its row and config, lineage with each metric's change from the parent, checkpoints,
    evaluations (with metric counts), judgments by judge and status, and its audit history."""
    run = resolve_run(store, run_id)
    chain = lineage(store, run)
    metrics = _run_metrics(store, [r.id for r in chain])
    steps = []
    prev: dict[str, MetricValue] | None = None
    for r in chain:
        cur = metrics[r.id]
        ms = {}
        for key, mv in sorted(cur.items()):
            d = mv.to_dict()
            parent_v = prev[key].value if prev is not None and key in prev else None
            d["parent_value"] = parent_v
            d["delta"] = (mv.value - parent_v) if mv.value is not None and parent_v is not None else None
            ms[key] = d
        steps.append({"run_id": r.id, "kind": r.kind, "model_ref": r.model_ref, "defense": r.defense,
                      "lam": r.lam, "poison_ratio": r.poison_ratio, "task": r.task, "status": r.status,
                      "metrics": ms})
        prev = cur
    with store.session() as s:
        ckpts = queries.checkpoints(s, run.id)
        evals = s.exec(select(Evaluation).where(Evaluation.run_id == run.id).order_by(Evaluation.created_at)).all()
        audits = s.exec(select(RunAudit).where(RunAudit.run_id == run.id).order_by(RunAudit.changed_at)).all()
    with store.engine.connect() as conn:
        gens = dict(conn.execute(text(
            "SELECT g.evaluation_id, COUNT(*) FROM generation g JOIN evaluation e ON e.id = g.evaluation_id "
            "WHERE e.run_id = :r GROUP BY g.evaluation_id"), {"r": run.id}).all())
    counts = queries.metric_counts_by_evaluation(store, run.id)
    evaluations = []
    for e in evals:
        d = e.model_dump()
        d["n_metrics"] = int(counts.get(e.id, 0))
        d["n_generations"] = int(gens.get(e.id, 0))
        evaluations.append(d)
    from spt.data.poison import describe_poison
    from spt.store.browse import train_curves

    curves = train_curves(store, run.id)
    training = {name: {"n": len(pts), "first_step": pts[0][0], "first": pts[0][1], "last_step": pts[-1][0],
                       "last": pts[-1][1], "min": min(v for _s, v in pts), "max": max(v for _s, v in pts),
                       "values": [v for _s, v in pts]} for name, pts in sorted(curves.items()) if pts}

    poison_data = ((run.config or {}).get("poison_data") or None) if run.poison_ratio else None
    return {
        "run": run.model_dump(),
        "poison": {"dataset": poison_data, "note": describe_poison(poison_data)} if poison_data else None,
        "lineage": steps,
        "metrics": steps[-1]["metrics"],
        "checkpoints": [c.model_dump() for c in ckpts],
        "evaluations": evaluations,
        "judgments": judgment_summary(store, run.id),
        "audit": [a.model_dump() for a in audits],
        "training": training,
    }


def _parse_assignment(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    key = key.strip().lower()
    key = {"lambda": "lam", "λ": "lam", "tag": "tags", "note": "notes"}.get(key, key)
    if not sep or not key:
        raise SptError(f"{item!r}: expected KEY=VALUE with KEY one of {', '.join(SETTABLE)}")
    if key not in SETTABLE:
        raise SptError(f"{item!r}: cannot set {key!r}; settable keys: {', '.join(SETTABLE)}")
    value = raw.strip()
    if key == "defense":
        if value == "":
            return key, None
        if not _DEFENSE_RE.match(value):
            raise SptError(f"defense {value!r}: use letters, digits and . _ + - (e.g. defense=anchor)")
        return key, value
    if key == "lam":
        if value == "" or value.lower() in ("none", "null"):
            return key, None
        try:
            lam = float(value)
        except ValueError:
            raise SptError(f"lam {value!r} is not a number; e.g. lam=0.5 (or lam= to unset)") from None
        if not math.isfinite(lam) or lam < 0:
            raise SptError(f"lam {value!r} must be a finite number ≥ 0")
        return key, lam
    if key == "tags":
        tags = [t.strip() for t in value.split(",") if t.strip()]
        bad = [t for t in tags if any(c.isspace() for c in t)]
        if bad:
            raise SptError(f"tag {bad[0]!r} contains whitespace; tags are a comma list like tags=a,b")
        return key, list(dict.fromkeys(tags)) or None
    return key, raw if raw != "" else None  # notes: kept verbatim


def set_run(store: Store, run_id: str, assignments: list[str]) -> dict[str, Any]:
    """Change run metadata (defense, lam, tags, notes), writing one RunAudit row per actual change.

    Everything is validated before anything is written; setting a value it already has is a no-op.
    Returns {"run_id", "changes": [{"key", "old", "new"}], "unchanged": [keys]}.
    """
    if not assignments:
        raise SptError(f"nothing to set; pass KEY=VALUE with KEY one of {', '.join(SETTABLE)}")
    parsed: dict[str, Any] = {}
    for item in assignments:
        key, value = _parse_assignment(item)
        if key in parsed:
            raise SptError(f"{key} is given twice; set each key once")
        parsed[key] = value
    run = resolve_run(store, run_id)
    changes, unchanged = [], []
    now = utcnow()
    with store.write() as s:
        row = s.get(Run, run.id)
        for key, new in parsed.items():
            old = getattr(row, key)
            if old == new:
                unchanged.append(key)
                continue
            queries.audit(s, row, key, old, new, now=now)
            setattr(row, key, new)
            changes.append({"key": key, "old": old, "new": new})
        if changes:
            row.updated_at = now
            s.add(row)
    return {"run_id": run.id, "changes": changes, "unchanged": unchanged, "changed_at": now if changes else None}
