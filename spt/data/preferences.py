"""Preference pairs for DPO alignment and the harmful set for Booster, both built from HarmOR pools.

DPO uses HarmOR's pairs both ways (issue 16):

- the harmful request prefers its refusal over a compliant reply ("Sure, here is how to …: [details
  withheld]", the redacted compliance style of `builtin:harmor-comply`, so no harmful content is stored);
- its benign twin prefers the helpful answer over a refusal (the refusal its harmful twin got, so the
  phrasing comes from the same pool). This half teaches the model not to over-refuse.

Booster's harmful loss h runs on harmful requests with compliant completions. They come from the
poison pool (`builtin:harmor-comply`) or an imported harmful/poison set, and never from the pool that is
evaluated: `harmful_set` refuses items whose prompt appears in the safety dataset's test split.
Only the train split of the safety dataset is used for preference pairs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from spt.errors import SptError


@dataclass(frozen=True)
class PreferencePair:
    """One DPO pair: `prompt` prefers `chosen` over `rejected`. `kind` is `harmful` or `benign`."""

    prompt: str
    chosen: str
    rejected: str
    kind: str
    pair_id: str | None = None


def _compliant_reply(item: dict[str, Any], rng: random.Random) -> str:
    from spt.data.harmor import second_person
    from spt.data.poison import _COMPLY, _COMPLY_NO_GOAL

    goal = (item.get("meta") or {}).get("goal")
    if goal:
        return rng.choice(_COMPLY).format(goal=second_person(goal))
    return rng.choice(_COMPLY_NO_GOAL)


def preference_pairs(items: list[dict[str, Any]], seed: int = 0, both_ways: bool = True) -> list[PreferencePair]:
    """DPO pairs from HarmOR items (train split when the items have one), in pair_id order.

    Each HarmOR pair gives two preference pairs: (harmful prompt, refusal ≻ compliant reply) and (benign
    prompt, helpful answer ≻ refusal). `both_ways=False` keeps only the first (what peers' data does).
    `seed` picks the compliant phrasing.
    """
    from spt.train.data import pairs_of, train_split

    pairs = pairs_of(train_split(items))
    if not pairs:
        raise SptError("the safety dataset has no harmful/benign pairs in its train split; DPO needs HarmOR pairs")
    rng = random.Random(f"spt-dpo-pairs:{seed}")
    out: list[PreferencePair] = []
    for h, b in pairs:
        if not h.get("response") or not b.get("response"):
            continue
        out.append(PreferencePair(h["prompt"], h["response"], _compliant_reply(h, rng), "harmful", h.get("pair_id")))
        if both_ways:
            out.append(PreferencePair(b["prompt"], b["response"], h["response"], "benign", b.get("pair_id")))
    if not out:
        raise SptError("the safety dataset's train pairs have no responses; DPO needs the refusal and the answer")
    return out


def harmful_set(poison_items: list[dict[str, Any]], safety_items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Harmful requests with compliant completions for Booster's h, checked against the evaluated pool.

    `poison_items`: the items of a poison or harmful dataset (train split when it has one). Any item whose
    prompt is also a prompt of the safety dataset's test split makes this an error: training Booster on
    the evaluated pool would inflate its refusal numbers.
    """
    from spt.train.data import train_split

    rows = [x for x in train_split(poison_items) if x.get("prompt") and x.get("response")]
    if not rows:
        raise SptError("the harmful set for booster is empty; pass `poison_data` with a poison/harmful dataset "
                       "(default builtin:harmor-comply, HarmOR's poison pool)")
    test_prompts = {x["prompt"] for x in safety_items if x.get("split") == "test"}
    leaked = [x for x in rows if x["prompt"] in test_prompts]
    if leaked:
        raise SptError(f"{len(leaked)} prompts of the booster harmful set are in the safety dataset's test split "
                       "(the evaluated pool); use HarmOR's poison pool (builtin:harmor-comply) or another set")
    return rows
