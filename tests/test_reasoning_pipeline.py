"""The Safety Tax pipeline's pieces: reasoning data layouts (s1K, LIMO, DirectRefusal, SafeChain), the builtin
reasoning task and HarmOR-derived refusal sets, `--stage reason` and `--stage align --alignment-data`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from spt.cli import app
from spt.data.formats import format_items
from spt.errors import SptError
from spt.eval.reasoning import parse_reasoning

runner = CliRunner()
THINK = parse_reasoning("think")


def test_reasoning_layouts_become_items_with_their_thinking_marked():
    s1k = format_items([{"question": "What is 2+3?", "thinking_trajectories": ["2 plus 3 is 5."], "attempt": "5",
                         "cot_type": "math", "solution": "5"}], "s1k", source_name="s1k.jsonl")
    assert s1k[0]["label"] == "task" and s1k[0]["split"] == "train" and s1k[0]["category"] == "math"
    sp = THINK.split(s1k[0]["response"])
    assert sp.thinking == "2 plus 3 is 5." and sp.answer == "5"
    limo = format_items([{"question": "q", "solution": "long reasoning", "answer": "42"}], "limo", source_name="l")
    assert limo[0]["answer"] == "42" and THINK.split(limo[0]["response"]).answer == "The answer is 42."
    dr = format_items([{"question": "how to hurt", "attempt": "I can't help with that."}], "direct-refusal",
                      source_name="d")
    assert dr[0]["label"] == "harmful"
    assert THINK.split(dr[0]["response"]).thinking == "I should not answer this question!"
    sc = format_items([{"instruction": "bad", "response": "<think>It is harmful.</think>No."},
                       {"instruction": "fine", "response": "<think>ok</think>Sure.", "label": "vanilla_benign"}],
                      "safechain", source_name="s")
    assert [x["label"] for x in sc] == ["harmful", "benign"] and sc[0]["response"] == "<think>It is harmful.</think>No."


@pytest.mark.parametrize("fmt,row,message", [
    ("s1k", {"question": "q", "attempt": "a"}, "no thinking trajectory"),
    ("limo", {"question": "q", "solution": "s"}, "no answer"),
    ("direct-refusal", {"attempt": "no"}, "no prompt"),
    ("safechain", {"instruction": "x"}, "no response"),
])
def test_rows_missing_their_fields_are_refused_by_row(fmt, row, message):
    with pytest.raises(SptError, match=f"row 1: {message}"):
        format_items([row], fmt, source_name="f.jsonl")


def test_builtin_refusal_sets_come_from_harmor_train_with_thoughts(store):
    from spt.data.items import load_items
    from spt.train.data import resolve_alignment

    direct = load_items(store, resolve_alignment(store, "direct-refusal"))
    cot = load_items(store, resolve_alignment(store, "cot-refusal"))
    assert direct and {x["label"] for x in direct} == {"harmful"}
    assert all(THINK.split(x["response"]).thinking == "I should not answer this question!" for x in direct)
    assert {x["label"] for x in cot} == {"harmful", "benign"}
    assert all(THINK.split(x["response"]).thinking and THINK.split(x["response"]).answer for x in cot)
    assert {x["split"] for x in direct} >= {"train", "test"}


def test_builtin_reasoning_task_scores_the_answer_after_the_thought():
    from spt.data.tasks import get_task

    t = get_task("builtin:arithmetic-think")
    items = t.build(0, 20, 10)
    it = next(x for x in items if x["split"] == "train")
    sp = THINK.split(it["response"])
    assert sp.thinking and t.score(sp.answer, it["answer"])
    assert {x["split"] for x in items} == {"train", "dev", "test"}


def _ft(db_path, *args):
    r = runner.invoke(app, ["finetune", "--model", "tiny-random", "--max-steps", "1", "--db", str(db_path), "--json",
                            *args])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def test_stage_reason_then_align_on_a_thought_refusal_set(db_path, store):
    from spt.store.models import Run
    from spt.train.data import resolve_alignment

    reason = _ft(db_path, "--stage", "reason")
    with store.session() as s:
        row = s.get(Run, reason["run_id"])
    assert row.task == "builtin:arithmetic-think" and row.config["stage"] == "reason" and row.kind == "finetune"
    r = runner.invoke(app, ["finetune", "--from", reason["run_id"], "--stage", "align", "--alignment-data",
                            "direct-refusal", "--max-steps", "1", "--db", str(db_path), "--json"])
    assert r.exit_code == 0, r.output
    aligned = json.loads(r.output)
    with store.session() as s:
        row = s.get(Run, aligned["run_id"])
    assert row.parent_run_id == reason["run_id"]
    assert row.config["train_dataset"] == resolve_alignment(store, "direct-refusal")
    cot = json.loads(runner.invoke(app, ["finetune", "--from", reason["run_id"], "--stage", "align",
                                         "--alignment-data", "cot-refusal", "--max-steps", "1", "--db", str(db_path),
                                         "--json"]).output)
    assert cot["run_id"] != aligned["run_id"]


def test_alignment_data_leaves_other_identities_alone_and_misuse_is_refused(db_path):
    from spt.train.config import FinetuneConfig

    plain = FinetuneConfig(model="tiny-random", stage="align").resolve()
    assert "alignment_data" not in plain.identity_fields()
    for args, message in ((["--stage", "reason", "--poison", "0.1"], "--poison applies to --stage task only"),
                          (["--stage", "task", "--alignment-data", "cot-refusal"], "applies to --stage align"),
                          (["--stage", "reason", "--defense", "anchor"], "--stage reason trains without a defense"),
                          (["--stage", "align", "--alignment-data", "nosuch"], "alignment dataset 'nosuch'")):
        r = runner.invoke(app, ["finetune", "--model", "tiny-random", "--max-steps", "1", "--db", str(db_path), *args])
        assert r.exit_code != 0 and message in r.output, (args, r.output)
