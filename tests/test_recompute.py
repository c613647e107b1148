"""`spt evaluate --recompute-metrics`: metrics from stored responses, losses and judgments, no model, no generation."""

from __future__ import annotations

import json
import shutil

import pytest
from sqlmodel import func, select
from typer.testing import CliRunner

from spt.cli import app
from spt.store.models import Checkpoint, Evaluation, Generation, Metric, Run

runner = CliRunner()
KEYS = ("value", "ci_low", "ci_high", "ci_method", "n", "n_unscored", "preset")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from spt.models import resolve_model

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPT_CACHE", str(tmp_path_factory.getbasetemp().parent / "spt-test-cache"))
        src = resolve_model("tiny-random").path
    dst = tmp_path_factory.mktemp("recompute-ckpt") / "final"
    shutil.copytree(src, dst)
    return str(dst)


def cli(db, *args: str):
    return runner.invoke(app, ["--db", str(db), *args])


@pytest.fixture
def evaluated(store, db_path, tiny_dir):
    """A done evaluation of a tiny-random 'run' on HarmOR test (12 items) and the arithmetic task, judged."""
    run = Run(kind="finetune", model_ref="tiny-random", base_model="tiny-random:0", status="done",
              task="builtin:arithmetic")
    with store.write() as s:
        s.add(run)
        s.add(Checkpoint(run_id=run.id, step=1, kind="full", path=tiny_dir, is_final=True))
    r = cli(db_path, "evaluate", run.id, "--limit", "12", "--max-new-tokens", "4", "--json")
    assert r.exit_code == 0, r.output
    ev_id = json.loads(r.stdout)["evaluation_id"]
    r = cli(db_path, "judge", ev_id, "--judge", "keyword:gcg")
    assert r.exit_code == 0, r.output
    return {"run": run.id, "ev": ev_id, "db": db_path, "store": store}


def _metrics(store, ev_id) -> dict[tuple, dict]:
    with store.session() as s:
        rows = s.exec(select(Metric).where(Metric.evaluation_id == ev_id)).all()
    return {(m.name, m.category, m.judge_id): {k: getattr(m, k) for k in KEYS} for m in rows}


def _no_model(monkeypatch):
    import spt.models.load as load

    def boom(*a, **k):
        raise AssertionError("recomputing metrics must not load a model")

    monkeypatch.setattr(load, "load_model", boom)


def test_recompute_reproduces_every_metric_exactly_without_a_model(evaluated, monkeypatch):
    store, ev = evaluated["store"], evaluated["ev"]
    before = _metrics(store, ev)
    names = {k[0] for k in before}
    assert {"refusal_rate", "over_refusal_rate", "alignment_loss", "task_loss", "task_accuracy"} <= names
    assert any(k[2] is not None for k in before), "the keyword judge's metrics are there too"
    with store.write() as s:  # lose every metric row
        for m in s.exec(select(Metric).where(Metric.evaluation_id == ev)).all():
            s.delete(m)
    with store.session() as s:
        n_gen = s.exec(select(func.count()).select_from(Generation)).one()
        finished = s.get(Evaluation, ev).finished_at
    _no_model(monkeypatch)
    r = cli(evaluated["db"], "evaluate", "--recompute-metrics", evaluated["run"][:13], "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)["evaluations"]
    assert [d["evaluation_id"] for d in out] == [ev] and out[0]["kept"] == [] and out[0]["n_judge_metrics"] > 0
    after = _metrics(store, ev)
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert after[k] == v, (k, v, after[k])
    with store.session() as s:
        assert s.exec(select(func.count()).select_from(Generation)).one() == n_gen
        assert s.get(Evaluation, ev).finished_at == finished and s.get(Evaluation, ev).status == "done"


def test_a_new_metric_reaches_finished_evaluations(evaluated, monkeypatch):
    """What the issue asks for: a metric added to the code is computed for old evaluations, no regeneration."""
    import spt.eval.metrics as metrics

    store, ev = evaluated["store"], evaluated["ev"]
    real = metrics.refusal_metrics

    def with_extra(records, verdict, preset):
        recs = list(records)
        empty = sum(1 for r in recs if not (r.get("response") or "").strip())
        extra = metrics.summarize("empty_response_rate", {"any": [1.0] * empty + [0.0] * (len(recs) - empty)},
                                  metrics.RATE, preset=preset)
        return real(recs, verdict, preset) + extra

    monkeypatch.setattr(metrics, "refusal_metrics", with_extra)
    _no_model(monkeypatch)
    r = cli(evaluated["db"], "evaluate", "--recompute-metrics", ev, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)["evaluations"][0]
    assert "empty_response_rate/all" in d["added"] and d["changed"] == []
    got = _metrics(store, ev)[("empty_response_rate", "all", None)]
    assert got["n"] == 12 and got["ci_low"] <= got["value"] <= got["ci_high"]  # the 12 HarmOR responses


def test_changed_metric_is_reported_and_losses_without_stored_items_are_kept(evaluated, monkeypatch):
    store, ev = evaluated["store"], evaluated["ev"]
    with store.write() as s:  # a stale number, and an evaluation made before per-item losses were kept
        m = s.exec(select(Metric).where(Metric.evaluation_id == ev, Metric.name == "refusal_rate",
                                        Metric.category == "all", Metric.judge_id.is_(None))).one()
        right = m.value
        m.value = 0.123456
        s.add(m)
        g = s.exec(select(Generation).where(Generation.evaluation_id == ev)).first()
        g.meta = {k: v for k, v in (g.meta or {}).items() if k != "loss"}
        s.add(g)
    before_loss = {k: v for k, v in _metrics(store, ev).items() if k[0].endswith("_loss") or "_loss_" in k[0]}
    _no_model(monkeypatch)
    r = cli(evaluated["db"], "evaluate", "--recompute-metrics", ev, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)["evaluations"][0]
    assert "refusal_rate/all" in d["changed"]
    assert d["kept"] in (["alignment_loss"], ["task_loss"])
    after = _metrics(store, ev)
    assert after[("refusal_rate", "all", None)]["value"] == right
    kept = d["kept"][0]
    assert {k: v for k, v in after.items() if k[0].startswith(kept)} == \
        {k: v for k, v in before_loss.items() if k[0].startswith(kept)}


@pytest.mark.parametrize("args, message", [
    (["--recompute-metrics", "nope"], "no run or evaluation 'nope'"),
    (["--recompute-metrics", "--limit", "3"], "--limit does not apply to --recompute-metrics"),
    (["--recompute-metrics", "--responses", "x.jsonl"], "--responses does not apply"),
])
def test_bad_recompute_input_is_one_line_and_writes_nothing(evaluated, args, message):
    store, ev = evaluated["store"], evaluated["ev"]
    before = _metrics(store, ev)
    r = cli(evaluated["db"], "evaluate", *args)
    assert r.exit_code != 0 and message in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert _metrics(store, ev) == before


def test_recompute_on_a_missing_store_creates_nothing(tmp_path):
    db = tmp_path / "typo.db"
    r = cli(db, "evaluate", "--recompute-metrics")
    assert r.exit_code != 0 and not db.exists()


def test_unfinished_evaluation_is_refused(evaluated):
    store, ev = evaluated["store"], evaluated["ev"]
    with store.write() as s:
        e = s.get(Evaluation, ev)
        e.status = "failed"
        s.add(e)
    r = cli(evaluated["db"], "evaluate", "--recompute-metrics", ev)
    assert r.exit_code != 0 and "is failed, not done" in r.output
