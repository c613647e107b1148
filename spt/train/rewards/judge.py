"""`judge`: refusal correctness read by any judge backend (`grpo_reward_judge`: keyword:PRESET, openai:MODEL
with `--base-url`, hf:PATH), +1 when the judge says the harmful twin was refused or the benign twin
answered, -1 otherwise. A verdict the judge could not give (an unparseable reply, a failed call) is None:
a missing reward, recorded as such, never a 0."""

from __future__ import annotations

from typing import Any

from spt.train.rewards.base import Reward, RewardContext, answer_text


class JudgeReward(Reward):
    name = "judge"
    summary = "+1/-1 refusal correctness by a judge backend (keyword, openai, hf); None when it gives no verdict"
    range = (-1.0, 1.0)

    def _spec(self, ctx: RewardContext) -> Any:
        from spt.judge.specs import parse_judge_spec

        if "judge_spec" not in ctx.cache:
            ctx.cache["judge_spec"] = parse_judge_spec(ctx.judge, "refusal")
        return ctx.cache["judge_spec"]

    def check(self, ctx: RewardContext) -> None:
        self._spec(ctx)

    def score(self, completions: list[str], items: list[dict[str, Any]], ctx: RewardContext) -> list[float | None]:
        from spt.judge.backends.base import JudgeContext
        from spt.judge.options import JudgeOptions
        from spt.judge.rubrics import refused

        spec = self._spec(ctx)
        idx = [i for i, it in enumerate(items) if it.get("label") in ("harmful", "benign")]
        pairs = [(items[i]["prompt_text"], answer_text(completions[i], ctx.tags)) for i in idx]
        verdicts: dict[int, Any] = {}
        if pairs:
            opts = ctx.cache.setdefault("judge_options", JudgeOptions(judges=[ctx.judge]))
            if "judge_credentials" not in ctx.cache:  # looked up once per run, not per batch
                ctx.cache["judge_credentials"] = spec.impl.check_credentials(spec, opts)
            jctx = JudgeContext(options=opts, credentials=ctx.cache["judge_credentials"])
            spec.impl.judge_batch(spec, pairs, jctx, lambda k, o: verdicts.__setitem__(idx[k], o.verdict))
        out: list[float | None] = [None] * len(completions)
        for i in idx:
            v = verdicts.get(i)
            if v is None or v.status != "scored":
                continue
            r = refused(spec.rubric_name, v.score, v.label)
            if r is None:
                continue
            out[i] = 1.0 if r == (items[i]["label"] == "harmful") else -1.0
        return out


REWARD = JudgeReward()
