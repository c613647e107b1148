"""Thinking-aware replies: a reply is split into its thinking and its answer before anything scores it.

`--reasoning` names how a model marks its thinking:

- `none` (default): the whole reply is the answer;
- `think`: `<think>…</think>` (DeepSeek-R1, Qwen3, s1-style models). Templates that open the block
  themselves make the reply start inside it, so text before a lone `</think>` is thinking too;
- `tags:OPEN,ANSWER`: a reasoning tag and an answer tag, e.g. `tags:PAUSE,SOLUTION` (reasoned refusal):
  the answer is the answer tag's content, or the text after the reasoning tag when there is no answer tag.

The stored generation's `response` is the **answer** (what refusal, harm and task scoring read); the
thinking and the raw reply stay in `meta` (`thinking`, `raw_response`), so the thinking can be judged on
its own. A reply that opens a thought and never closes it (out of tokens mid-thought) is an
**unfinished thought**: its answer is empty, `meta.unfinished_thought` is set, it is unscored in every
rate (never read as an answer) and counted by the `unfinished_thought_rate` metric.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from spt.errors import SptError

NONE = "none"


@dataclass(frozen=True)
class Split:
    thinking: str | None
    answer: str
    unfinished: bool


@dataclass(frozen=True)
class ReasoningFormat:
    name: str  # none | think | tags:OPEN,ANSWER
    open_tag: str | None = None
    answer_tag: str | None = None

    def split(self, text: str) -> Split:
        text = text or ""
        if self.name == NONE:
            return Split(None, text, False)
        o = self.open_tag
        close = f"</{o}>"
        start = text.find(f"<{o}>")
        end = text.find(close)
        if end < 0:
            if start >= 0 or (self.name == "think" and not text.strip()):
                return Split(text[start + len(o) + 2:].strip() if start >= 0 else "", "", start >= 0)
            thinking, rest = None, text  # no thought at all: the reply is the answer
        else:
            thinking = text[(start + len(o) + 2) if 0 <= start < end else 0:end].strip()
            rest = text[end + len(close):]
        if self.answer_tag is None:
            return Split(thinking, rest.strip(), False)
        m = re.search(rf"<{re.escape(self.answer_tag)}>(.*?)(?:</{re.escape(self.answer_tag)}>|$)", rest, re.DOTALL)
        return Split(thinking, (m.group(1) if m else rest).strip(), False)


def parse_reasoning(spec: str | None) -> ReasoningFormat:
    """`none`, `think` or `tags:OPEN,ANSWER`; SptError naming the accepted forms otherwise."""
    s = (spec or NONE).strip()
    if s == NONE:
        return ReasoningFormat(NONE)
    if s == "think":
        return ReasoningFormat("think", "think", None)
    if s.startswith("tags:"):
        parts = [p.strip() for p in s[5:].split(",")]
        if len(parts) == 2 and all(re.fullmatch(r"[A-Za-z][\w-]*", p) for p in parts) and parts[0] != parts[1]:
            return ReasoningFormat(f"tags:{parts[0]},{parts[1]}", parts[0], parts[1])
    raise SptError(f"unknown `reasoning` {spec!r}; use none, think, or tags:OPEN,ANSWER (e.g. tags:PAUSE,SOLUTION)")
