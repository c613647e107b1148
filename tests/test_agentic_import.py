"""ToolEmu cases and published trajectories into the store: `spt data import --format toolemu`,
`spt evaluate --trajectories DIR --format toolemu`, the agent_* metrics and `spt compare` on them.

Real data: ../shared/data/toolemu (144 cases, three models' published runs scored by gpt-5-mini); the
tests skip when it is absent. Fault cases are small files written here.
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import select
from typer.testing import CliRunner

from spt.agentic.importer import TrajectoryImport, import_trajectories
from spt.agentic.rubrics import HELP_IGNORE, SAFETY, read_reply
from spt.agentic.toolemu import read_cases, read_trajectory_file
from spt.cli import app
from spt.compare import compare
from spt.errors import SptError
from spt.store.models import Evaluation, Generation, Judgment, Metric, Run, TrajectoryStep

TOOLEMU = Path(__file__).resolve().parents[2] / "shared" / "data" / "toolemu"
MODELS = ("Qwen_Qwen3-8B", "Qwen_Qwen2.5-7B-Instruct", "meta-llama_Llama-3.1-8B-Instruct")
needs_data = pytest.mark.skipif(not (TOOLEMU / "all_cases.json").is_file(), reason="../shared/data/toolemu is absent")
runner = CliRunner()


def _published_mean(model: str, suffix: str, key: str) -> tuple[float, int]:
    files = sorted((TOOLEMU / "trajectories" / model).glob(f"*{suffix}.jsonl"))
    vals = [json.loads(line)["eval_scores"][key] for f in files for line in f.read_text().splitlines() if line.strip()]
    return sum(vals) / len(vals), len(vals)


# --- reading evaluator replies -------------------------------------------------------------------------------

@pytest.mark.parametrize("reply,scale,score,reason", [
    ({"eval_scores": {"ToolCallRisk": 2}, "Overall Qualitative Label": "Possible Mild Risk (2)"}, SAFETY, 2, None),
    ({"eval_scores": {"Helpfulness": "3"}}, HELP_IGNORE, 3, None),
    ({"Overall Quantitative Score": "1 (Likely Mild Risk)"}, SAFETY, 1, None),
    ({"Overall Qualitative Label": "**Possible Severe Risk (1)**"}, SAFETY, 1, None),
    ("Evaluator Thought: ... The label is Certain No Risk.", SAFETY, 3, None),
    ("first I thought Poor (0) but on reflection: Good (2)", HELP_IGNORE, 2, None),  # the last label governs
    ({"eval_scores": {"ToolCallRisk": 7}}, SAFETY, None, "out_of_range"),
    ({"eval_scores": {"ToolCallRisk": 1.5}}, SAFETY, None, "out_of_range"),
    ({"Evaluator Thought": "I cannot decide."}, SAFETY, None, "parse_failure"),
    ({"error": "timeout", "eval_scores": {"ToolCallRisk": 3}}, SAFETY, None, "evaluator_error"),
    ("", HELP_IGNORE, None, "parse_failure"),
    # a Helpfulness score is not a safety score: the key of the other scale is not read
    ({"eval_scores": {"Helpfulness": 3}}, SAFETY, None, "parse_failure"),
])
def test_evaluator_replies_are_read_in_order_and_never_default(reply, scale, score, reason):
    r = read_reply(reply, scale)
    assert (r.score, r.reason) == (score, reason)


# --- the layouts -----------------------------------------------------------------------------------------------

@needs_data
def test_cases_file_becomes_144_agentic_items_with_their_index():
    items = read_cases(TOOLEMU / "all_cases.json")
    assert len(items) == 144 and {it["label"] for it in items} == {"agentic"}
    assert [it["meta"]["case_idx"] for it in items] == list(range(144))
    first = json.loads((TOOLEMU / "all_cases.json").read_text())[0]
    assert items[0]["prompt"] == first["User Instruction"] and items[0]["category"] == "+".join(first["Toolkits"])
    assert items[0]["meta"]["risky_actions"] == first["Potential Risky Actions"]


@needs_data
def test_trajectory_steps_tool_calls_and_final_answer_are_parsed():
    f = sorted((TOOLEMU / "trajectories" / "Qwen_Qwen2.5-7B-Instruct").glob("*_r0-15_*[0-9].jsonl"))[0]
    tf = read_trajectory_file(f)
    raw = [json.loads(line) for line in f.read_text().splitlines()]
    assert len(tf.trajectories) == len(raw) == 15
    for (traj, item, _line), r in zip(tf.trajectories, raw, strict=True):
        calls = [s for s in r["intermediate_steps"] if isinstance(s[0], list)]
        assert traj.n_tool_calls == len(calls)
        assert [s.tool for s in traj.steps if s.tool] == [c[0][0] for c in calls]
        assert [s.observation for s in traj.steps if s.tool] == [c[1][0] for c in calls]
        assert traj.finished and traj.final_answer == r["intermediate_steps"][-1][0]["return_values"]["output"]
        assert traj.case_idx == r["case_idx"] and item["meta"]["case_name"] == r["case"]["name"]
        pad = traj.scratchpad()
        assert all(f"Observation: {c[1][0].strip()}" in pad for c in calls)
    assert set(tf.evaluations) == {"agent_safety", "agent_help"}
    assert all(e.reading.score is not None for rows in tf.evaluations.values() for e in rows)


# --- import into the store ------------------------------------------------------------------------------------

@needs_data
def test_import_stores_trajectories_steps_judgments_and_the_published_means(store):
    res = import_trajectories(store, TrajectoryImport(TOOLEMU / "trajectories" / "Qwen_Qwen3-8B", train_seed=0))
    assert res["created"] and res["model_name"] == "Qwen_Qwen3-8B" and res["n_trajectories"] == 144
    m = {x["name"]: x for x in res["metrics"]}
    for metric, suffix, key in (("agent_safety", "_eval_agent_safe", "ToolCallRisk"),
                                ("agent_help", "_eval_agent_help_ignore_safety", "Helpfulness")):
        mean, n = _published_mean("Qwen_Qwen3-8B", suffix, key)
        assert m[metric]["value"] == pytest.approx(mean) and m[metric]["n"] == n == 144
        assert m[metric]["ci_low"] < mean < m[metric]["ci_high"] and m[metric]["n_unscored"] == 0
        assert m[metric]["preset"] == "toolemu:gpt-5-mini"
    with store.session() as s:
        n_steps = s.exec(select(func.count()).select_from(TrajectoryStep)).one()
        n_calls = s.exec(select(func.count()).select_from(TrajectoryStep)
                         .where(TrajectoryStep.tool.is_not(None))).one()  # type: ignore[union-attr]
        assert s.exec(select(func.count()).select_from(Judgment)).one() == 288
        run = s.get(Run, res["run_id"])
    assert n_steps == res["n_steps"] == 184 and n_calls == 184 - 144  # 144 finish steps
    assert run.kind == "external" and run.seed == 0
    again = import_trajectories(store, TrajectoryImport(TOOLEMU / "trajectories" / "Qwen_Qwen3-8B", train_seed=0))
    assert not again["created"] and again["evaluation_id"] == res["evaluation_id"]
    with store.session() as s:
        assert s.exec(select(func.count()).select_from(Evaluation)).one() == 1


def _copy_model(tmp_path: Path, model: str = "Qwen_Qwen3-8B", n_files: int = 1) -> Path:
    out = tmp_path / model
    out.mkdir()
    stems = sorted(p.stem for p in (TOOLEMU / "trajectories" / model).glob("*.jsonl") if "_eval_" not in p.stem)
    for stem in stems[:n_files]:
        for p in (TOOLEMU / "trajectories" / model).glob(f"{stem}*.jsonl"):
            shutil.copy(p, out / p.name)
    return out


@needs_data
def test_replicates_are_folded_by_median_and_unscored_replies_are_counted_not_zero(store, tmp_path):
    folder = _copy_model(tmp_path)
    safe = next(folder.glob("*_eval_agent_safe.jsonl"))
    rows = [json.loads(line) for line in safe.read_text().splitlines()]
    extra = []
    for r in rows:  # two more replicates per trajectory: scores +1 and a fixed 0, so the median is the original
        extra.append({**r, "eval_scores": {"ToolCallRisk": min(3, r["eval_scores"]["ToolCallRisk"] + 1)}})
        extra.append({**r, "eval_scores": {"ToolCallRisk": 0}})
    broken = {**rows[0], "eval_scores": {}, "Overall Quantitative Score": None, "Overall Qualitative Label": "",
              "Evaluator Thought": "no verdict", "Evaluator Log Summary": ""}
    # the first trajectory's three replicates are all unscorable: that case has no score at all
    lines = [broken, broken, broken] + [r for i, r in enumerate(rows) for r in (r, extra[2 * i], extra[2 * i + 1])
                                        if i > 0]
    safe.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    res = import_trajectories(store, TrajectoryImport(folder))
    m = {x["name"]: x for x in res["metrics"]}
    want = [statistics.median([r["eval_scores"]["ToolCallRisk"], min(3, r["eval_scores"]["ToolCallRisk"] + 1), 0])
            for r in rows[1:]]
    assert m["agent_safety"]["n"] == len(rows) - 1 and m["agent_safety"]["n_unscored"] == 1
    assert m["agent_safety"]["value"] == pytest.approx(sum(want) / len(want))
    with store.session() as s:
        metric = s.exec(select(Metric).where(Metric.name == "agent_safety")).one()
        reasons = s.exec(select(Judgment.reason).where(Judgment.status == "unscored")).all()
    assert metric.meta["replicates"] == 3 and metric.meta["aggregation"] == "median"
    assert reasons == ["parse_failure"] * 3


@needs_data
def test_compare_pairs_two_models_case_by_case(store):
    a = import_trajectories(store, TrajectoryImport(TOOLEMU / "trajectories" / "Qwen_Qwen3-8B"))
    b = import_trajectories(store, TrajectoryImport(TOOLEMU / "trajectories" / "meta-llama_Llama-3.1-8B-Instruct"))
    cmp = compare(store, a["run_id"], b["run_id"])
    assert cmp.kind == "agentic"
    d = {x.metric: x for x in cmp.differences}
    ma = {x["name"]: x["value"] for x in a["metrics"]}
    mb = {x["name"]: x["value"] for x in b["metrics"]}
    assert d["agent_safety"].n == 144
    assert d["agent_safety"].diff == pytest.approx(mb["agent_safety"] - ma["agent_safety"])
    # Llama is less safe on these cases than Qwen3 by the published scores; the paired interval excludes 0
    assert d["agent_safety"].ci_high < 0
    assert d["agent_help_rate"].mcnemar_b is not None  # a 0/1 metric gets the exact McNemar test


# --- bad input: one line, nothing written ---------------------------------------------------------------------

def _run(args: list[str]):
    return runner.invoke(app, args)


@needs_data
@pytest.mark.parametrize("damage,message", [
    (lambda d: next(d.glob("*_eval_agent_safe.jsonl")).write_text('{"eval_id": 99, "eval_scores": {}}\n'),
     "eval_id 99 names no trajectory"),
    (lambda d: next(p for p in d.glob("*.jsonl") if "_eval_" not in p.name).write_text('{"case": 1}\n'),
     "not a ToolEmu trajectory"),
    (lambda d: next(p for p in d.glob("*.jsonl") if "_eval_" not in p.name).write_text("{oops\n"),
     "invalid JSON line"),
    (lambda d: [p.unlink() for p in d.glob("*_eval_*.jsonl")], "no evaluator files"),
])
def test_bad_trajectory_folders_are_refused_in_one_line_and_write_nothing(tmp_path, db_path, damage, message):
    folder = _copy_model(tmp_path)
    damage(folder)
    r = _run(["evaluate", "--trajectories", str(folder), "--format", "toolemu", "--db", str(db_path)])
    assert r.exit_code != 0 and message in r.output and len(r.output.strip().splitlines()) == 1
    assert not db_path.exists() or _n_evaluations(db_path) == 0


def _n_evaluations(db_path: Path) -> int:
    from spt.store import open_store

    with open_store(db_path) as st, st.session() as s:
        return s.exec(select(func.count()).select_from(Evaluation)).one()


@needs_data
def test_the_same_case_in_two_files_and_a_seed_clash_are_refused(tmp_path, store):
    folder = _copy_model(tmp_path)
    traj = next(p for p in folder.glob("*.jsonl") if "_eval_" not in p.name)
    shutil.copy(traj, folder / traj.name.replace("_r0-15_", "_r0-15b_"))
    with pytest.raises(SptError, match="one import holds one trajectory per case"):
        import_trajectories(store, TrajectoryImport(folder))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    import_trajectories(store, TrajectoryImport(_copy_model(tmp_path / "a"), model_name="m", train_seed=1))
    other = _copy_model(tmp_path / "b", "Qwen_Qwen2.5-7B-Instruct")
    with pytest.raises(SptError, match="seed 1 was already imported from other files"):
        import_trajectories(store, TrajectoryImport(other, model_name="m", train_seed=1))


@needs_data
def test_cli_flags_that_do_not_apply_are_refused(tmp_path, db_path):
    folder = _copy_model(tmp_path)
    for extra, message in ((["--limit", "3"], "--limit does not apply to --trajectories"),
                           (["--label", "harmful"], "--label does not apply to --trajectories"),
                           (["tiny-random"], "not both")):
        r = _run(["evaluate", *extra, "--trajectories", str(folder), "--format", "toolemu", "--db", str(db_path)])
        assert r.exit_code != 0 and message in r.output, r.output
    r = _run(["evaluate", "--trajectories", str(folder), "--db", str(db_path)])
    assert r.exit_code != 0 and "needs --format toolemu" in r.output
    r = _run(["evaluate", "--trajectories", str(folder), "--format", "xstest", "--db", str(db_path)])
    assert r.exit_code != 0 and "unknown trajectory --format" in r.output


@needs_data
def test_cases_and_trajectories_share_items_so_imports_line_up(tmp_path, db_path):
    r = _run(["data", "import", str(TOOLEMU / "all_cases.json"), "--format", "toolemu", "--db", str(db_path), "--json"])
    assert r.exit_code == 0, r.output
    cases = json.loads(r.output)
    assert cases["n_items"] == 144 and cases["labels"] == {"agentic": 144}
    r = _run(["evaluate", "--trajectories", str(TOOLEMU / "trajectories" / "Qwen_Qwen3-8B"), "--format", "toolemu",
              "--db", str(db_path), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["dataset_id"] == cases["dataset_id"]  # the same 144 items, the same dataset
    from spt.store import open_store

    with open_store(db_path) as st, st.session() as s:
        assert s.exec(select(func.count()).select_from(Generation)).one() == 144
