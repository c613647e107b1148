"""Persist(S) and Persist(H) (`spt persistence`) on the published ToolEmu runs, against a computation from
the raw files, the seeded case split, and the undefined and missing-seed cases."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from toolemu_raw import raw_scores
from typer.testing import CliRunner

from spt.agentic.importer import TrajectoryImport, import_trajectories
from spt.agentic.persistence import persistence
from spt.agentic.split import case_split
from spt.cli import app
from spt.errors import SptError

TOOLEMU = Path(__file__).resolve().parents[2] / "shared" / "data" / "toolemu"
pytestmark = pytest.mark.skipif(not (TOOLEMU / "all_cases.json").is_file(), reason="../shared/data/toolemu is absent")
QWEN3, QWEN25, LLAMA = "Qwen_Qwen3-8B", "Qwen_Qwen2.5-7B-Instruct", "meta-llama_Llama-3.1-8B-Instruct"


def expected(seed: int, s: str, h: str, sh: str, metric: str) -> float:
    order = list(range(144))
    random.seed(seed)
    random.shuffle(order)
    test = order[72:]
    mean = {m: sum(raw_scores(m, metric)[c] for c in test) / len(test) for m in (s, h, sh)}
    return (mean[sh] - mean[h]) / (mean[s] - mean[h])


def _import(store, model: str, seed: int | None, name: str | None = None) -> str:
    res = import_trajectories(store, TrajectoryImport(TOOLEMU / "trajectories" / model, model_name=name or model,
                                                      train_seed=seed))
    return res["run_id"]


def test_the_split_is_the_published_one_and_halves_the_cases():
    sp = case_split(3, 144)
    order = list(range(144))
    random.seed(3)
    random.shuffle(order)
    assert sp.test == frozenset(order[72:]) and sp.train == frozenset(order[:72])
    assert not sp.train & sp.test and len(sp.test) == 72
    assert case_split(3, 144) == sp and case_split(4, 144).test != sp.test
    with pytest.raises(SptError, match="non-negative"):
        case_split(-1, 144)


def test_persistence_matches_a_computation_from_the_raw_files(store):
    s, h, x = _import(store, QWEN3, 0), _import(store, LLAMA, 0), _import(store, QWEN25, 0)
    res = persistence(store, safe=s, helpful=h, safe_then_help=x, help_then_safe=x, n_boot=2000)
    f = {fig.name: fig for fig in res.figures}
    assert f["persist_safety"].value == pytest.approx(expected(0, QWEN3, LLAMA, QWEN25, "agent_safety"))
    assert f["persist_help"].value == pytest.approx(expected(0, LLAMA, QWEN3, QWEN25, "agent_help"))
    for fig in res.figures:
        assert fig.ci_low <= fig.value <= fig.ci_high and fig.per_seed[0].n_cases == 72
    assert res.split_seeds == [0] and res.n_cases == 144


def test_several_seeds_average_per_seed_figures_each_on_its_own_test_half(store):
    runs = {sd: (_import(store, QWEN3, sd, "S"), _import(store, LLAMA, sd, "H"), _import(store, QWEN25, sd, "SH"))
            for sd in (0, 1)}
    res = persistence(store, safe="model:S", helpful="model:H", safe_then_help="model:SH", help_then_safe="model:SH",
                      n_boot=500)
    f = {fig.name: fig for fig in res.figures}["persist_safety"]
    per_seed = [expected(sd, QWEN3, LLAMA, QWEN25, "agent_safety") for sd in (0, 1)]
    assert [p.value for p in f.per_seed] == pytest.approx(per_seed)
    assert f.value == pytest.approx(sum(per_seed) / 2)
    assert res.sides["safe"]["runs"] == {"0": runs[0][0], "1": runs[1][0]}


def test_identical_first_and_second_training_is_undefined_not_a_number(store):
    s, x = _import(store, QWEN3, 0), _import(store, QWEN25, 0)
    res = persistence(store, safe=s, helpful=s, safe_then_help=x, help_then_safe=x, n_boot=200)
    for fig in res.figures:
        assert fig.value is None and fig.ci_low is None and "denominator" in fig.note


def test_missing_seeds_and_unseeded_runs_are_refused(store):
    s0, h1 = _import(store, QWEN3, 0, "S"), _import(store, LLAMA, 1, "H")
    with pytest.raises(SptError, match="has no run with seed 1"):
        persistence(store, safe=s0, helpful=h1, safe_then_help=s0, help_then_safe=s0)
    a, b = _import(store, QWEN3, None, "A"), _import(store, LLAMA, None, "B")
    with pytest.raises(SptError, match="pass the seed that split the preference data"):
        persistence(store, safe=a, helpful=b, safe_then_help=a, help_then_safe=b)
    res = persistence(store, safe=a, helpful=b, safe_then_help=b, help_then_safe=a, split_seeds=[5], n_boot=200)
    assert res.split_seeds == [5]
    # unseeded source runs serve every seed of the trained ones
    res = persistence(store, safe=s0, helpful=b, safe_then_help=a, help_then_safe=a, n_boot=200)
    assert res.split_seeds == [0]


def test_cli_prints_both_figures_and_writes_the_plot(store, db_path, tmp_path):
    s, h, x = _import(store, QWEN3, 0), _import(store, LLAMA, 0), _import(store, QWEN25, 0)
    out = tmp_path / "p.png"
    r = CliRunner().invoke(app, ["persistence", "--safe", s, "--helpful", h, "--safe-then-help", x,
                                 "--help-then-safe", x, "--n-boot", "300", "--plot", str(out), "--db", str(db_path),
                                 "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert [f["name"] for f in data["figures"]] == ["persist_safety", "persist_help"]
    assert set(data["points"]) == {"safe", "helpful", "safe_then_help", "help_then_safe"}
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = CliRunner().invoke(app, ["persistence", "--safe", s, "--helpful", h, "--safe-then-help", x,
                                 "--help-then-safe", x, "--plot", str(tmp_path / "p.txt"), "--db", str(db_path)])
    assert r.exit_code != 0 and "--plot 'p.txt'" in r.output
