"""`spt runs` (list, show, set) over runs, evaluations, metrics and judgments inserted directly."""

from __future__ import annotations

import csv
import io
import json

import pytest
from sqlmodel import select
from test_frontier_fixtures import add_eval, add_judge, add_metric, add_run, realistic_store
from typer.testing import CliRunner

from spt.cli import app
from spt.errors import SptError
from spt.runs import KEY_METRICS, list_runs, set_run, show_run
from spt.store import new_id
from spt.store.models import Generation, Item, Judgment, Run, RunAudit

runner = CliRunner()


def cli(db_path, *args):
    return runner.invoke(app, ["--db", str(db_path), *args])


@pytest.fixture
def filled(store):
    return store, realistic_store(store)


def test_list_runs_with_key_metrics(filled):
    store, data = filled
    runs = list_runs(store)
    assert len(runs) == 14 and runs[0]["kind"] == "base"
    by_id = {r["id"]: r for r in runs}
    r = by_id[data["runs"][4].id]  # anchor λ=0.1
    assert r["defense"] == "anchor" and r["status"] == "done" and r["tags"] == ["sweep1", "anchor"]
    assert set(r["metrics"]) == set(KEY_METRICS) and all(v is not None for v in r["metrics"].values())
    assert by_id[data["base"].id]["metrics"]["task_accuracy"] is None
    assert len(list_runs(store, ["defense=anchor", "lam=1"])) == 1
    assert len(list_runs(store, ["kind=base", "kind=align"])) == 2
    assert len(list_runs(store, ["defense="])) == 2  # unset defense: base and align
    assert len(list_runs(store, ["tag=proximal"])) == 4
    with pytest.raises(SptError, match="valid keys"):
        list_runs(store, ["colour=red"])


def test_cli_runs_list_json_csv(filled, db_path):
    res = cli(db_path, "runs")
    assert res.exit_code == 0, res.output
    assert "refusal" in res.output and "task loss" in res.output and "14 run(s)" in res.output
    res = cli(db_path, "runs", "--json", "--where", "defense=proximal")
    data = json.loads(res.stdout)
    assert len(data) == 4 and {d["defense"] for d in data} == {"proximal"} and "metrics" in data[0]
    res = cli(db_path, "runs", "--csv", "--where", "poison=0.05")
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert len(rows) == 12 and set(KEY_METRICS) <= set(rows[0]) and rows[0]["status"] == "done"
    assert float(rows[0]["task_loss"]) > 0
    res = cli(db_path, "runs", "--limit", "3")
    assert "newest 3 of 14" in res.output
    res = cli(db_path, "runs", "--where", "lam=x")
    assert res.exit_code == 2 and "lam must be a number" in res.output
    res = cli(db_path, "runs", "--csv", "--json")
    assert res.exit_code == 2


def test_cli_runs_empty(store, db_path):
    res = cli(db_path, "runs")
    assert res.exit_code == 0 and "no runs yet" in res.output


def test_cli_runs_missing_store_creates_nothing(tmp_path):
    missing = tmp_path / "typo.db"
    res = cli(missing, "runs")
    assert res.exit_code == 2 and "does not exist" in res.output and not missing.exists()


def test_show_run_lineage_deltas_and_judgments(filled, db_path):
    store, data = filled
    run = data["runs"][6]  # anchor λ=1.0
    with store.write() as s:
        judge = add_judge(s)
        item = Item(id="sha256:item1", prompt="p", label="harmful")
        s.add(item)
        s.flush()
        ev = add_eval(s, run, minute=500)
        s.flush()
        for k, status in enumerate(["scored", "scored", "unscored"]):
            g = Generation(id=new_id(), evaluation_id=ev.id, item_id=item.id if k == 0 else _item(s, k),
                           prompt="p", response="r")
            s.add(g)
            s.flush()
            s.add(Judgment(judge_id=judge.id, generation_id=g.id, cache_key=f"c{k}", status=status,
                           reason=None if status == "scored" else "parse_failure", score=1.0))
        add_metric(s, run, ev, "harmfulness_mean", 1.5, judge=judge.id)
    info = show_run(store, run.id[:28])
    assert info["run"]["id"] == run.id and info["run"]["config"]["lam"] == 1.0
    chain = info["lineage"]
    assert [c["kind"] for c in chain] == ["base", "align", "finetune"]
    align_step, ft = chain[1], chain[2]
    assert align_step["metrics"]["alignment_loss"]["delta"] == pytest.approx(0.9 - 1.9)
    al = ft["metrics"]["alignment_loss"]
    assert al["parent_value"] == 0.9 and al["delta"] == pytest.approx(al["value"] - 0.9)
    assert ft["metrics"]["task_accuracy"]["delta"] is None  # parent has none
    assert "harmfulness_mean@openai:gpt-4o-mini/harmfulness" in ft["metrics"]
    assert len(info["evaluations"]) == 3 and info["evaluations"][-1]["n_generations"] == 3
    assert info["judgments"] == [{"judge_id": judge.id, "judge": judge.name, "total": 3, "superseded": 0,
                                  "by_status": {"scored": 2, "unscored": 1}}]
    res = cli(db_path, "runs", "show", run.id[:28])
    assert res.exit_code == 0, res.output
    for text in ("lineage", "alignment_loss", "(-0.", "evaluations", "judgments", "unscored", "config"):
        assert text in res.output
    res = cli(db_path, "runs", "show", run.id, "--json")
    assert json.loads(res.stdout)["run"]["id"] == run.id
    res = cli(db_path, "runs", "show", "zzzz")
    assert res.exit_code == 2 and "no run 'zzzz'" in res.output


