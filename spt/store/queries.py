"""The shared reads and writes of runs, checkpoints and metrics: the one place that builds these selects.

Every stage needs the same few questions answered (a run by id or prefix, the final checkpoint of a run,
the runs with an identity, the latest value of a metric) and the same few changes made (a run's status,
its tags). Each is answered here once, so two modules cannot drift apart in what "latest" or "final"
means, and every status or tag change writes its `RunAudit` row.

Functions that take a `Session` run inside the caller's transaction (a status change that must commit
with other rows); the others take the `Store` and open their own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from spt.errors import SptError
from spt.store.engine import Store
from spt.store.models import Checkpoint, Metric, Run, RunAudit, utcnow

# Run statuses, and the ones a run can leave only by an explicit resume or reap.
STATUSES = ("pending", "running", "done", "failed", "interrupted")
FINISHED = ("done", "failed")


# --------------------------------------------------------------------------- runs


def get_run(store: Store, run_id: str) -> Run | None:
    """The run with exactly this id, or None."""
    with store.session() as s:
        return s.get(Run, run_id)


def run_by_prefix(store: Store, run_id: str) -> Run:
    """A run by full id or unique prefix; SptError naming the problem otherwise.

    The prefix is compared with substr, not LIKE, so `%` and `_` in what the user typed match only
    themselves.
    """
    run_id = run_id.strip()
    if not run_id:
        raise SptError("empty run id; give a run id or a unique prefix (list runs with `spt runs`)")
    with store.session() as s:
        run = s.get(Run, run_id)
        if run is not None:
            return run
        matches = s.exec(select(Run).where(func.substr(Run.id, 1, len(run_id)) == run_id).limit(2)).all()
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise SptError(f"no run {run_id!r} in {store.path}; list runs with `spt runs`")
    raise SptError(f"run prefix {run_id!r} is ambiguous (several runs); give more characters")


def runs_by_prefix(s: Session, prefix: str, *, limit: int = 3) -> list[Run]:
    """Runs whose id starts with `prefix` (exact prefix, at most `limit`)."""
    return list(s.exec(select(Run).where(func.substr(Run.id, 1, len(prefix)) == prefix).limit(limit)).all())


def runs_with_identity(s: Session, identity: str, *, kind: str | None = None,
                       status: str | Sequence[str] | None = None, newest_first: bool = False) -> list[Run]:
    """Runs sharing a weights identity (optionally of one kind / status), oldest (by id) first."""
    q = select(Run).where(Run.identity == identity)
    if kind is not None:
        q = q.where(Run.kind == kind)
    if isinstance(status, str):
        q = q.where(Run.status == status)
    elif status is not None:
        q = q.where(col(Run.status).in_(list(status)))
    order = col(Run.created_at).desc() if newest_first else col(Run.id)
    return list(s.exec(q.order_by(order)).all())


def runs_created_after(store: Store, marker: str) -> list[Run]:
    """Runs whose (time-ordered UUIDv7) id sorts after `marker`: the runs a stage started after it."""
    with store.session() as s:
        return list(s.exec(select(Run).where(Run.id > marker).order_by(Run.id)).all())


def runs_with_status(store: Store, status: str) -> list[Run]:
    """Every run in `status`, oldest first."""
    with store.session() as s:
        return list(s.exec(select(Run).where(Run.status == status).order_by(Run.id)).all())


def lineage(store: Store, run: Run) -> list[Run]:
    """The run's ancestors and the run itself, root first (a cycle in bad data stops the walk)."""
    chain = [run]
    seen = {run.id}
    with store.session() as s:
        while chain[-1].parent_run_id and chain[-1].parent_run_id not in seen:
            parent = s.get(Run, chain[-1].parent_run_id)
            if parent is None:
                break
            chain.append(parent)
            seen.add(parent.id)
    return chain[::-1]


def _audit_value(key: str, v: Any) -> str | None:
    if v is None:
        return None
    if key == "tags":
        return json.dumps(v, ensure_ascii=False)
    if key == "lam":
        return repr(float(v))
    return str(v)


