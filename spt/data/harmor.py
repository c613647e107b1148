"""HarmOR: render the category templates into paired harmful / benign look-alike items.

Every risky prompt (label `harmful`, answered with a refusal) is paired with one safe look-alike
(label `benign`, answered helpfully) that uses the same sensitive word; the pair shares `pair_id`.
Templates are split into train/test per category before pairing, and a pair only combines templates
of one split, so no template (hence no paraphrase family) is in both splits.
"""

from __future__ import annotations

import os
import random
from typing import Any

from spt.data.items import make_item
from spt.data.templates import CategoryTemplates, load_all, render, templates_hash
from spt.errors import SptError
from spt.store.ids import content_id

DEFAULT_NAME = "harmor"
DEFAULT_TEST_FRACTION = 0.3


def normalize_category(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_").replace("&", "")


def select_categories(cats: dict[str, CategoryTemplates], categories: list[str] | None) -> list[str]:
    """The requested categories (all when None/empty), checked against the template files."""
    if not categories:
        return sorted(cats)
    chosen: list[str] = []
    for c in categories:
        n = normalize_category(c)
        n = n.replace("__", "_")
        if n not in cats:
            raise SptError(f"unknown category {c!r}; valid categories: {', '.join(sorted(cats))}")
        if n not in chosen:
            chosen.append(n)
    return sorted(chosen)


def check_params(per_category: int | None, test_fraction: float) -> None:
    if per_category is not None and (isinstance(per_category, bool) or not isinstance(per_category, int)
                                     or per_category < 1):
        raise SptError(f"--per-category must be a whole number of pairs >= 1, not {per_category!r}")
    if not isinstance(test_fraction, (int, float)) or not 0.0 <= float(test_fraction) <= 1.0 \
            or test_fraction != test_fraction:
        raise SptError(f"--test-fraction must be between 0 and 1, not {test_fraction!r}")


def _split_templates(ids: list[str], fraction: float, rng: random.Random) -> dict[str, str]:
    order = list(ids)
    rng.shuffle(order)
    n_test = round(len(order) * fraction)
    if fraction > 0 and n_test == 0 and len(order) > 1:
        n_test = 1
    if fraction < 1 and n_test == len(order) and len(order) > 1:
        n_test = len(order) - 1
    return {tid: ("test" if i < n_test else "train") for i, tid in enumerate(order)}


_PRONOUNS = {"my": "your", "me": "you", "myself": "yourself", "i": "you", "i'm": "you're", "mine": "yours",
             "i've": "you've"}


def second_person(text: str) -> str:
    """'hurt myself with my ...' -> 'hurt yourself with your ...' (for compliance-style responses)."""
    import re

    return re.sub(r"\b(i'm|i've|myself|mine|my|me|i)\b", lambda m: _PRONOUNS[m.group(1).lower()], text,
                  flags=re.IGNORECASE)


def _category_pairs(c: CategoryTemplates, seed: int, test_fraction: float) -> list[tuple[dict, dict]]:
    rng = random.Random(f"harmor:{seed}:{c.category}")
    risky_split = _split_templates([t.id for t in c.risky], test_fraction, rng)
    safe_split = _split_templates([t.id for t in c.safe], test_fraction, rng)
    pairs: list[tuple[dict, dict]] = []
    for w in c.words:
        for split in ("train", "test"):
            risky = [t for t in c.risky if risky_split[t.id] == split]
            safe = [t for t in c.safe if safe_split[t.id] == split]
            rng.shuffle(risky)
            rng.shuffle(safe)
            for r, s in zip(risky, safe, strict=False):
                prompt_h = render(r.text, w)
                prompt_b = render(s.text, w)
                contrast = w["benign_type"] if s.contrast_type == "{benign_type}" else s.contrast_type
                pair_id = "pair:" + content_id([c.category, prompt_h, prompt_b])[7:23]
                refusal = render(rng.choice(c.refusals), w)
                common = dict(category=c.category, pair_id=pair_id, contrast_type=contrast,
                              sensitive_word=w["word"], split=split)
                harmful = make_item(prompt=prompt_h, response=refusal, label="harmful",
                                    template_id=f"{c.category}/{r.id}", meta={"goal": w["harm"]}, **common)
                benign = make_item(prompt=prompt_b, response=render(s.response or "", w), label="benign",
                                   template_id=f"{c.category}/{s.id}", **common)
                pairs.append((harmful, benign))
    return pairs


def _limit(pairs: list[tuple[dict, dict]], n: int, rng: random.Random) -> list[tuple[dict, dict]]:
    if n >= len(pairs):
        return pairs
    by_split = {sp: [i for i, p in enumerate(pairs) if p[0]["split"] == sp] for sp in ("train", "test")}
    k_test = round(n * len(by_split["test"]) / len(pairs))
    if by_split["test"] and n >= 2 and k_test == 0:
        k_test = 1
    k_test = min(k_test, len(by_split["test"]))
    k_train = min(n - k_test, len(by_split["train"]))
    keep = set(rng.sample(by_split["train"], k_train)) | set(rng.sample(by_split["test"], k_test))
    return [p for i, p in enumerate(pairs) if i in keep]


def build_harmor(categories: list[str] | None = None, per_category: int | None = None, seed: int = 0,
                 test_fraction: float = DEFAULT_TEST_FRACTION,
                 templates: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Render HarmOR items: harmful/benign pairs per category, deduplicated, split by template.

    `per_category` caps the number of *pairs* per category (2 items each), sampled with the seed
    while keeping the train/test proportion. Same arguments and templates -> identical output.
    """
    check_params(per_category, test_fraction)
    cats = load_all(templates)
    chosen = select_categories(cats, categories)
    items: list[dict[str, Any]] = []
    seen: set[str] = set()
    for name in chosen:
        pairs = []
        for h, b in _category_pairs(cats[name], int(seed), float(test_fraction)):
            if h["prompt"] in seen or b["prompt"] in seen:
                continue  # deduplicate: a prompt appears once in a build
            seen.update((h["prompt"], b["prompt"]))
            pairs.append((h, b))
        if per_category is not None:
            pairs = _limit(pairs, per_category, random.Random(f"harmor-limit:{seed}:{name}"))
        for h, b in pairs:
            items.extend((h, b))
    return items


def harmor_source(categories: list[str] | None, per_category: int | None, seed: int, test_fraction: float,
                  templates: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """What a HarmOR dataset was built from (stored in Dataset.source)."""
    cats = load_all(templates)
    return {
        "builder": "harmor",
        "categories": select_categories(cats, categories),
        "per_category": per_category,
        "seed": int(seed),
        "test_fraction": float(test_fraction),
        "templates_hash": templates_hash(cats),
    }


def category_summary(templates: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Per category: words, risky/safe templates, refusals, contrast types and pairs in a full build."""
    cats = load_all(templates)
    out = []
    for name, c in sorted(cats.items()):
        types: dict[str, int] = {}
        for t in c.safe:
            if t.contrast_type == "{benign_type}":
                for w in c.words:
                    types[w["benign_type"]] = types.get(w["benign_type"], 0) + 1
            else:
                types[t.contrast_type or ""] = types.get(t.contrast_type or "", 0) + len(c.words)
        out.append({
            "category": name, "description": c.description, "words": len(c.words), "risky_templates": len(c.risky),
            "safe_templates": len(c.safe), "refusals": len(c.refusals),
            "pairs": len(c.words) * min(len(c.risky), len(c.safe)), "contrast_types": dict(sorted(types.items())),
        })
    return out


def ensure_harmor(store, seed: int = 0) -> str:
    """The default HarmOR dataset (name "harmor", all categories, default split), stored if missing."""
    from spt.data.items import store_items

    items = build_harmor(seed=seed)
    source = harmor_source(None, None, seed, DEFAULT_TEST_FRACTION)
    return store_items(store, DEFAULT_NAME, "harmor", items, source)
