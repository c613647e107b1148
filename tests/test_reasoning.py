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
