"""`spt evaluate --system-prompt`: a system turn before every prompt, part of the evaluation's identity (a model
trained with GRPO's system prompt is measured in the condition it was trained in)."""

from __future__ import annotations

import json

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from spt.cli import app
from spt.errors import SptError
from spt.eval.system_prompt import resolve_system_prompt

runner = CliRunner()


def test_the_forms_resolve_to_their_text(tmp_path):
    from spt.train.grpo import system_prompt

    assert resolve_system_prompt(None) is None
    assert resolve_system_prompt("Be brief.") == "Be brief."
    assert resolve_system_prompt("grpo") == system_prompt(("PAUSE", "SOLUTION"))
    assert "<THINK>" in resolve_system_prompt("grpo:THINK,ANSWER") and "<PAUSE>" not in resolve_system_prompt(
        "grpo:THINK,ANSWER")
    f = tmp_path / "sys.txt"
    f.write_text("Line one.\nLine two.\n", encoding="utf-8")
    assert resolve_system_prompt(f"@{f}") == "Line one.\nLine two."


@pytest.mark.parametrize("value, message", [("", "is empty"), ("   ", "is empty"), ("grpo:A", "two different tag"),
                                            ("grpo:A,A", "two different tag"), ("@/no/such/file.txt", "cannot read")])
def test_bad_system_prompts_are_refused(value, message):
    with pytest.raises(SptError, match=message):
        resolve_system_prompt(value)


def test_an_empty_system_prompt_file_is_refused(tmp_path):
    f = tmp_path / "empty.txt"
    f.write_text("  \n", encoding="utf-8")
    with pytest.raises(SptError, match="is empty"):
        resolve_system_prompt(f"@{f}")


def test_generations_carry_the_system_turn_and_it_is_part_of_the_identity(store, monkeypatch):
    from spt.engines.hf import HFEngine
    from spt.eval.evaluate import EvaluateConfig, evaluate
    from spt.store.models import Evaluation, Generation

    seen: list[tuple[list[dict], str]] = []
    real = HFEngine.generate

    def spy(self, requests, **kw):
        seen.extend((r.as_messages(), self.prompt_text(r)) for r in requests)
        return real(self, requests, **kw)

    monkeypatch.setattr(HFEngine, "generate", spy)
    text = "You are a careful assistant. Answer in one sentence."
    plain = evaluate(store, "tiny-random", EvaluateConfig(limit=4, max_new_tokens=4))
    n_plain = len(seen)
    assert n_plain and all(m[0]["role"] == "user" and text not in p for m, p in seen)
    with_sys = evaluate(store, "tiny-random", EvaluateConfig(limit=4, max_new_tokens=4, system_prompt=text))
    turns = seen[n_plain:]
    assert len(turns) == n_plain  # nothing reused from the evaluation without the system turn
    assert all(m[0] == {"role": "system", "content": text} and m[1]["role"] == "user" for m, _ in turns)
    assert all(text in p for _, p in turns)  # the chat template rendered it into what the model continues
    assert with_sys.evaluation_id != plain.evaluation_id
    again = evaluate(store, "tiny-random", EvaluateConfig(limit=4, max_new_tokens=4, system_prompt=text))
    assert again.evaluation_id == with_sys.evaluation_id and len(seen) == 2 * n_plain  # resumed: no new replies
    with store.session() as s:
        ev = s.get(Evaluation, with_sys.evaluation_id)
        gens = s.exec(select(Generation).where(Generation.evaluation_id == ev.id)).all()
    assert ev.config["system_prompt"] == text and ev.config["identity_fields"]["system_prompt"] == text
    assert len(gens) == n_plain


def test_system_prompt_misuse_is_refused_and_writes_nothing(db_path, tmp_path):
    resp = tmp_path / "r.jsonl"
    resp.write_text(json.dumps({"prompt": "p", "response": "r", "label": "harmful"}) + "\n")
    cases = [(["--responses", str(resp), "--model-name", "m"], "applies to generating"),
             (["--recompute-metrics"], "does not apply to --recompute-metrics"),
             (["tiny-random", "--system-prompt", "@" + str(tmp_path / "missing.txt")], "cannot read"),
             (["tiny-random", "--system-prompt", "grpo:X"], "two different tag")]
    for extra, message in cases:
        args = ["evaluate", *extra, "--db", str(db_path)]
        if "--system-prompt" not in extra:
            args += ["--system-prompt", "Be brief."]
        r = runner.invoke(app, args)
        assert r.exit_code != 0 and message in r.output, (extra, r.output)
    assert not db_path.exists() or _n_evaluations(db_path) == 0


def _n_evaluations(db_path) -> int:
    from spt.store import open_store
    from spt.store.models import Evaluation

    with open_store(db_path) as st, st.session() as s:
        return len(s.exec(select(Evaluation)).all())
