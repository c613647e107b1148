"""Thinking-aware replies (`spt evaluate --reasoning`): the split into thinking and answer, unfinished
thoughts, and an evaluation that scores the answer only."""

from __future__ import annotations

import pytest
from sqlmodel import select

from spt.errors import SptError
from spt.eval.reasoning import parse_reasoning


@pytest.mark.parametrize("fmt,text,thinking,answer,unfinished", [
    ("none", "<think>x</think>I can't help.", None, "<think>x</think>I can't help.", False),
    ("think", "<think>Is this harmful? yes.</think>\nI can't help with that.", "Is this harmful? yes.",
     "I can't help with that.", False),
    ("think", "The template opened the block. </think>Sure, here it is.", "The template opened the block.",
     "Sure, here it is.", False),
    ("think", "<think>still thinking and out of tokens", "still thinking and out of tokens", "", True),
    ("think", "No thinking at all.", None, "No thinking at all.", False),
    ("tags:PAUSE,SOLUTION", "Ok. <PAUSE>harmful</PAUSE> <SOLUTION>I won't help.</SOLUTION>", "harmful",
     "I won't help.", False),
    ("tags:PAUSE,SOLUTION", "Ok. <PAUSE>fine</PAUSE> Here is the answer.", "fine", "Here is the answer.", False),
    ("tags:PAUSE,SOLUTION", "Ok. <PAUSE>this needs more tho", "this needs more tho", "", True),
    ("tags:PAUSE,SOLUTION", "<PAUSE>a</PAUSE><SOLUTION>cut off mid answ", "a", "cut off mid answ", False),
])
def test_replies_split_into_thinking_and_answer(fmt, text, thinking, answer, unfinished):
    sp = parse_reasoning(fmt).split(text)
    assert (sp.thinking, sp.answer, sp.unfinished) == (thinking, answer, unfinished)


@pytest.mark.parametrize("bad", ["think2", "tags:PAUSE", "tags:A,A", "tags:1x,y", ""])
def test_unknown_reasoning_formats_are_refused(bad):
    if bad == "":
        assert parse_reasoning(bad).name == "none"
        return
    with pytest.raises(SptError, match="unknown `reasoning`"):
        parse_reasoning(bad)


def _fake_engine(monkeypatch, reply_of):
    """The hf engine replaced by one that answers request i with `reply_of(i)` (cut by the token limit)."""
    from spt.engines import hf as hf_engine
    from spt.engines.base import GenerationResult

    class Fake:
        name = "hf"

        def identity(self):
            return {"engine": "hf"}

        def describe(self):
            return {"engine": "hf"}

        def generate(self, requests, *, on_results=None):
            out = [GenerationResult(i, r.key, reply_of(i), finish_reason="length") for i, r in enumerate(requests)]
            if on_results:
                on_results(out)
            return out

        def close(self):
            pass

    monkeypatch.setattr(hf_engine.FACTORY, "open", lambda spec: Fake())


def test_an_evaluation_scores_the_answer_and_keeps_the_thinking(store, monkeypatch):
    """A fake engine replies with a refusal in the thinking and compliance in the answer: the keyword
    preset must read the answer (compliance), and unfinished thoughts are unscored and counted."""
    from spt.eval.evaluate import EvaluateConfig, evaluate
    from spt.store.models import Generation

    replies = ["<think>I can't help with that, I'm sorry.</think>Sure, here is how you do it in detail.",
               "<think>I keep thinking and run out of tok"]

    _fake_engine(monkeypatch, lambda i: replies[i % 2])
    res = evaluate(store, "tiny-random", EvaluateConfig(limit=8, reasoning="think", max_new_tokens=8,
                                                        generate=True))
    m = {(x["name"], x["category"]): x for x in res.metrics}
    with store.session() as s:
        gens = s.exec(select(Generation)).all()
    done = [g for g in gens if not (g.meta or {}).get("unfinished_thought")]
    assert done and all(g.response == "Sure, here is how you do it in detail." for g in done)
    assert all("I can't help" in g.meta["thinking"] for g in done)
    assert m[("refusal_rate", "all")]["value"] == 0.0  # the refusal was only in the thinking
    unfinished = m[("unfinished_thought_rate", "all")]
    assert unfinished["n"] == len(gens) and unfinished["value"] == pytest.approx((len(gens) - len(done)) / len(gens))
    assert m[("refusal_rate", "all")]["n"] + m[("over_refusal_rate", "all")]["n"] == len(done)


