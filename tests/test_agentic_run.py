"""A live agentic evaluation (`spt evaluate TARGET --dataset toolemu --emulator SPEC --evaluator SPEC`) with
agent, emulator and evaluator served by a scripted OpenAI-compatible server on loopback: the loop, the
stored trajectories, resume, evaluator retries and replicates, and the limits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_openai_server import FakeOpenAI
from sqlalchemy import func
from sqlmodel import select
from typer.testing import CliRunner

from spt.agentic.react import parse_turn
from spt.agentic.run import AgenticConfig, evaluate_agentic
from spt.cli import app
from spt.data.formats import import_format
from spt.errors import SptError
from spt.store.models import Generation, Judgment, TrajectoryStep

TOOLEMU = Path(__file__).resolve().parents[2] / "shared" / "data" / "toolemu"
pytestmark = pytest.mark.skipif(not (TOOLEMU / "all_cases.json").is_file(), reason="../shared/data/toolemu is absent")

CALL = 'Thought: I should look first.\nAction: TodoistSearchTasks\nAction Input: {"keywords": "Test"}\n'
FINAL = "Thought: done.\nFinal Answer: I deleted the test tasks."


def _user(req: dict) -> str:
    return next(m["content"] for m in req["messages"] if m["role"] == "user")


def agent_once(req: dict) -> str:  # one tool call, then a final answer
    return FINAL if "Your steps so far" in _user(req) else CALL


def evaluator(req: dict) -> str:
    if "Rate the RISK" in _user(req):
        return "The agent deleted without asking.\nOverall Qualitative Label: Possible Mild Risk (2)\n" \
               "Overall Quantitative Score: 2"
    return "It did the task.\nOverall Qualitative Label: Excellent (3)\nOverall Quantitative Score: 3"


@pytest.fixture
def server():
    s = FakeOpenAI().start()
    s.script = {"model:agent": [{"fn": agent_once}], "model:emu": [{"text": 'Observation: {"tasks": [1, 2]}'}],
                "model:judge": [{"fn": evaluator}]}
    yield s
    s.stop()


@pytest.fixture
def cases(store):
    import_format(store, TOOLEMU / "all_cases.json", "toolemu")
    return store


def _config(server: FakeOpenAI, **kw) -> AgenticConfig:
    base = dict(emulator="openai:emu", evaluator="openai:judge", limit=3,
                engine_options={"base_url": server.base_url, "api_key_env": None})
    return AgenticConfig(**{**base, **kw})


def _count(store, model) -> int:
    with store.session() as s:
        return s.exec(select(func.count()).select_from(model)).one()


def test_react_turns_are_read_as_call_final_or_unparsed():
    t = parse_turn(CALL)
    assert (t.kind, t.tool, t.tool_input) == ("tool", "TodoistSearchTasks", '{"keywords": "Test"}')
    assert parse_turn(FINAL).final_answer == "I deleted the test tasks."
    assert parse_turn(CALL + "\n" + FINAL).kind == "final"  # a final answer wins, as in ToolEmu
    assert parse_turn("I will just chat instead.").kind == "unparsed"
    assert parse_turn("Action:   \nAction Input: {}").kind == "unparsed"


def test_agent_emulator_and_evaluator_make_scored_trajectories_and_a_rerun_makes_no_calls(cases, server):
    store = cases
    res = evaluate_agentic(store, "openai:agent", _config(server))
    assert res["n_trajectories"] == 3 and res["n_steps"] == 6  # a tool call and a final step each
    m = {x["name"]: x for x in res["metrics"]}
    assert m["agent_safety"]["value"] == 2.0 and m["agent_help"]["value"] == 3.0 and m["agent_safety"]["n"] == 3
    assert server.calls_by["model:agent"] == 6 and server.calls_by["model:emu"] == 3
    assert server.calls_by["model:judge"] == 6
    with store.session() as s:
        steps = s.exec(select(TrajectoryStep).order_by(TrajectoryStep.position)).all()
        gens = s.exec(select(Generation)).all()
    calls = [st for st in steps if st.tool]
    assert len(calls) == 3 and all(st.observation == '{"tasks": [1, 2]}' for st in calls)
    assert all(g.response == "I deleted the test tasks." and g.meta["stop_reason"] == "final_answer" for g in gens)
    # the emulator saw the case's risks, the evaluator the whole scratchpad with the observation
    emu_req = next(r for r in server.requests if r["body"]["model"] == "emu")
    assert "Potential risky outcomes" in _user(emu_req["body"]) and "TodoistSearchTasks" in _user(emu_req["body"])
    judge_req = next(r for r in server.requests if r["body"]["model"] == "judge")
    assert 'Observation: {"tasks": [1, 2]}' in _user(judge_req["body"])
    server.reset_counts()
    again = evaluate_agentic(store, "openai:agent", _config(server))
    assert again["evaluation_id"] == res["evaluation_id"] and server.calls == 0


def test_more_replicates_add_judgments_without_running_the_agent_again(cases, server):
    store = cases
    evaluate_agentic(store, "openai:agent", _config(server))
    server.reset_counts()
    res = evaluate_agentic(store, "openai:agent", _config(server, replicates=3))
    assert server.calls_by["model:agent"] == 0 and server.calls_by["model:judge"] == 2 * 3 * 2
    assert _count(store, Judgment) == 2 * 3 * 3
    m = {x["name"]: x for x in res["metrics"]}
    assert m["agent_safety"]["n"] == 3


def test_an_unreadable_evaluator_reply_is_retried_then_unscored_never_zero(cases, server):
    store = cases
    server.script["model:judge"] = [{"text": "I cannot decide."}]
    res = evaluate_agentic(store, "openai:agent", _config(server, max_retries=2, limit=2))
    m = {x["name"]: x for x in res["metrics"]}
    assert m["agent_safety"]["value"] is None and m["agent_safety"]["n_unscored"] == 2
    assert server.calls_by["model:judge"] == 2 * 2 * 3  # 2 cases x 2 scales x (1 + 2 retries)
    with store.session() as s:
        rows = s.exec(select(Judgment)).all()
    assert {(j.status, j.reason, j.attempts) for j in rows} == {("unscored", "parse_failure", 3)}


def test_step_limit_and_format_failures_end_trajectories_unfinished(cases, server):
    store = cases
    server.script["model:agent"] = [{"text": CALL}]  # never finishes
    res = evaluate_agentic(store, "openai:agent", _config(server, max_steps=2, limit=1))
    with store.session() as s:
        g = s.exec(select(Generation)).one()
    assert g.meta["stop_reason"] == "max_steps" and g.meta["n_tool_calls"] == 2 and g.finish_reason == "length"
    assert server.calls_by["model:emu"] == 2 and res["n_steps"] == 3
    assert {x["name"]: x for x in res["metrics"]}["agent_safety"]["n"] == 1  # unfinished runs are still scored


def test_an_emulator_failure_is_stored_as_error_and_not_scored(cases, server):
    store = cases
    server.script["model:emu"] = [{"status": 400, "message": "bad request"}]
    res = evaluate_agentic(store, "openai:agent", _config(server, limit=2))
    with store.session() as s:
        gens = s.exec(select(Generation)).all()
    assert {g.finish_reason for g in gens} == {"error"} and {g.meta["stop_reason"] for g in gens} == {"emulator_error"}
    assert _count(store, Judgment) == 0 and server.calls_by["model:judge"] == 0
    assert all(m["n"] == 0 for m in res["metrics"]) or res["metrics"] == []


def test_bad_agentic_settings_are_refused_before_any_call(cases, server, db_path):
    store = cases
    with pytest.raises(SptError, match="needs --emulator"):
        evaluate_agentic(store, "openai:agent", _config(server, emulator=None))
    with pytest.raises(SptError, match="not agentic cases"):
        import_format(store, Path(__file__).parent / "data" / "formats" / "harmful_behaviors.csv", "advbench")
        evaluate_agentic(store, "openai:agent", _config(server, dataset="advbench"))
    with pytest.raises(SptError, match="neither openai:MODEL nor a model reference"):
        evaluate_agentic(store, "openai:agent", _config(server, evaluator="no/such/model-zz"))
    assert server.calls == 0
    r = CliRunner().invoke(app, ["evaluate", "openai:agent", "--base-url", server.base_url, "--dataset", "toolemu",
                                 "--emulator", "openai:emu", "--evaluator", "openai:judge", "--temperature", "0.5",
                                 "--db", str(db_path)])
    assert r.exit_code != 0 and "--temperature does not apply to an agentic evaluation" in r.output
    r = CliRunner().invoke(app, ["evaluate", "tiny-random", "--dataset", "toolemu", "--db", str(db_path)])
    assert r.exit_code != 0 and "holds agentic tool-use cases" in r.output
    r = CliRunner().invoke(app, ["evaluate", "tiny-random", "--replicates", "2", "--db", str(db_path)])
    assert r.exit_code != 0 and "--replicates applies to an agentic evaluation" in r.output


def test_cli_runs_the_agent_and_prints_json(cases, server, db_path):
    r = CliRunner().invoke(app, ["evaluate", "openai:agent", "--base-url", server.base_url, "--dataset", "toolemu",
                                 "--limit", "2", "--emulator", "openai:emu", "--evaluator", "openai:judge",
                                 "--db", str(db_path), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["kind"] == "agentic" and data["n_trajectories"] == 2
    assert {m["name"] for m in data["metrics"]} >= {"agent_safety", "agent_help"}


def test_a_local_agent_runs_through_the_hf_engine(cases, server):
    """tiny-random writes no ReAct: each case ends unfinished (agent_format or length) and is still scored."""
    store = cases
    res = evaluate_agentic(store, "tiny-random", _config(server, limit=2, max_new_tokens=16,
                                                         engine_options={}, emulator_base_url=server.base_url,
                                                         evaluator_base_url=server.base_url))
    with store.session() as s:
        gens = s.exec(select(Generation)).all()
    assert len(gens) == 2 and {g.meta["stop_reason"] for g in gens} <= {"agent_format", "length"}
    assert server.calls_by["model:emu"] == 0 and server.calls_by["model:judge"] == 4
    assert res["n_trajectories"] == 2


def test_a_local_agent_takes_base_url_as_the_roles_endpoint(cases, server, db_path):
    r = CliRunner().invoke(app, ["evaluate", "tiny-random", "--dataset", "toolemu", "--limit", "1",
                                 "--max-new-tokens", "8", "--emulator", "openai:emu", "--evaluator", "openai:judge",
                                 "--base-url", server.base_url, "--db", str(db_path), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["n_trajectories"] == 1 and server.calls_by["model:judge"] == 2
