"""`spt demo` end to end on the tiny model (the real model runs in the README's first command)."""

from __future__ import annotations

import json

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from spt.cli import app
from spt.demo import claim_holds
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
    assert names == ["base", "aligned", "control", "none", "anchor λ=0.6"]
    assert [len(r["runs"]) for r in out["rows"]] == [1, 1, 2, 2, 2]  # two seeds per fine-tuned configuration
    assert all(r["alignment_loss"] is not None and r["task_loss"] is not None for r in out["rows"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fr = out["frontier"]
    assert fr["n_points"] == 4, "base, aligned, none and anchor configurations (the control is kept apart)"
    base = out["rows"][0]
    assert fr["ref_source"].startswith("fixed: ") and fr["ref"] == [base["task_loss"], base["alignment_loss"]]
    assert all(g["hv_ci_low"] is not None for g in fr["groups"])
    claims = {c["claim"]: c for c in out["checks"]}
    assert len(claims) == 4
    for c in claims.values():  # every claim is a paired test with an interval; ok only when it excludes 0
        if "diff" in c:
            assert c["ci_low"] <= c["diff"] <= c["ci_high"] and c["n"] > 0
        else:  # the tiny random model's replies are empty: degenerate, so no refusal verdict to compare
            assert c["ok"] is False and "refusal" in c["detail"]
    assert "diff" in claims["anchor costs task performance (higher task loss)"]
    with open_store(db) as store, store.session() as s:
        n_runs = len(s.exec(select(Run)).all())
    assert n_runs == 8  # base, align, 3 configurations x 2 seeds

    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    with open_store(db) as store, store.session() as s:
        assert len(s.exec(select(Run)).all()) == n_runs  # resumed: nothing retrained
    text = CliRunner().invoke(app, args[:-1])
    assert text.exit_code == 0 and ("not shown at this n" in text.output or "✓" in text.output)


@pytest.mark.parametrize("lo,hi,p,sign,ok", [
    (0.05, 0.30, 0.01, 1, True), (-0.05, 0.30, 0.01, 1, False), (0.05, 0.30, 0.2, 1, False),
    (0.05, 0.30, None, 1, True), (-0.4, -0.1, None, -1, True), (-0.4, 0.01, None, -1, False),
    (0.1, 0.4, None, -1, False),
])
def test_a_claim_needs_its_interval_to_exclude_zero(lo, hi, p, sign, ok):
    assert claim_holds(lo, hi, p, sign) is ok