def audit(s: Session, run: Run, key: str, old: Any, new: Any, *, now: str | None = None) -> None:
    """Record one change of a run's `key` (status, tags, notes, ...) in `run_audit`."""
    s.add(RunAudit(run_id=run.id, key=key, old_value=_audit_value(key, old), new_value=_audit_value(key, new),
                   changed_at=now or utcnow()))


def set_status(s: Session, run: Run, status: str, *, error: str | None = None, keep_error: bool = False,
               finished: bool | None = None, now: str | None = None) -> bool:
    """Move `run` to `status` inside the caller's transaction, writing the audit row; False if already there.

    `error` replaces the run's error (None clears it) unless `keep_error` keeps an earlier one; `finished`
    (default: the status is done or failed) stamps `finished_at`.
    """
    if status not in STATUSES:
        raise ValueError(f"unknown run status {status!r}")
    now = now or utcnow()
    new_error = (run.error or error) if keep_error else error
    if run.status == status and run.error == new_error:
        return False
    if run.status != status:
        audit(s, run, "status", run.status, status, now=now)
    run.status, run.error, run.updated_at = status, new_error, now
    if finished if finished is not None else status in FINISHED:
        run.finished_at = now
    s.add(run)
    return True


def mark_failed(store: Store, run_id: str, error: str) -> bool:
    """Mark a run that is not finished as failed (keeping an earlier error); False if it was finished."""
    with store.write() as s:
        run = s.get(Run, run_id)
        if run is None or run.status in FINISHED:
            return False
        return set_status(s, run, "failed", error=error, keep_error=True)


def add_tags(s: Session, run: Run, tags: Iterable[str], *, now: str | None = None) -> bool:
    """Append tags the run does not have yet (order kept), writing the audit row; False if nothing changed."""
    old = list(run.tags or [])
    new = old + [t for t in dict.fromkeys(tags) if t not in old]
    if new == old:
        return False
    audit(s, run, "tags", old, new, now=now)
    run.tags = new
    run.updated_at = now or utcnow()
    s.add(run)
    return True


def tag_run(store: Store, run_id: str, *tags: str) -> bool:
    """Add tags to a run in their own transaction (idempotent)."""
    with store.write() as s:
        run = s.get(Run, run_id)
        if run is None:
            raise SptError(f"no run {run_id!r} in {store.path}")
        return add_tags(s, run, tags)


# --------------------------------------------------------------------------- checkpoints


def final_checkpoint(s: Session, run_id: str) -> Checkpoint | None:
    """The run's final checkpoint (the newest, if a resumed run registered two), or None."""
    return s.exec(select(Checkpoint).where(Checkpoint.run_id == run_id, col(Checkpoint.is_final).is_(True))
                  .order_by(col(Checkpoint.created_at).desc())).first()


def checkpoints(s: Session, run_id: str, *, kind: str | None = None) -> list[Checkpoint]:
    """The run's checkpoints by step (then time)."""
    q = select(Checkpoint).where(Checkpoint.run_id == run_id)
    if kind is not None:
        q = q.where(Checkpoint.kind == kind)
    return list(s.exec(q.order_by(col(Checkpoint.step), col(Checkpoint.created_at))).all())


def checkpoint_by_prefix(s: Session, prefix: str, *, limit: int = 3) -> list[Checkpoint]:
    """Checkpoints whose id starts with `prefix` (exact prefix, at most `limit`)."""
    return list(s.exec(select(Checkpoint).where(func.substr(Checkpoint.id, 1, len(prefix)) == prefix)
                       .limit(limit)).all())


# --------------------------------------------------------------------------- metrics


def evaluation_metrics(s: Session, evaluation_id: str, *, category: str | None = None,
                       judged: bool | None = None, judge_id: str | None = None) -> list[Metric]:
    """The metric rows of one evaluation: optionally one category, only judge-less (`judged=False`) or
    judge rows (`judged=True`), or one judge's."""
    q = select(Metric).where(Metric.evaluation_id == evaluation_id)
    if category is not None:
        q = q.where(Metric.category == category)
    if judged is False:
        q = q.where(col(Metric.judge_id).is_(None))
    elif judged is True:
        q = q.where(col(Metric.judge_id).is_not(None))
    if judge_id is not None:
        q = q.where(Metric.judge_id == judge_id)
    return list(s.exec(q).all())


