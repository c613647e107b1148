"""Preference pairs from agent trajectories (`spt build-data --preferences`) and DPO on them
(`spt finetune --stage align --method dpo --preferences NAME`), on the published ToolEmu runs."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest
from toolemu_raw import raw_scores
from typer.testing import CliRunner

from spt.agentic.importer import TrajectoryImport, import_trajectories
from spt.agentic.preferences import PreferenceSpec, build_preferences, consistent
from spt.cli import app
from spt.data.items import load_items
from spt.errors import SptError

TOOLEMU = Path(__file__).resolve().parents[2] / "shared" / "data" / "toolemu"
pytestmark = pytest.mark.skipif(not (TOOLEMU / "all_cases.json").is_file(), reason="../shared/data/toolemu is absent")
MODELS = ("Qwen_Qwen3-8B", "Qwen_Qwen2.5-7B-Instruct", "meta-llama_Llama-3.1-8B-Instruct")
runner = CliRunner()


def expected_pairs(seed: int, metrics: list[str], combine: str = "both", min_diff: float = 2,
                   min_chosen: float = 2) -> set[tuple[int, str, str]]:
    """(case, chosen model, rejected model) computed from the raw files."""
    order = list(range(144))
    random.seed(seed)
    random.shuffle(order)
    train = set(order[:72])
    scores = {m: {k: raw_scores(m, k) for k in metrics} for m in MODELS}

    def ok(a: float, b: float) -> bool:
        return a - b >= min_diff and a >= min_chosen

    out = set()
    for case in train:
        for x, y in itertools.permutations(MODELS, 2):
            sx = [scores[x][k][case] for k in metrics]
            sy = [scores[y][k][case] for k in metrics]
            passed = (all(ok(a, b) for a, b in zip(sx, sy, strict=True)) if combine == "both"
                      else ok(sum(sx) / len(sx), sum(sy) / len(sy)))
            if passed:
                out.add((case, x, y))
    return out


@pytest.fixture
def sources(store):
    return {import_trajectories(store, TrajectoryImport(TOOLEMU / "trajectories" / m))["evaluation_id"]: m
            for m in MODELS}


def _got(store, res, sources) -> set[tuple[int, str, str]]:
    items = load_items(store, res["dataset_id"])
    return {(it["meta"]["case_idx"], sources[it["meta"]["chosen_from"]["evaluation"]],
             sources[it["meta"]["rejected_from"]["evaluation"]]) for it in items}


@pytest.mark.parametrize("seed,metrics,combine", [(0, ["agent_safety"], "both"), (3, ["agent_help"], "both"),
                                                  (0, ["agent_safety", "agent_help"], "both"),
                                                  (0, ["agent_safety", "agent_help"], "average")])
def test_pairs_are_exactly_the_train_case_pairs_that_pass_the_thresholds(store, sources, seed, metrics, combine):
    spec = PreferenceSpec(list(sources), metric=metrics[0], metric2=metrics[1] if len(metrics) > 1 else None,
                          combine=combine, split_seed=seed)
    res = build_preferences(store, spec)
    want = expected_pairs(seed, metrics, combine)
    assert _got(store, res, sources) == want and res["n_pairs"] == len(want) > 0
    items = load_items(store, res["dataset_id"])
    order = list(range(144))
    random.seed(seed)
    random.shuffle(order)
    assert not {it["meta"]["case_idx"] for it in items} & set(order[72:])  # no test case in the training data
    it = items[0]
    assert it["label"] == "preference" and it["split"] == "train"
    assert "Observation:" in it["response"] + it["meta"]["rejected"] and it["prompt"].endswith(
        it["prompt"].split("User Input: ", 1)[1])


def test_thresholds_change_the_pairs_as_they_should(store, sources):
    loose = build_preferences(store, PreferenceSpec(list(sources), min_diff=1, min_chosen=1, name="loose"))
    strict = build_preferences(store, PreferenceSpec(list(sources), min_diff=3, min_chosen=3, name="strict"))
    assert _got(store, loose, sources) == expected_pairs(0, ["agent_safety"], min_diff=1, min_chosen=1)
    assert _got(store, strict, sources) == expected_pairs(0, ["agent_safety"], min_diff=3, min_chosen=3)
    assert strict["n_pairs"] < loose["n_pairs"]


@pytest.mark.parametrize("scores,rule,ok", [
    ([2, 2, 3], "majority", True), ([1, 2, 3], "majority", False), ([2, 2, 3, 3], "majority", False),
    ([2, 2, 2, 3], "all-but-one", True), ([2, 2, 3, 3], "all-but-one", False),
    ([2, 2], "exact", True), ([2, 3], "exact", False), ([1, 2, 3], "none", True), ([3], "exact", True),
])
def test_replicate_consistency_rules(scores, rule, ok):
    assert consistent([float(s) for s in scores], rule) is ok


@pytest.mark.parametrize("spec,message", [
    (dict(metric="agent_nonsense"), "unknown agentic metric"),
    (dict(metric2="agent_safety"), "is --metric itself"),
    (dict(consistency="sometimes"), "unknown --consistency"),
    (dict(min_diff=0), "--min-diff 0"),
    (dict(min_chosen=5), "between 0 and 3"),
])
def test_bad_preference_settings_are_refused(store, sources, spec, message):
    with pytest.raises(SptError, match=message):
        build_preferences(store, PreferenceSpec(list(sources), **spec))


def test_one_source_and_cli_misuse_are_refused(store, db_path, sources):
    one = next(iter(sources))
    with pytest.raises(SptError, match="at least two"):
        build_preferences(store, PreferenceSpec([one]))
    r = runner.invoke(app, ["build-data", "--preferences", "--from", one, "--from", one, "--db", str(db_path)])
    assert r.exit_code != 0 and "name one evaluation" in r.output
    r = runner.invoke(app, ["build-data", "--min-chosen", "1", "--db", str(db_path)])
    assert r.exit_code != 0 and "--min-chosen applies to --preferences" in r.output
    r = runner.invoke(app, ["build-data", "--preferences", "--category", "weapons", "--from", one, "--db",
                            str(db_path)])
    assert r.exit_code != 0 and "--category builds HarmOR" in r.output


def test_dpo_trains_on_the_pairs_and_sequential_training_continues_from_a_run(store, db_path, sources):
    args = ["build-data", "--preferences", *[x for e in sources for x in ("--from", e)], "--db", str(db_path), "--json"]
    safe = json.loads(runner.invoke(app, args).output)
    helpful = json.loads(runner.invoke(app, [*args, "--metric", "agent_help"]).output)
    ft = ["finetune", "--model", "tiny-random", "--stage", "align", "--method", "dpo", "--max-steps", "2",
          "--batch-size", "2", "--max-length", "3072", "--db", str(db_path), "--json"]
    r = runner.invoke(app, [*ft, "--preferences", safe["name"]])
    assert r.exit_code == 0, r.output
    s_run = json.loads(r.output)
    assert s_run["status"] == "done" and s_run["final_losses"]["dpo_loss"] > 0
    r = runner.invoke(app, [*ft, "--preferences", helpful["name"]])
    h_run = json.loads(r.output)
    assert h_run["run_id"] != s_run["run_id"]  # the pairs' content is part of the identity
    ft_from = [x if x != "tiny-random" else s_run["run_id"] for x in ft]
    ft_from[ft_from.index("--model")] = "--from"
    r = runner.invoke(app, [*ft_from, "--preferences", helpful["name"]])
    assert r.exit_code == 0, r.output
    sh = json.loads(r.output)
    from spt.store.models import Run

    with store.session() as s:
        row = s.get(Run, sh["run_id"])
        assert row.parent_run_id == s_run["run_id"]
        assert row.config["preference_dataset"] == helpful["dataset_id"]


def test_dpo_refuses_a_dataset_that_is_not_pairs_and_pairs_all_over_max_length(store, db_path, sources):
    args = ["build-data", "--preferences", *[x for e in sources for x in ("--from", e)], "--db", str(db_path), "--json"]
    safe = json.loads(runner.invoke(app, args).output)
    ft = ["finetune", "--model", "tiny-random", "--stage", "align", "--method", "dpo", "--max-steps", "1",
          "--db", str(db_path)]
    r = runner.invoke(app, [*ft, "--preferences", "toolemu"])
    assert r.exit_code != 0 and "holds agentic items, not preference pairs" in r.output
    r = runner.invoke(app, [*ft, "--preferences", safe["name"], "--max-length", "64"])
    assert r.exit_code != 0 and "longer than --max-length 64" in r.output
    r = runner.invoke(app, ["finetune", "--model", "tiny-random", "--stage", "align", "--preferences", safe["name"],
                            "--max-steps", "1", "--db", str(db_path)])
    assert r.exit_code != 0 and "--preferences is an option of --method dpo" in r.output
