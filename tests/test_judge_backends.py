"""Judge backends behind one protocol and a registry; options in one JudgeOptions; a typed result."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlmodel import select
from test_judge import judgments, make_eval

from spt.errors import SptError
from spt.judge import JudgeOptions, JudgeResult, judge_evaluations, parse_judge_spec
from spt.judge.backends import Backend, BaseBackend, BatchReport, Outcome, backends, register
from spt.judge.backends.base import JudgeContext
from spt.judge.rubrics import Verdict
from spt.judge.specs import JudgeSpec
from spt.store.models import Judge, Judgment

JUDGE_DIR = Path(__file__).resolve().parents[1] / "spt" / "judge"


def test_registry_finds_every_backend_module():
    found = backends()
    assert {"keyword", "keyword-any", "openai", "hf", "human"} <= set(found)
    for b in found.values():
        assert isinstance(b, Backend)
    with pytest.raises(SptError, match=r"unknown judge backend .*keyword-any:PRESET\+PRESET"):
        parse_judge_spec("gemini:pro")


def test_core_and_specs_never_switch_on_backend_names():
    names = "|".join(re.escape(n) for n in backends())
    for f in ("core.py", "specs.py", "metrics.py"):
        text = (JUDGE_DIR / f).read_text()
        assert not re.search(r"\.backend\s*(==|!=|in\b)", text), f
        assert not re.search(rf"[\"']({names})[\"']", text), f


class _Paid(BaseBackend):
    """A test backend: paid, needs a key, replies 'R' (refusal) or 'C', and re-parses stored replies."""

    name = "paidtest"
    usage = "paidtest:MODEL"

    def __init__(self) -> None:
        self.seen_credentials: list[object] = []
        self.parse_as_refusal = "R"

    def parse(self, spec: str, arg: str, rubric: str) -> JudgeSpec:
        return JudgeSpec(spec, self.name, arg, None, "refusal", "t1", "h", {"backend": self.name, "model": arg})

    def check_credentials(self, spec, options):
        if options.api_key_env != "GOOD":
            raise SptError("paidtest needs api_key_env=GOOD")
        return "secret-object"

    def unpriced(self, spec, prices):
        return spec.model not in prices

    def cost(self, spec, outcome, prices):
        return prices[spec.model]["input"] * (outcome.prompt_tokens or 0) if spec.model in prices else None

    def _verdict(self, raw: str) -> Verdict:
        refused = raw == self.parse_as_refusal
        return Verdict("scored", score=float(refused), label="refusal" if refused else "compliance")

    def judge_batch(self, spec, pairs, ctx: JudgeContext, emit) -> BatchReport:
        self.seen_credentials.append(ctx.credentials)
        calls = 0
        for i, (_, response) in enumerate(pairs):
            if ctx.should_stop():
                return BatchReport(calls=calls, stopped="cost_limit")
            raw = "R" if "no" in response else "C"
            calls += 1
            emit(i, Outcome(self._verdict(raw), raw=raw, prompt_tokens=10, attempts=1))
        return BatchReport(calls=calls)

    def reparse(self, spec, raw, reason, response):
        return self._verdict(raw or "")


@pytest.fixture
def paid():
    b = _Paid()
    register(b)
    yield b
    from spt.judge.backends import _REGISTRY

    _REGISTRY.pop(b.name, None)


def test_a_registered_backend_gets_credentials_cost_limit_and_fix_through_the_protocol(store, paid):
    eid = make_eval(store, [("harmful", "c", f"p{i}", "no way" if i % 2 else "sure") for i in range(6)])
    with pytest.raises(SptError, match="GOOD"):  # credentials are checked before anything is written
        judge_evaluations(store, [eid], JudgeOptions(judges=["paidtest:m"]))
    with pytest.raises(SptError, match="price"):  # a cost limit needs a price
        judge_evaluations(store, [eid], JudgeOptions(judges=["paidtest:m"], api_key_env="GOOD", cost_limit=1.0))
    with store.session() as s:
        assert s.exec(select(Judge)).all() == [] and s.exec(select(Judgment)).all() == []

    opts = JudgeOptions(judges=["paidtest:m"], api_key_env="GOOD", price_table={"m": {"input": 0.1, "output": 0}},
                        cost_limit=2.5)
    res = judge_evaluations(store, [eid], opts)
    assert isinstance(res, JudgeResult) and paid.seen_credentials == ["secret-object"]
    (s,) = res.judges
    # 1 USD per judgment: the third one reaches the limit, no further call
    assert (s.judged, s.not_judged, s.calls, res.stopped) == (3, 3, 3, "cost_limit")
    assert s.cost_usd == pytest.approx(3.0) and res.cost_usd == pytest.approx(3.0)
    assert res.to_dict()["judges"][0]["cost_usd"] == pytest.approx(3.0)

    res = judge_evaluations(store, [eid], JudgeOptions.of(opts, cost_limit=None))
    assert (res.judges[0].judged, res.judges[0].cached) == (3, 3)

    # --fix: the backend's reparse, no credentials and no calls
    paid.parse_as_refusal = "C"
    paid.seen_credentials.clear()
    res = judge_evaluations(store, [eid], judges=["paidtest:m"], fix=True)
    assert res.judges[0].fixed == 6 and res.judges[0].calls == 0 and paid.seen_credentials == []
    assert {j.label for j in judgments(store).values()} == {"refusal", "compliance"}
    assert {(k, j.label) for k, j in judgments(store).items()} == {("no way", "compliance"), ("sure", "refusal")}


def test_options_are_one_validated_value(store):
    eid = make_eval(store, [("harmful", "c", "p", "r")])
    base = JudgeOptions(judges=["keyword"], rubric="xstest")
    assert JudgeOptions.of(base, rejudge=True).rubric == "xstest" and base.rejudge is False
    for bad, match in [({"max_connections": 0}, "`max_connections`"), ({"timeout": float("nan")}, "timeout"),
                       ({"cost_limit": -1.0}, "`cost_limit`"), ({"fix": True, "rejudge": True}, "exclude"),
                       ({"batch_size": 0}, "batch size")]:
        with pytest.raises(SptError, match=match):
            judge_evaluations(store, [eid], JudgeOptions.of(base, **bad))
    with pytest.raises(SptError, match="unknown judge option 'judge'"):
        judge_evaluations(store, [eid], judge=["keyword"])
    res = judge_evaluations(store, [eid], base)
    assert res.judges[0].name == "keyword:spt" and res.judges[0].rubric == "refusal"
    assert res.to_dict()["generations"] == 1  # the --json shape


def test_hf_generative_judge_generates_through_eval_generate(store, monkeypatch):
    import dataclasses

    import spt.eval.generate as generate
    import spt.judge.rubrics as rubrics

    monkeypatch.setitem(rubrics.RUBRICS, "refusal", dataclasses.replace(rubrics.RUBRICS["refusal"], max_tokens=4))
    calls = []
    real = generate.generate_batched

    def spy(model, tokenizer, prompts, **kw):
        calls.append((len(prompts), kw["max_new_tokens"], kw["temperature"], kw["batch_size"]))
        return real(model, tokenizer, prompts, **kw)

    monkeypatch.setattr(generate, "generate_batched", spy)
    eid = make_eval(store, [("harmful", "c", f"p{i}", f"response {i}") for i in range(3)])
    res = judge_evaluations(store, [eid], judges=["hf:tiny-random"], batch_size=2)
    assert calls == [(3, 4, 0.0, 2)]
    s = res.judges[0]
    assert s.judged == 3 and s.calls == 3 and s.completion_tokens >= 3
    spec = parse_judge_spec("hf:tiny-random")
    assert spec.config["generator"].startswith("spt.eval.generate")  # the generation path is in the identity
