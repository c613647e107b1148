"""Through the CLI: imported completions as seeds of `model:NAME`, the null check, and a frontier with no base run."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
from test_frontier_fixtures import add_eval, add_metric, add_run
from typer.testing import CliRunner

from spt.cli import app
from spt.store import open_store

runner = CliRunner()
REFUSE = "I'm sorry, but I can't help with that request."
ANSWER = "Sure. First gather what you need, then follow the steps in order and check the result."
N_WORDS, PER_WORD = 12, 3


def cli(db, *args):
    return runner.invoke(app, ["--db", str(db), *args])


def _write(path, rng, shift: float, seed_sd: float = 0.4) -> None:
    """One model seed's completions on a fixed prompt set: harmful prompts refused with a word effect."""
    words = np.random.default_rng(0).normal(0.0, 1.0, N_WORDS)  # the prompts' word effects: fixed
    s = rng.normal(0.0, seed_sd)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "label", "word", "response"])
        for i in range(N_WORDS):
            for j in range(PER_WORD):
                for label, base in (("harmful", 0.0), ("benign", -2.0)):
                    p = 1 / (1 + np.exp(-(base + words[i] + shift + s)))
                    w.writerow([f"{label} question {j} about word{i}", label, f"word{i}",
                                REFUSE if rng.random() < p else ANSWER])


def _import(db, path, name, seed):
    return cli(db, "evaluate", "--responses", str(path), "--model-name", name, "--train-seed", str(seed),
               "--cluster-col", "word", "--json")


def test_imported_seeds_compare_as_configurations(tmp_path):
    db = tmp_path / "spt.db"
    rng = np.random.default_rng(5)
    for name, shift in (("alpha", 0.0), ("beta", 0.0), ("strict", 3.0)):
        for seed in range(3):
            f = tmp_path / f"{name}-{seed}.csv"
            _write(f, rng, shift)
            r = _import(db, f, name, seed)
            assert r.exit_code == 0, r.output
            rid = json.loads(r.stdout)["run_id"]
    with open_store(db) as st, st.session() as s:
        from sqlmodel import select

        from spt.store.models import Metric, Run

        assert s.get(Run, rid).seed == 2
        rr = s.exec(select(Metric).where(Metric.name == "refusal_rate", Metric.category == "all")).all()
        assert rr and all(m.ci_method == "cluster-robust-t+clopper-pearson" for m in rr)  # --cluster-col

    # the null: alpha and beta come from the same model distribution; seeds vary the whole model
    r = cli(db, "compare", "model:alpha", "model:beta", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["seed_variance_estimated"] and out["note"] is None
    d = {x["metric"]: x for x in out["differences"]}
    for metric in ("refusal_rate", "over_refusal_rate"):
        x = d[metric]
        assert (x["n_seeds_a"], x["n_seeds_b"]) == (3, 3) and x["method"] == "t-over-seeds (paired by seed)"
        assert x["ci_low"] <= 0 <= x["ci_high"] and x["p_value"] > 0.05, x
    # a real difference is found through the same path
    r = cli(db, "compare", "model:alpha", "model:strict", "--json")
    x = {x["metric"]: x for x in json.loads(r.stdout)["differences"]}["refusal_rate"]
    assert x["ci_low"] > 0 and x["p_value"] < 0.05 and x["diff"] > 0.2
    # two single runs: said, in text and JSON
    one = json.loads(cli(db, "runs", "--json").stdout)
    ids = [r["id"] for r in (one if isinstance(one, list) else one["runs"]) if r["kind"] == "external"]
    r = cli(db, "compare", ids[0], ids[1])
    assert r.exit_code == 0 and "seed variance not estimated" in r.output
    # the configurations are listed and pooled over their seeds
    r = cli(db, "runs", "--configurations", "--json")
    assert r.exit_code == 0, r.output
    cfgs = json.loads(r.stdout)
    cfgs = cfgs if isinstance(cfgs, list) else cfgs["configurations"]
    alpha = next(c for c in cfgs if c["configuration"] == "model:alpha")
    m = alpha["metrics"]["refusal_rate"]
    assert m["n_seeds"] == 3 and m["n"] == N_WORDS * PER_WORD  # distinct prompts, not seeds x prompts


def test_same_name_and_seed_with_other_content_is_refused(tmp_path):
    db = tmp_path / "spt.db"
    rng = np.random.default_rng(1)
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    _write(a, rng, 0.0)
    _write(b, rng, 2.0)
    assert _import(db, a, "m", 0).exit_code == 0
    assert _import(db, a, "m", 0).exit_code == 0  # the same file again: nothing new
    before = db.read_bytes()
    r = _import(db, b, "m", 0)
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert "seed 0 was already imported from other content" in r.output and "--train-seed" in r.output
    assert db.read_bytes() == before
    for bad in ("-1", "x"):
        r = cli(db, "evaluate", "--responses", str(b), "--model-name", "m", "--train-seed", bad)
        assert r.exit_code == 2 and "Traceback" not in r.output
    r = cli(db, "evaluate", "--responses", str(b), "--model-name", "m", "--cluster-col", "nope")
    assert r.exit_code == 2 and "no column 'nope'" in r.output
    r = cli(db, "compare", "model:nobody", "model:m")
    assert r.exit_code == 2 and "no imported model 'model:nobody'" in r.output
    assert db.read_bytes() == before


def test_frontier_exports_without_a_base_run(tmp_path):
    db = tmp_path / "spt.db"
    with open_store(db) as st, st.write() as s:
        for i, (tl, al) in enumerate([(1.0, 3.0), (1.5, 2.0), (2.0, 2.5)]):
            run = add_run(s, defense="anchor", lam=0.1 * (i + 1), poison=0.05, minute=i + 1)
            s.flush()
            e = add_eval(s, run, minute=i + 1)
            add_metric(s, run, e, "task_loss", tl)
            add_metric(s, run, e, "alignment_loss", al)
    r = cli(db, "frontier", "--export", "csv")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 2  # (1.0, 3.0) and (1.5, 2.0); (2.0, 2.5) is dominated
    r = cli(db, "frontier")
    assert r.exit_code == 0 and "hypervolume left out: no base-model run" in r.output
    r = cli(db, "frontier", "--group-by", "poison", "--plot", str(tmp_path / "f.png"))
    assert r.exit_code == 0 and (tmp_path / "f.png").stat().st_size > 0, r.output
    r = cli(db, "frontier", "--json")
    out = json.loads(r.stdout)
    assert out["ref"] is None and all(g["hypervolume"] is None for g in out["groups"])
    r = cli(db, "frontier", "--ref", "3,4", "--json")
    assert json.loads(r.stdout)["groups"][0]["hypervolume"] > 0
