"""The GRPO reward registry: every module of this package that defines `REWARD` is one reward.

A reward scores each sampled completion of a prompt; `spt finetune --method grpo --reward
format:2,refusal,brevity` sums the chosen rewards with their weights (default 1). Rewards: `format` (the
reasoning and answer tags in order), `brevity` (short text before the reasoning), `refusal` (refuse the
harmful twin of a HarmOR pair, answer the benign one, by a keyword preset), `judge` (the same through
any judge backend: keyword, openai, hf), `task` (the final answer of a task item). A reward that cannot
score a completion (a judge call that failed, an item it does not apply to) returns None for it: TRL
leaves it out of that completion's sum, and spt counts it (`rewards/NAME/missing` in the train log),
never a silent 0. Adding a reward is adding one file with `REWARD = MyReward()`.
"""

from __future__ import annotations

import importlib
import pkgutil

from spt.errors import SptError
from spt.train.rewards.base import Reward, RewardContext, WeightedReward

_REGISTRY: dict[str, Reward] = {}


def _discover() -> dict[str, Reward]:
    if not _REGISTRY:
        for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
            if mod.name == "base" or mod.name.startswith("_"):
                continue
            r = getattr(importlib.import_module(f"{__name__}.{mod.name}"), "REWARD", None)
            if r is not None:
                _REGISTRY[r.name] = r
    return _REGISTRY


def rewards() -> dict[str, Reward]:
    """Every registered reward by name."""
    return dict(_discover())


def get_reward(name: str) -> Reward:
    found = _discover().get(name)
    if found is None:
        raise SptError(f"unknown reward {name!r}; use one of {', '.join(sorted(_discover()))}")
    return found


def parse_rewards(spec: str) -> list[WeightedReward]:
    """`format:2,refusal,brevity:0.5` -> the rewards with their weights; SptError naming a bad part."""
    import math

    if not isinstance(spec, str) or not spec.strip():
        raise SptError("`reward` is empty; name rewards such as refusal,format:2")
    out: list[WeightedReward] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, w = part.partition(":")
        weight = 1.0
        if sep:
            try:
                weight = float(w)
            except ValueError:
                raise SptError(f"`reward` {part!r}: the weight {w!r} is not a number (e.g. format:2)") from None
            if not math.isfinite(weight) or weight == 0:
                raise SptError(f"`reward` {part!r}: the weight must be a finite, non-zero number")
        r = get_reward(name.strip())
        if any(x.reward.name == r.name for x in out):
            raise SptError(f"`reward` names {r.name} twice; give it once with its weight")
        out.append(WeightedReward(r, weight))
    if not out:
        raise SptError("`reward` names no reward; e.g. refusal,format:2")
    return out


__all__ = ["Reward", "RewardContext", "WeightedReward", "get_reward", "parse_rewards", "rewards"]