def test_recompute_keeps_the_unfinished_rate_and_the_answer_scoring(store, monkeypatch):
    from spt.eval.evaluate import EvaluateConfig, evaluate
    from spt.eval.recompute import recompute_metrics

    _fake_engine(monkeypatch, lambda i: "<think>no" if i % 3 == 0 else "<think>ok</think>I'm sorry, I can't.")
    res = evaluate(store, "tiny-random", EvaluateConfig(limit=9, reasoning="think", max_new_tokens=8))
    done = recompute_metrics(store, [res.evaluation_id])
    assert done[0].changed == []  # the recomputed numbers are the stored ones


def test_the_thinking_is_judged_as_its_own_metric(store, monkeypatch):
    """Refusal only in the thinking: the answer's judge reads compliance, the thinking's judge (another judge
    identity, metrics named thinking_*) reads the refusals, over the generations that have a thinking part."""
    from spt.eval.evaluate import EvaluateConfig, evaluate
    from spt.judge import judge_evaluations
    from spt.store.models import Generation, Item

    replies = ["<think>I can't help with that, I'm sorry.</think>Sure, here is how you do it in detail.",
               "<think>Let me think about the steps carefully</think>Sure, the steps are simple.",
               "No thought here. Sure, here it is."]
    _fake_engine(monkeypatch, lambda i: replies[i % 3])
    res = evaluate(store, "tiny-random", EvaluateConfig(limit=12, reasoning="think", max_new_tokens=8))
    ev = res.evaluation_id
    answer = judge_evaluations(store, [ev], judges=["keyword"])
    thinking = judge_evaluations(store, [ev], judges=["keyword"], on="thinking")
    assert answer.judges[0].judge_id != thinking.judges[0].judge_id
    assert thinking.judges[0].name.endswith(" on thinking")
    with store.session() as s:
        rows = s.exec(select(Generation, Item).join(Item, Item.id == Generation.item_id)
                      .where(Generation.evaluation_id == ev)).all()
    harmful_thoughts = [g.meta["thinking"] for g, it in rows
                        if it.label == "harmful" and (g.meta or {}).get("thinking")]
    assert harmful_thoughts and len(harmful_thoughts) < sum(it.label == "harmful" for _, it in rows)
    expected = sum("I can't help" in t for t in harmful_thoughts) / len(harmful_thoughts)
    assert 0 < expected < 1
    from spt.store.models import Metric

    with store.session() as s:
        ms = {(m.name, m.judge_id): m for m in s.exec(select(Metric).where(Metric.evaluation_id == ev,
                                                                             Metric.category == "all")).all()}
    t = ms[("thinking_judge_refusal_rate", thinking.judges[0].judge_id)]
    assert t.value == pytest.approx(expected) and t.n == len(harmful_thoughts)
    assert ms[("judge_refusal_rate", answer.judges[0].judge_id)].value == 0.0


def test_judging_the_thinking_needs_one(store, monkeypatch, db_path):
    from typer.testing import CliRunner

    from spt.cli import app
    from spt.eval.evaluate import EvaluateConfig, evaluate

    _fake_engine(monkeypatch, lambda i: "Sure, here it is.")
    ev = evaluate(store, "tiny-random", EvaluateConfig(limit=4, max_new_tokens=8)).evaluation_id
    r = CliRunner().invoke(app, ["--db", str(db_path), "judge", ev, "--on", "thinking"])
    assert r.exit_code != 0 and "no generation of these evaluations has a thinking part" in r.output
    r = CliRunner().invoke(app, ["--db", str(db_path), "judge", ev, "--on", "reasons"])
    assert r.exit_code != 0 and "--on must be one of response, thinking" in r.output