def _item(s, k):
    it = Item(id=f"sha256:item{k + 1}", prompt=f"p{k}", label="harmful")
    s.add(it)
    s.flush()
    return it.id


def test_set_run_writes_audit(filled, db_path):
    store, data = filled
    run = data["runs"][5]  # anchor λ=0.3
    out = set_run(store, run.id, ["lam=0.25", "tags=a, b,a", "notes=re-labelled: λ typo", "defense=anchor"])
    assert [c["key"] for c in out["changes"]] == ["lam", "tags", "notes"] and out["unchanged"] == ["defense"]
    with store.session() as s:
        row = s.get(Run, run.id)
        audits = s.exec(select(RunAudit).where(RunAudit.run_id == run.id).order_by(RunAudit.key)).all()
    assert row.lam == 0.25 and row.tags == ["a", "b"] and row.notes == "re-labelled: λ typo"
    got = {a.key: (a.old_value, a.new_value) for a in audits}
    assert got == {"lam": ("0.3", "0.25"), "tags": ('["sweep1", "anchor"]', '["a", "b"]'),
                   "notes": (None, "re-labelled: λ typo")}
    assert all(a.changed_at for a in audits)
    # via the CLI, with unset
    res = cli(db_path, "runs", "set", run.id[:28], "defense=proximal", "lam=")
    assert res.exit_code == 0, res.output
    assert "defense: 'anchor' → 'proximal'" in res.output
    with store.session() as s:
        row = s.get(Run, run.id)
        n = len(s.exec(select(RunAudit).where(RunAudit.run_id == run.id)).all())
    assert row.defense == "proximal" and row.lam is None and n == 5
    info = show_run(store, run.id)
    assert [a["key"] for a in info["audit"]][-2:] == ["defense", "lam"]


@pytest.mark.parametrize("args,message", [
    (["status=done"], "cannot set 'status'; settable keys: defense, lam, tags, notes"),
    (["lam=abc"], "lam 'abc' is not a number"),
    (["lam=-1"], "finite number ≥ 0"),
    (["lam=inf"], "finite number ≥ 0"),
    (["defense=two words"], "defense 'two words'"),
    (["lam"], "expected KEY=VALUE"),
    (["lam=1", "lam=2"], "given twice"),
    (["tags=a b"], "whitespace"),
])
def test_set_run_refuses_bad_input(filled, db_path, args, message):
    store, data = filled
    run = data["runs"][0]
    res = cli(db_path, "runs", "set", run.id, "notes=should not be written", *args)
    assert res.exit_code == 2, res.output
    assert message in res.output and len(res.output.strip().splitlines()) == 1
    with store.session() as s:
        assert s.get(Run, run.id).notes is None  # validated before anything was written
        assert s.exec(select(RunAudit)).all() == []


def test_set_unknown_run(filled, db_path):
    res = cli(db_path, "runs", "set", "nope", "lam=1")
    assert res.exit_code == 2 and "no run 'nope'" in res.output


def test_list_and_frontier_one_query_scale(store):
    """Hundreds of runs with several evaluations each list and plot quickly (no query per run)."""
    import time

    with store.write() as s:
        for i in range(400):
            run = add_run(s, defense=("anchor", "none", "proximal")[i % 3], lam=0.1 * (i % 7 + 1), minute=i)
            s.flush()
            e1, e2 = add_eval(s, run, minute=i), add_eval(s, run, minute=i + 0.5)
            for name in ("alignment_loss", "refusal_rate", "over_refusal_rate"):
                for cat in ("all", "a", "b"):
                    add_metric(s, run, e1, name, (i * 7919 % 1000) / 1000, category=cat)
            add_metric(s, run, e2, "task_loss", (i * 104729 % 1000) / 1000)
    from spt.frontier import compute_frontier

    t = time.perf_counter()
    runs = list_runs(store)
    r = compute_frontier(store, ref=(2, 2))
    assert len(runs) == 400 and len(r.points) == 400
    assert time.perf_counter() - t < 3.0


def test_show_says_what_the_default_poison_is(store, db_path):
    """A poisoned run's page says the built-in poison is redacted and what ASR then measures."""
    with store.write() as s:
        builtin = add_run(s, poison=0.1, config={"poison_data": "builtin:harmor-comply", "poison": 0.1})
        own = add_run(s, poison=0.1, config={"poison_data": "my-harmful", "poison": 0.1})
        clean = add_run(s, poison=0.0, config={"poison_data": "builtin:harmor-comply", "poison": 0.0})
    info = show_run(store, builtin.id)
    assert info["poison"]["dataset"] == "builtin:harmor-comply"
    assert "redacted" in info["poison"]["note"] and "attack success" in info["poison"]["note"]
    assert "my-harmful" in show_run(store, own.id)["poison"]["note"]
    assert show_run(store, clean.id)["poison"] is None
    r = cli(db_path, "runs", "show", builtin.id)
    assert r.exit_code == 0, r.output
    assert "redacted" in r.output and "--poison-data" in r.output
    r = cli(db_path, "runs", "show", clean.id)
    assert r.exit_code == 0 and "redacted" not in r.output
