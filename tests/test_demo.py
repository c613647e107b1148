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
    assert len(claims) == 6
    for c in claims.values():  # every claim is a paired test with an interval; ok only when it excludes 0
        if "diff" in c:
            assert c["ci_low"] <= c["diff"] <= c["ci_high"] and c["n"] > 0
        else:  # the tiny random model's replies are empty: degenerate, so no refusal verdict to compare
            assert c["ok"] is False and c["metric"] in ("refusal_rate", "pair_score") and c["metric"] in c["detail"]
    assert "diff" in claims["anchor costs task performance (higher task loss)"]
    acc = claims["task fine-tuning raises task accuracy (aligned model vs the no-poison fine-tune)"]
    assert acc["metric"] == "task_accuracy" and "diff" in acc and acc["n"] > 0
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


def test_a_claim_with_nothing_scored_says_so(store):
    """Every reply degenerate: no verdict anywhere, so the claim is 'nothing scored', not 'not shown at this n'."""
    from spt.demo import check_claims
    from spt.store import content_id, new_id
    from spt.store.models import Evaluation, Generation, Item, Run

    items = [Item(id=content_id([f"{lab} {k}"]), prompt=f"{lab} {k}", response="r", label=lab, category="c",
                  pair_id=f"p{k}", sensitive_word=f"w{k}") for k in range(6) for lab in ("harmful", "benign")]
    runs = []
    with store.write() as s:
        s.add_all(items)
        for _ in range(2):
            run = Run(id=new_id(), kind="base", model_ref="m", base_model="m", status="done")
            s.add(run)
            s.flush()
            ev = Evaluation(id=new_id(), run_id=run.id, identity=new_id(), split="test", refusal_preset="spt",
                            status="done", config={"identity_fields": {"v": 2, "weights": run.id}})
            s.add(ev)
            s.flush()
            s.add_all([Generation(evaluation_id=ev.id, item_id=it.id, prompt=it.prompt, response="") for it in items])
            runs.append(run.id)
    claims = check_claims(store, runs[0], runs[1], {})
    assert [c["metric"] for c in claims] == ["refusal_rate", "pair_score"]  # the claims on base vs aligned
    assert all(c["status"] == "nothing scored" for c in claims)
    c = claims[0]
    assert c["status"] == "nothing scored" and not c["ok"] and c["n"] == 0 and c["n_dropped"] == 6
    assert "nothing scored" in c["detail"] and "degenerate" in c["detail"]
