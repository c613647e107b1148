"""`task`: 1 when the final answer of a task prompt is correct (the task's own scorer), 0 when not; None
for prompts without a reference answer (HarmOR prompts)."""

from __future__ import annotations

from typing import Any

from spt.train.rewards.base import Reward, RewardContext, answer_text


class TaskReward(Reward):
    name = "task"
    summary = "1 for a correct final answer on task prompts (the task's scorer), else 0"

    def check(self, ctx: RewardContext) -> None:
        from spt.errors import SptError

        if ctx.task_score is None:
            raise SptError("the task reward needs task prompts: give `grpo_task_ratio` > 0 and a `task`")

    def score(self, completions: list[str], items: list[dict[str, Any]], ctx: RewardContext) -> list[float | None]:
        out: list[float | None] = []
        for text, it in zip(completions, items, strict=True):
            if not it.get("answer"):
                out.append(None)
                continue
            out.append(1.0 if ctx.task_score(answer_text(text, ctx.tags), it["answer"]) else 0.0)
        return out


REWARD = TaskReward()
