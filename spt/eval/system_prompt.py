"""`--system-prompt`: the system turn an evaluation puts before every prompt.

A model trained with a system prompt (GRPO asks for the reasoned-refusal format in one) is measured in the
condition it was trained and deployed in only when its evaluation sends the same system turn; the base
model, evaluated with and without it, separates what the prompt does from what training did. So the system
prompt is part of the evaluation's identity (and of its generations'): two evaluations that differ in it
never share replies or metrics.

Forms: `grpo` (the prompt `spt finetune --method grpo` trains with, default tags), `grpo:OPEN,ANSWER` (with
those `--grpo-tags`), `@FILE` (the file's text) or the text itself. It applies to generated replies (and to
lm-eval benchmarks, as lm-eval's `system_instruction`); teacher-forced losses are computed on the user turn
alone, as for every evaluation, so they stay comparable across evaluations.
"""

from __future__ import annotations

from pathlib import Path

from spt.errors import SptError


def resolve_system_prompt(value: str | None) -> str | None:
    """The system prompt text `value` names (see module doc); None stays None."""
    if value is None:
        return None
    v = str(value)
    if v == "grpo" or v.startswith("grpo:"):
        from spt.train.grpo import parse_tags, system_prompt

        return system_prompt(parse_tags(v[5:]) if v.startswith("grpo:") else ("PAUSE", "SOLUTION"))
    if v.startswith("@"):
        path = Path(v[1:]).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise SptError(f"cannot read the system prompt file {str(path)!r} ({e.__class__.__name__}); pass "
                           "@FILE of a UTF-8 text file, grpo, or the prompt's text") from None
        v = text.strip()
        if not v:
            raise SptError(f"the system prompt file {str(path)!r} is empty; write the prompt into it")
    if not v.strip():
        raise SptError("`system_prompt` is empty; pass its text, @FILE or grpo, or leave it out")
    return v
