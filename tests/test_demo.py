"""`spt demo` end to end on the tiny model (the real model runs in the README's first command)."""

from __future__ import annotations

import json

from sqlmodel import select
from typer.testing import CliRunner

from spt.cli import app
from spt.demo import check_tradeoff
from spt.store import open_store
from spt.store.models import Run


def test_demo_quick_on_tiny_model_runs_everything_and_resumes(tmp_path):
    db = tmp_path / "demo.db"
    plot = tmp_path / "frontier.png"
    args = ["demo", "--quick", "--model", "tiny-random", "--db", str(db), "--plot", str(plot), "--json"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    out = json.loads(first.stdout)
    names = [r["model"] for r in out["rows"]]
    assert names[:2] == ["base", "aligned"] and "none" in names and "anchor" in names
    assert all(r["status"] in ("done", "reused") for r in out["rows"])
    assert all(r["refusal_rate"] is not None and r["task_loss"] is not None for r in out["rows"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out["frontier"]["n_points"] == 4 and out["frontier"]["rows"], "all demo runs are points"
    with open_store(db) as store, store.session() as s:
        n_runs = len(s.exec(select(Run)).all())
    assert n_runs == 4  # base, align, none, anchor

    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    with open_store(db) as store, store.session() as s:
        assert len(s.exec(select(Run)).all()) == n_runs  # resumed: nothing retrained


def _row(model, lam, refusal, align_loss, task_loss):
    return {"model": model, "lam": lam, "refusal_rate": refusal, "alignment_loss": align_loss, "task_loss": task_loss}


def test_tradeoff_checks_follow_the_numbers():
    good = [_row("base", None, 0.1, 3.0, 2.0), _row("aligned", None, 0.9, 1.0, 2.0),
            _row("none", None, 0.3, 2.0, 1.0), _row("anchor", 0.1, 0.5, 1.5, 1.1), _row("anchor", 0.6, 0.8, 1.2, 1.3)]
    assert [c["ok"] for c in check_tradeoff(good)] == [True, True, True]
    bad = [_row("base", None, 0.9, 3.0, 2.0), _row("aligned", None, 0.5, 1.0, 2.0),
           _row("none", None, 0.6, 2.0, 1.0), _row("anchor", 0.6, 0.2, 2.5, 0.9)]
    assert [c["ok"] for c in check_tradeoff(bad)] == [False, False, False]
