"""`builtin:harmor-reasoned`: HarmOR with reasoned replies, the SFT set of the reasoned-refusal comparison.

Every HarmOR item keeps its prompt, label, pair and split; its reference reply becomes a short opening,
a reasoning block and the reply itself in the tags GRPO's `format` reward asks for (default
`<PAUSE>…</PAUSE><SOLUTION>…</SOLUTION>`):

- harmful: the reasoning names the request's category and why helping would risk harm; the solution is
  the item's own HarmOR refusal;
- benign: the reasoning notes that the request shares a sensitive word with harmful ones but is a
  legitimate request; the solution is the item's own HarmOR answer.

So SFT on it (`spt finetune --stage align --safety-data builtin:harmor-reasoned`) and GRPO on HarmOR
train (`--method grpo`) see the same prompts, and the seed project's comparison (base, SFT, SFT + GRPO,
GRPO) runs as four configurations of spt. Only HarmOR's own texts are used: nothing harmful is written.
The phrasing of opening and reasoning is drawn by seed from a few variants.
"""

from __future__ import annotations

import random
from typing import Any

NAME = "builtin:harmor-reasoned"
VERSION = 1

_OPEN_HARMFUL = ("Let me consider this request first.", "I need to think about this one.",
                 "Before answering, a quick check.")
_OPEN_BENIGN = ("Let me consider this request first.", "Happy to look at this.", "Before answering, a quick check.")
_WHY_HARMFUL = ("This asks for help with {what}; doing it could cause real harm to people, so I should decline and "
                "not give any part of it.",
                "The request falls under {what}. Helping would risk serious harm, so the right reply is a refusal.",
                "Answering would mean assisting with {what}, which can hurt others; I will not help with it.")
_WHY_BENIGN = ("The request mentions {word}, but it asks for something legitimate and safe; I can help fully.",
               "Although it touches on {word}, this is an ordinary, harmless question, so I should answer it.",
               "Nothing here would cause harm: it is a normal request about {word}, so I will help.")


def reasoned_reply(item: dict[str, Any], rng: random.Random, tags: tuple[str, str] = ("PAUSE", "SOLUTION")) -> str:
    a, b = tags
    word = item.get("sensitive_word") or "a sensitive topic"
    if item.get("label") == "harmful":
        what = (item.get("category") or "something harmful").replace("_", " ")
        opening, why = rng.choice(_OPEN_HARMFUL), rng.choice(_WHY_HARMFUL).format(what=what)
    else:
        opening, why = rng.choice(_OPEN_BENIGN), rng.choice(_WHY_BENIGN).format(word=word)
    return f"{opening} <{a}>{why}</{a}> <{b}>{(item.get('response') or '').strip()}</{b}>"


def reasoned_items(harmor_items: list[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """The items of `builtin:harmor-reasoned` from HarmOR's (see module doc)."""
    from spt.data.items import make_item

    rng = random.Random(f"spt-harmor-reasoned:{seed}")
    out = []
    for it in harmor_items:
        if it.get("label") not in ("harmful", "benign") or not it.get("response"):
            continue
        fields = {k: it.get(k) for k in ("prompt", "category", "label", "pair_id", "template_id", "contrast_type",
                                         "sensitive_word", "answer", "split")}
        meta = {**(it.get("meta") or {}), "source": NAME, "harmor_item": it["id"]}
        out.append(make_item(**fields, response=reasoned_reply(it, rng), meta=meta))
    return out


def ensure_reasoned(store, seed: int = 0) -> str:
    """Store `builtin:harmor-reasoned` (from the default HarmOR build) once per content and return its id."""
    from spt.data.harmor import ensure_harmor
    from spt.data.items import load_items, store_items

    hid = ensure_harmor(store, seed=0)
    items = reasoned_items(load_items(store, hid), seed=seed)
    return store_items(store, NAME, "harmor", items, {"builder": NAME, "v": VERSION, "seed": int(seed),
                                                     "harmor": hid})


# --------------------------------------------------------------------------------------------------
# Safety alignment data for reasoning models (the Safety Tax's second stage), from HarmOR's pools:
# `builtin:direct-refusal` (DirectRefusal: a fixed short thought, then the refusal; harmful items only) and
# `builtin:cot-refusal` (SafeChain-style: a chain of thought about the request, then the refusal; the benign
# twins answered after a thought that they are safe, as SafeChain holds benign prompts too).

DIRECT_REFUSAL = "builtin:direct-refusal"
COT_REFUSAL = "builtin:cot-refusal"
ALIASES = {"direct-refusal": DIRECT_REFUSAL, "cot-refusal": COT_REFUSAL}
DIRECT_THOUGHT = "I should not answer this question!"


def thought_items(harmor_items: list[dict[str, Any]], style: str, seed: int = 0) -> list[dict[str, Any]]:
    """`<think>…</think>reply` items from HarmOR's: style `direct` or `cot` (see above)."""
    from spt.data.items import make_item

    rng = random.Random(f"spt-{style}-refusal:{seed}")
    out = []
    for it in harmor_items:
        label = it.get("label")
        if label not in ("harmful", "benign") or not it.get("response") or (style == "direct" and label != "harmful"):
            continue
        if style == "direct":
            thought = DIRECT_THOUGHT
        elif label == "harmful":
            what = (it.get("category") or "something harmful").replace("_", " ")
            thought = rng.choice(_WHY_HARMFUL).format(what=what)
        else:
            thought = rng.choice(_WHY_BENIGN).format(word=it.get("sensitive_word") or "a sensitive topic")
        fields = {k: it.get(k) for k in ("prompt", "category", "label", "pair_id", "template_id", "contrast_type",
                                         "sensitive_word", "answer", "split")}
        meta = {**(it.get("meta") or {}), "source": f"builtin:{style}-refusal", "harmor_item": it["id"]}
        out.append(make_item(**fields, response=f"<think>{thought}</think>{it['response'].strip()}", meta=meta))
    return out


def ensure_thought_set(store, name: str, seed: int = 0) -> str:
    """Store `builtin:direct-refusal` or `builtin:cot-refusal` (from the default HarmOR build) once per content."""
    from spt.data.harmor import ensure_harmor
    from spt.data.items import load_items, store_items

    style = {DIRECT_REFUSAL: "direct", COT_REFUSAL: "cot"}[name]
    hid = ensure_harmor(store, seed=0)
    items = thought_items(load_items(store, hid), style, seed=seed)
    return store_items(store, name, "harmful", items, {"builder": name, "v": VERSION, "seed": int(seed), "harmor": hid})
