"""`brevity`: the text before the reasoning tag stays short (the seed project's 5, minus 0.2 per word over
20, normalised to 0-1: 1 up to 20 words, then 0.04 less per word, never below 0). Without the tags the
whole completion counts as that opening text."""

from __future__ import annotations

from typing import Any

from spt.train.rewards.base import Reward, RewardContext, split_tags

FREE_WORDS = 20
PER_WORD = 0.04


class BrevityReward(Reward):
    name = "brevity"
    summary = "1 for at most 20 words before the reasoning, 0.04 less per extra word (0-1)"

    def score(self, completions: list[str], items: list[dict[str, Any]], ctx: RewardContext) -> list[float | None]:
        out: list[float | None] = []
        for text in completions:
            n = len(split_tags(text, ctx.tags).before.split())
            out.append(max(0.0, 1.0 - PER_WORD * max(0, n - FREE_WORDS)))
        return out


REWARD = BrevityReward()