def latest_run_metrics(store: Store, run_id: str, names: Sequence[str], *,
                       evaluation_ids: Sequence[str] | None = None) -> dict[str, float | None]:
    """Per metric name, the run's overall value from its most recent row, judge-less rows first."""
    with store.session() as s:
        q = select(Metric).where(Metric.run_id == run_id, Metric.category == "all", col(Metric.name).in_(list(names)))
        if evaluation_ids:
            q = q.where(col(Metric.evaluation_id).in_(list(evaluation_ids)))
        rows = s.exec(q).all()
    best: dict[str, Metric] = {}
    for m in rows:
        cur = best.get(m.name)
        if cur is None or (m.judge_id is None, m.created_at or "") > (cur.judge_id is None, cur.created_at or ""):
            best[m.name] = m
    return {n: best[n].value for n in names if n in best}


def tag_status_counts(store: Store, tag: str) -> dict[str, int]:
    """How many runs tagged `tag` are in each status."""
    from sqlalchemy import text

    with store.engine.connect() as conn:
        return {k: int(v) for k, v in conn.execute(text(
            "SELECT r.status, count(*) FROM run r WHERE EXISTS (SELECT 1 FROM json_each(r.tags) je "
            "WHERE je.value = :t) GROUP BY r.status"), {"t": tag}).all()}


def metric_presets_and_categories(store: Store) -> tuple[list[str], list[str]]:
    """The refusal presets / rubrics and the categories any metric was recorded with."""
    from sqlalchemy import text

    with store.engine.connect() as conn:
        presets = [r[0] for r in conn.execute(text(
            "SELECT DISTINCT preset FROM metric WHERE preset IS NOT NULL ORDER BY preset")).all()]
        cats = [r[0] for r in conn.execute(text("SELECT DISTINCT category FROM metric ORDER BY category")).all()]
    return presets, cats


def metric_names_of_runs(store: Store, run_ids: Sequence[str]) -> list[str]:
    """The distinct metric names recorded for any of the runs (directly or through their evaluations)."""
    from sqlalchemy import text

    if not run_ids:
        return []
    params = {f"r{i}": r for i, r in enumerate(run_ids)}
    with store.engine.connect() as conn:
        return [r[0] for r in conn.execute(text(
            "SELECT DISTINCT m.name FROM metric m LEFT JOIN evaluation e ON e.id = m.evaluation_id "
            f"WHERE COALESCE(m.run_id, e.run_id) IN ({', '.join(':' + k for k in params)}) ORDER BY m.name"),
            params).all()]


def metric_counts_by_evaluation(store: Store, run_id: str) -> dict[str, int]:
    """How many metric rows each evaluation of the run has."""
    from sqlalchemy import text

    with store.engine.connect() as conn:
        return {k: int(v) for k, v in conn.execute(text(
            "SELECT evaluation_id, COUNT(*) FROM metric WHERE run_id = :r GROUP BY evaluation_id"),
            {"r": run_id}).all()}


def tagged_run_rows(db: Path, tag: str, *, with_untagged_in_flight: bool = False) -> list[tuple[Any, ...]]:
    """(id, status, error, sweep index, sweep errors JSON, updated_at, last checkpoint step) of the runs
    tagged `tag` in the store file `db`, read through a read-only connection (another process may be
    writing it); with `with_untagged_in_flight`, also untagged running or interrupted runs. [] when the file
    is missing, empty or unreadable: the caller reports that task as not started."""
    import sqlite3

    if not db.exists() or db.stat().st_size == 0:
        return []
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error:
        return []
    try:
        return con.execute(
            "SELECT r.id, r.status, r.error, json_extract(r.config, '$.sweep.index'), "
            "json_extract(r.config, '$.sweep.errors'), r.updated_at, "
            "(SELECT max(c.step) FROM checkpoint c WHERE c.run_id = r.id) "
            "FROM run r WHERE EXISTS (SELECT 1 FROM json_each(r.tags) je WHERE je.value = ?) "
            "OR (? AND r.status IN ('running', 'interrupted') AND json_extract(r.config, '$.sweep') IS NULL) "
            "ORDER BY r.id", (tag, with_untagged_in_flight)).fetchall()
    except sqlite3.Error:
        return []
    finally:
        con.close()
