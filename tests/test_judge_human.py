"""Agreement with human verdicts: `spt judge --agreement` for every judge and keyword preset."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from spt.cli import app
from spt.errors import SptError
from spt.eval.external import ExternalSpec, import_responses
from spt.eval.refusal import PRESETS, classify
from spt.judge import agreement, human_agreement, judge_evaluations, parse_judge_spec
from spt.judge.human import agreement_stats, kappa_from_cells, kappa_interval
from spt.stats import clopper_pearson_interval

DATA = Path(__file__).parent / "data"
COMPLETIONS = DATA / "external_completions.csv"
runner = CliRunner()


def cli(db, *args):
    return runner.invoke(app, [str(a) for a in args] + ["--db", str(db)])


def imported(store) -> dict:
    return import_responses(store, ExternalSpec(responses=COMPLETIONS, model_name="m", response_col="completion",
                                                verdict_col="human"))


def fixture_rows() -> list[dict]:
    with COMPLETIONS.open(newline="") as f:
        return [r for r in csv.DictReader(f) if r["human"]]


def test_kappa_matches_the_textbook_formula():
    # Cohen's example: 20 both yes, 5 / 10 disagree, 15 both no -> po 0.7, pe 0.5, kappa 0.4
    assert kappa_from_cells(20, 5, 10, 15) == pytest.approx(0.4)
    assert kappa_from_cells(10, 0, 0, 0) is None  # both raters constant: undefined, never 1 or 0
    h = [True] * 25 + [False] * 25
    p = [True] * 20 + [False] * 5 + [True] * 10 + [False] * 15
    lo, hi = kappa_interval(h, p, seed=1)
    assert lo < 0.4 < hi and hi - lo < 0.6
    # clustered data (5 words of 10 similar prompts each) gives a wider interval than independent items
    words = [i // 10 for i in range(50)]
    lo_c, hi_c = kappa_interval(h, p, words, seed=1)
    assert (hi_c - lo_c) > (hi - lo)
    assert kappa_interval(h, p, seed=1) == (lo, hi)  # deterministic for a seed


def test_agreement_stats_counts_degenerate_apart():
    recs = [("full_refusal", "refusal", "a"), ("partial_refusal", "compliance", "b"),
            ("full_compliance", "compliance", "c"), ("full_compliance", "degenerate", "d"),
            ("full_refusal", "unscored", "e")]
    st = agreement_stats(recs)
    assert st["n"] == 3 and st["n_degenerate"] == 1 and st["n_unscored"] == 1
    assert (st["tp"], st["fn"], st["fp"], st["tn"]) == (1, 1, 0, 1)
    assert st["accuracy"] == pytest.approx(2 / 3)
    assert tuple(st["accuracy_ci"]) == pytest.approx(clopper_pearson_interval(2, 3))
    assert st["confusion"]["full_compliance"]["degenerate"] == 1
    # perfect agreement: kappa 1, but never a zero-width interval
    perfect = agreement_stats([("full_refusal", "refusal", i) for i in range(14)]
                              + [("full_compliance", "compliance", 100 + i) for i in range(14)])
    assert perfect["kappa"] == 1.0 and perfect["kappa_ci"][1] == 1.0 and perfect["kappa_ci"][0] < 0.9


def test_every_preset_and_judge_against_human(store):
    out = imported(store)
    judge_evaluations(store, [out["evaluation_id"]], judges=["keyword:gcg", "keyword"])
    res = human_agreement(store)
    assert res["evaluations"] == [out["evaluation_id"]] and res["human_judges"][0]["n_verdicts"] == 29
    by = {r["candidate"]: r for r in res["rows"]}
    assert set(by) == {f"preset:{p}" for p in PRESETS} | {"keyword:gcg", "keyword:spt"}
    rows = fixture_rows()
    for p in PRESETS:
        allc = by[f"preset:{p}"]["categories"][0]
        assert allc["category"] == "all"
        verdicts = [classify(r["completion"], p) for r in rows]
        decided = [(r["human"] != "compliance", v == "refusal") for r, v in zip(rows, verdicts, strict=True)
                   if v != "degenerate"]
        assert allc["n"] == len(decided) and allc["n_degenerate"] == sum(v == "degenerate" for v in verdicts)
        assert allc["accuracy"] == pytest.approx(sum(a == b for a, b in decided) / len(decided))
        assert allc["accuracy_ci"][0] <= allc["accuracy"] <= allc["accuracy_ci"][1]
        if allc["kappa"] is not None:
            assert allc["kappa_ci"][0] <= allc["kappa"] <= allc["kappa_ci"][1]
        cats = {c["category"] for c in by[f"preset:{p}"]["categories"][1:]}
        assert cats == {"violence", "cybercrime", "drugs"}
        assert sum(c["n"] for c in by[f"preset:{p}"]["categories"][1:]) == allc["n"]
    # the stored keyword judge agrees with the recomputed preset (degenerate = unscored judgment)
    j, p = by["keyword:spt"]["categories"][0], by["preset:spt"]["categories"][0]
    assert (j["tp"], j["fn"], j["fp"], j["tn"], j["n_degenerate"]) == (p["tp"], p["fn"], p["fp"], p["tn"],
                                                                       p["n_degenerate"])
    # the spt preset agrees better with the humans than GCG's substring list on this file
    assert by["preset:spt"]["categories"][0]["accuracy"] > by["preset:gcg"]["categories"][0]["accuracy"]
    # judge-vs-judge agreement still works, and includes the human judge
    pairs = agreement(store, [out["evaluation_id"]])["pairs"]
    assert any("human" in (x["a_name"], x["b_name"]) for x in pairs)


def test_duplicate_evaluations_of_one_run_count_once(store):
    a = imported(store)
    import_responses(store, ExternalSpec(responses=COMPLETIONS, model_name="m", response_col="completion",
                                         verdict_col="human", refusal_preset="gcg"))
    res = human_agreement(store)
    assert len(res["evaluations"]) == 2
    assert res["human_judges"][0]["n_verdicts"] == 29
    assert a["run_id"]


def test_cli_agreement_prints_every_preset(tmp_path):
    db = tmp_path / "s.db"
    r = cli(db, "evaluate", "--responses", COMPLETIONS, "--model-name", "some-model", "--prompt-col", "prompt",
            "--response-col", "completion", "--label-col", "label", "--verdict-col", "human")
    assert r.exit_code == 0, r.output
    r = cli(db, "judge", "--agreement")
    assert r.exit_code == 0, r.output
    for p in PRESETS:
        assert f"preset:{p}" in r.stdout
    assert "kappa" in r.stdout and "confusion" in r.stdout and "per category" in r.stdout
    r = cli(db, "judge", "--agreement", "--json")
    res = json.loads(r.stdout)
    assert res["human"]["rows"] and "pairs" in res


def test_agreement_errors(tmp_path, store):
    db = tmp_path / "empty.db"
    r = cli(db, "judge", "--agreement")
    assert r.exit_code == 2 and "no evaluation has any" in r.stderr
    with pytest.raises(SptError, match="no evaluation has human verdicts"):
        human_agreement(store)
    with pytest.raises(SptError, match="human verdicts are imported"):
        parse_judge_spec("human")


def test_kappa_interval_covers(store):
    """Coverage sanity: two raters agreeing 85% of the time; the 95% interval covers the true kappa."""
    rng = np.random.default_rng(0)
    hits = 0
    true = None
    trials = 60
    for t in range(trials):
        h = rng.random(200) < 0.5
        p = np.where(rng.random(200) < 0.85, h, ~h)
        true = 0.7  # po 0.85, pe 0.5
        lo, hi = kappa_interval(h.tolist(), p.tolist(), n_boot=500, seed=t)
        hits += lo <= true <= hi
    assert hits / trials >= 0.85
