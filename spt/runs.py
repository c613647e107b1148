"""Listing and inspecting runs (the library behind `spt runs`)."""

from __future__ import annotations

from typing import Any

from sqlmodel import select

from spt.errors import SptError
from spt.store.engine import Store
from spt.store.models import Checkpoint, Evaluation, Run


def list_runs(store: Store) -> list[dict[str, Any]]:
    """All runs, oldest first, as plain dicts."""
    with store.session() as s:
        return [r.model_dump() for r in s.exec(select(Run).order_by(Run.id)).all()]


def resolve_run(store: Store, run_id: str) -> Run:
    """A run by full id or unique prefix; a clear error otherwise."""
    with store.session() as s:
        run = s.get(Run, run_id)
        if run is not None:
            return run
        matches = s.exec(select(Run).where(Run.id.startswith(run_id))).all() if run_id else []
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise SptError(f"no run {run_id!r} in {store.path}; list runs with `spt runs`")
    raise SptError(f"run prefix {run_id!r} is ambiguous ({len(matches)} runs); give more characters")


def show_run(store: Store, run_id: str) -> dict[str, Any]:
    """A run with its checkpoints and evaluations."""
    run = resolve_run(store, run_id)
    with store.session() as s:
        ckpts = s.exec(select(Checkpoint).where(Checkpoint.run_id == run.id).order_by(Checkpoint.step)).all()
        evals = s.exec(select(Evaluation).where(Evaluation.run_id == run.id)).all()
    return {
        "run": run.model_dump(),
        "checkpoints": [c.model_dump() for c in ckpts],
        "evaluations": [e.model_dump() for e in evals],
    }
