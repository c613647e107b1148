"""Runs and frontier tables show both stages of a two-stage run: the alignment variant it started from."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from spt.cli import app
from spt.store.models import Run
from spt.store.selection import select_runs


def _runs(store) -> dict[str, str]:
    base = Run(kind="base", model_ref="tiny-random", status="done")
    aligned = {
        "sft": Run(kind="align", model_ref="tiny-random", defense="none", status="done", config={"method": "sft"},
                   parent_run_id=base.id),
        "vaccine": Run(kind="align", model_ref="tiny-random", defense="vaccine", status="done",
                       config={"method": "sft"}, parent_run_id=base.id),
        "dpo": Run(kind="align", model_ref="tiny-random", defense="none", status="done", config={"method": "dpo"},
                   parent_run_id=base.id),
    }
    tasks = {k: Run(kind="finetune", model_ref="tiny-random", defense="anchor", lam=0.3, poison_ratio=0.1,
                    status="done", parent_run_id=a.id, task="builtin:arithmetic") for k, a in aligned.items()}
    orphan = Run(kind="finetune", model_ref="tiny-random", defense="none", status="done", parent_run_id=base.id)
    with store.write() as s:
        s.add(base)
        s.add_all([*aligned.values(), *tasks.values(), orphan])
    return {**{f"task-{k}": t.id for k, t in tasks.items()}, "orphan": orphan.id, "base": base.id,
            "align-vaccine": aligned["vaccine"].id}


def test_each_run_carries_its_alignment_variant(store):
    ids = _runs(store)
    by_id = {r["id"]: r["aligned_by"] for r in select_runs(store)}
    assert by_id[ids["task-sft"]] == "none" and by_id[ids["task-vaccine"]] == "vaccine"
    assert by_id[ids["task-dpo"]] == "dpo"
    assert by_id[ids["orphan"]] is None and by_id[ids["base"]] is None and by_id[ids["align-vaccine"]] is None


def test_runs_table_and_json_show_the_alignment_variant(store, db_path):
    ids = _runs(store)
    r = CliRunner().invoke(app, ["--db", str(db_path), "runs"])
    assert r.exit_code == 0, r.output
    assert "aligned by" in r.output and "vaccine" in r.output and "dpo" in r.output
    r = CliRunner().invoke(app, ["--db", str(db_path), "runs", "--json"])
    rows = {x["id"]: x for x in json.loads(r.stdout)}
    assert rows[ids["task-dpo"]]["aligned_by"] == "dpo"


def test_frontier_table_shows_the_alignment_variant(store, db_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_frontier_fixtures import add_eval, add_metric, add_run

    with store.write() as s:
        base = add_run(s, kind="base", task=None, minute=0)
        vac = add_run(s, kind="align", defense="vaccine", parent=base.id, task=None, minute=1,
                      config={"method": "sft"})
        dpo = add_run(s, kind="align", defense="none", parent=base.id, task=None, minute=2, config={"method": "dpo"})
        for k, (parent, lam) in enumerate([(vac, 0.1), (vac, 0.3), (dpo, 0.1), (dpo, 0.3)]):
            r = add_run(s, defense="anchor", lam=lam, poison=0.1, parent=parent.id, minute=3 + k)
            ev = add_eval(s, r, minute=3 + k)
            add_metric(s, r, ev, "task_loss", 1.0 + lam + k / 10)
            add_metric(s, r, ev, "alignment_loss", 2.0 - lam - k / 10)
    from spt.frontier import compute_frontier

    res = compute_frontier(store, x="task_loss", y="alignment_loss", ref=(3.0, 3.0))
    assert sorted(p.aligned_by for p in res.points) == ["dpo", "dpo", "vaccine", "vaccine"]
    r = CliRunner().invoke(app, ["--db", str(db_path), "frontier", "--x", "task_loss", "--y", "alignment_loss",
                                 "--all-points", "--ref", "3,3"])
    assert r.exit_code == 0, r.output
    assert "aligned by" in r.output and "vaccine" in r.output and "dpo" in r.output
