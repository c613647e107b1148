"""`format`: the reasoned-refusal structure, `<PAUSE>reasoning</PAUSE><SOLUTION>answer</SOLUTION>`.

Four checks, a quarter each (0-1, the seed project's 0-6 scale normalised): the reasoning tag is present
and non-empty, the answer tag is present and non-empty, reasoning comes before the answer, and nothing
but a short opening precedes the reasoning (at most 40 words). Tags are configurable (`grpo_tags`).
"""

from __future__ import annotations

from typing import Any

from spt.train.rewards.base import Reward, RewardContext, split_tags


class FormatReward(Reward):
    name = "format"
    summary = "reasoning tag, then answer tag, both non-empty (0-1)"

    def score(self, completions: list[str], items: list[dict[str, Any]], ctx: RewardContext) -> list[float | None]:
        out: list[float | None] = []
        for text in completions:
            t = split_tags(text, ctx.tags)
            checks = [bool(t.reasoning), bool(t.answer), t.ordered, len(t.before.split()) <= 40]
            out.append(sum(checks) / len(checks))
        return out


REWARD = FormatReward()
