"""What a GRPO reward implements, and the tag parsing the reasoned-refusal rewards share."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TAGS = ("PAUSE", "SOLUTION")


@dataclass
class RewardContext:
    """What rewards may use: the tags, the refusal preset, the task's scorer, the judge spec."""

    tags: tuple[str, str] = DEFAULT_TAGS
    refusal_preset: str = "spt"
    judge: str = "keyword:spt"
    task_score: Any = None  # (prediction, answer) -> bool, when task prompts are mixed in
    cache: dict[str, Any] = field(default_factory=dict)


class Reward:
    """One reward: `score(completions, items, ctx)` -> one float (or None: not scoreable) per completion.

    `items[i]` holds the prompt's dataset row (label harmful|benign|task, pair_id, answer, category).
    """

    name = ""
    summary = ""
    range: tuple[float, float] = (0.0, 1.0)

    def check(self, ctx: RewardContext) -> None:
        """SptError for settings this reward cannot run with (before any model loads)."""

    def score(self, completions: list[str], items: list[dict[str, Any]], ctx: RewardContext) -> list[float | None]:
        raise NotImplementedError


@dataclass(frozen=True)
class WeightedReward:
    reward: Reward
    weight: float


@dataclass(frozen=True)
class Tagged:
    """A completion split by the two tags: text before the first, inside each, and whether they are well formed."""

    before: str
    reasoning: str | None
    answer: str | None
    ordered: bool


def split_tags(text: str, tags: tuple[str, str]) -> Tagged:
    a, b = tags
    ra = re.search(rf"<{re.escape(a)}>(.*?)</{re.escape(a)}>", text, re.DOTALL)
    rb = re.search(rf"<{re.escape(b)}>(.*?)</{re.escape(b)}>", text, re.DOTALL)
    first = min([m.start() for m in (ra, rb) if m] or [len(text)])
    ordered = bool(ra and rb and ra.end() <= rb.start())
    return Tagged(text[:first].strip(), ra.group(1).strip() if ra else None, rb.group(1).strip() if rb else None,
                  ordered)


def answer_text(text: str, tags: tuple[str, str]) -> str:
    """What the user reads: the answer tag's content when there is one, else the whole completion."""
    t = split_tags(text, tags)
    return t.answer if t.answer is not None else text
