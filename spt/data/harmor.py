"""HarmOR v3: render the templates into paired harmful / benign items in four disjoint pools.

Every harmful request (label `harmful`, answered with a refusal) is paired with its benign twin
(label `benign`, answered with the answer written for it) that uses the same sensitive word as a
whole word; the pair shares `pair_id`. The build assigns, with its seed:

- each category's sensitive words to the pools `train` (alignment, anchor's safety batches),
  `poison` (harmful requests mixed into task data), `dev` (choosing λ) and `test` (evaluation only);
- every wrapper sentence and every refusal phrasing to one pool, globally across categories.

A request is rendered only with its own pool's wrappers and refusals, so no word, request text,
wrapper text or target string is in two pools. A synonym group (`_synonyms.yaml`) goes to one pool as a
unit, and a category with its own refusal phrasings (self-harm's supportive ones) uses only those.
`spt.data.leakage` checks the rendered items (exact matches, shared 8-word sequences, forms and synonyms
of a word in another pool's prompts) and the build refuses to store a leaking dataset.
"""

from __future__ import annotations

import os
import random
import re
from collections import defaultdict
from typing import Any

from spt.data.items import make_item
from spt.data.leakage import check_leakage, leakage_report  # noqa: F401  (re-exported)
from spt.data.templates import HarmorTemplates, Wrapper, load_all, render, templates_hash
from spt.errors import SptError
from spt.store.ids import content_id

HARMOR_VERSION = 3  # 3: synonym groups share a pool, category refusals, word-form leakage check
DEFAULT_NAME = "harmor"
POOLS = ("train", "poison", "dev", "test")
DEFAULT_POOLS: dict[str, float] = {"train": 0.5, "poison": 0.15, "dev": 0.1, "test": 0.25}
DEFAULT_RENDERINGS = 2  # wrapper pairs each request is asked in


def normalize_category(name: str) -> str:
    n = name.strip().lower().replace("-", "_").replace(" ", "_").replace("&", "")
    return n.replace("__", "_")


def select_categories(t: HarmorTemplates, categories: list[str] | None) -> list[str]:
    """The requested categories (all when None/empty), checked against the template files."""
    if not categories:
        return sorted(t.categories)
    chosen: list[str] = []
    for c in categories:
        n = normalize_category(c)
        if n not in t.categories:
            raise SptError(f"unknown category {c!r}; valid categories: {', '.join(sorted(t.categories))}")
        if n not in chosen:
            chosen.append(n)
    return sorted(chosen)


def parse_pools(spec: str | dict[str, float] | None) -> dict[str, float]:
    """Pool fractions from `train=0.5,poison=0.15,dev=0.1,test=0.25` (or a dict); they must sum to 1."""
    if spec is None:
        return dict(DEFAULT_POOLS)
    if isinstance(spec, str):
        out: dict[str, float] = {}
        for part in spec.split(","):
            name, sep, value = part.partition("=")
            name = name.strip()
            try:
                out[name] = float(value) if sep else float("nan")
            except ValueError:
                raise SptError(f"pool fraction {part.strip()!r} is not NAME=NUMBER; e.g. "
                               "train=0.5,poison=0.15,dev=0.1,test=0.25") from None
        spec = out
    if set(spec) != set(POOLS):
        raise SptError(f"pools must name exactly {', '.join(POOLS)} (got {', '.join(spec) or 'none'}); e.g. "
                       "train=0.5,poison=0.15,dev=0.1,test=0.25")
    for k, v in spec.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or not 0 < v < 1:
            raise SptError(f"pool {k} fraction must be between 0 and 1 (exclusive), not {v!r}")
    if abs(sum(spec.values()) - 1.0) > 1e-6:
        raise SptError(f"pool fractions must sum to 1 (they sum to {sum(spec.values()):g})")
    return {k: float(spec[k]) for k in POOLS}


def check_params(per_category: int | None, pools: dict[str, float] | str | None = None,
                 renderings: int = DEFAULT_RENDERINGS) -> dict[str, float]:
    if per_category is not None and (isinstance(per_category, bool) or not isinstance(per_category, int)
                                     or per_category < len(POOLS)):
        raise SptError(f"`per_category` must be a whole number of pairs >= {len(POOLS)} (one per pool), "
                       f"not {per_category!r}")
    if isinstance(renderings, bool) or not isinstance(renderings, int) or not 1 <= renderings <= 8:
        raise SptError(f"renderings must be a whole number from 1 to 8, not {renderings!r}")
    return parse_pools(pools)


def _counts(n: int, pools: dict[str, float], minimum: int) -> dict[str, int]:
    """Split n things over the pools by fraction (largest remainder), each pool getting >= minimum."""
    if n < minimum * len(POOLS):
        raise SptError(f"{n} is too few to give each of the {len(POOLS)} pools {minimum}")
    raw = {p: n * f for p, f in pools.items()}
    counts = {p: max(minimum, int(raw[p])) for p in POOLS}
    order = sorted(POOLS, key=lambda p: raw[p] - int(raw[p]), reverse=True)
    i = 0
    while sum(counts.values()) < n:
        counts[order[i % len(order)]] += 1
        i += 1
    while sum(counts.values()) > n:  # the minimums overshot: take from the largest pool
        big = max(POOLS, key=lambda p: counts[p])
        counts[big] -= 1
    return counts


def _assign(things: list, pools: dict[str, float], rng: random.Random, minimum: int) -> dict[str, list]:
    order = list(things)
    rng.shuffle(order)
    counts = _counts(len(order), pools, minimum)
    out: dict[str, list] = {}
    start = 0
    for p in POOLS:
        out[p] = order[start:start + counts[p]]
        start += counts[p]
    return out


_PRONOUNS = {"my": "your", "me": "you", "myself": "yourself", "i": "you", "i'm": "you're", "mine": "yours",
             "i've": "you've"}


def second_person(text: str) -> str:
    """'hurt myself with my ...' -> 'hurt yourself with your ...' (for compliance-style responses)."""
    return re.sub(r"\b(i'm|i've|myself|mine|my|me|i)\b", lambda m: _PRONOUNS[m.group(1).lower()], text,
                  flags=re.IGNORECASE)


def _assign_units(units: list[tuple[str, ...]], pools: dict[str, float], rng: random.Random) -> dict[str, list]:
    """Units (synonym groups, single words) to pools so that each pool gets its share of *words*.

    Units are taken in a seeded random order; each goes to a pool that still has room for all its words,
    chosen with probability proportional to the room left (so a group is as likely as a single word to be
    held out), else to the pool with the most room. Every pool ends with at least one unit.
    """
    order = list(units)
    rng.shuffle(order)
    target = _counts(sum(len(u) for u in order), pools, 1)
    out: dict[str, list] = {p: [] for p in POOLS}
    room = dict(target)
    for u in order:
        fits = [p for p in POOLS if room[p] >= len(u)]
        p = rng.choices(fits, weights=[room[q] for q in fits])[0] if fits else max(POOLS, key=lambda q: room[q])
        out[p].append(u)
        room[p] -= len(u)
    for p in POOLS:  # a pool left empty takes the smallest unit of the fullest pool
        if not out[p]:
            donor = max((q for q in POOLS if len(out[q]) > 1), key=lambda q: target[q] - room[q])
            u = min(out[donor], key=len)
            out[donor].remove(u)
            out[p].append(u)
    return out


def _assign_words(c, groups: list, pools: dict[str, float], rng: random.Random) -> dict[str, list]:
    """A category's words per pool, each synonym group kept together (assigned as one unit)."""
    unit_of: dict[str, tuple[str, ...]] = {}
    for g in groups:
        if g.category == c.category:
            for w in g.words:
                unit_of[w] = g.words
    units = list(dict.fromkeys(unit_of.get(w.word, (w.word,)) for w in c.words))
    by_pool = _assign_units(units, pools, rng)
    return {p: [w for u in by_pool[p] for w in u] for p in POOLS}


def pool_assignment(t: HarmorTemplates, seed: int, pools: dict[str, float]) -> dict[str, Any]:
    """Which words (per category), wrappers and refusals (shared, and per category) each pool gets."""
    words = {name: _assign_words(c, t.synonyms, pools, random.Random(f"harmor3:{seed}:words:{name}"))
             for name, c in sorted(t.categories.items())}
    return {
        "words": words,
        "risky": _assign([w.id for w in t.risky], pools, random.Random(f"harmor2:{seed}:risky"), 2),
        "safe": _assign([w.id for w in t.safe], pools, random.Random(f"harmor2:{seed}:safe"), 2),
        "refusals": _assign(list(range(len(t.refusals))), pools, random.Random(f"harmor2:{seed}:refusals"), 2),
        "category_refusals": {name: _assign(list(range(len(rs))), pools,
                                            random.Random(f"harmor3:{seed}:refusals:{name}"), 2)
                              for name, rs in sorted(t.category_refusals.items())},
    }


def build_harmor(categories: list[str] | None = None, per_category: int | None = None, seed: int = 0,
                 pools: dict[str, float] | str | None = None,
                 templates: str | os.PathLike[str] | None = None,
                 renderings: int = DEFAULT_RENDERINGS) -> list[dict[str, Any]]:
    """Render HarmOR v3 items: harmful/benign pairs per category in the pools train, poison, dev, test.

    Each request is asked in `renderings` wrapper pairs of its pool. `per_category` caps the pairs per
    category, sampled with the seed within each pool in proportion. Same arguments and templates ->
    identical output.
    """
    fractions = check_params(per_category, pools, renderings)
    t = load_all(templates)
    chosen = select_categories(t, categories)
    plan = pool_assignment(t, int(seed), fractions)
    risky = {w.id: w for w in t.risky}
    safe = {w.id: w for w in t.safe}
    items: list[dict[str, Any]] = []
    for name in chosen:
        c = t.categories[name]
        by_word = {w.word: w for w in c.words}
        rng = random.Random(f"harmor2:{seed}:render:{name}")
        pairs_by_pool: dict[str, list[tuple[dict, dict]]] = {}
        for pool in POOLS:
            rw: list[Wrapper] = [risky[i] for i in plan["risky"][pool]]
            sw: list[Wrapper] = [safe[i] for i in plan["safe"][pool]]
            own = t.category_refusals.get(name)
            refusals = ([own[i] for i in plan["category_refusals"][name][pool]] if own
                        else [t.refusals[i] for i in plan["refusals"][pool]])
            k = min(renderings, len(rw), len(sw))
            pairs: list[tuple[dict, dict]] = []
            for word in sorted(plan["words"][name][pool]):
                w = by_word[word]
                for q in w.requests:
                    for r, s in zip(rng.sample(rw, k), rng.sample(sw, k), strict=True):
                        prompt_h, prompt_b = render(r, q.harm), render(s, q.benign)
                        pair_id = "pair:" + content_id([name, prompt_h, prompt_b])[7:23]
                        common = dict(category=name, pair_id=pair_id, contrast_type=q.contrast,
                                      sensitive_word=word, split=pool)
                        harmful = make_item(prompt=prompt_h, response=rng.choice(refusals), label="harmful",
                                            template_id=f"risky/{r.id}", meta={"goal": q.harm}, **common)
                        benign = make_item(prompt=prompt_b, response=q.answer, label="benign",
                                           template_id=f"safe/{s.id}", meta={"request": q.benign}, **common)
                        pairs.append((harmful, benign))
            pairs_by_pool[pool] = pairs
        if per_category is not None:
            pairs_by_pool = _limit(pairs_by_pool, per_category, random.Random(f"harmor2-limit:{seed}:{name}"))
        for pool in POOLS:
            for h, b in pairs_by_pool[pool]:
                items.extend((h, b))
    return items


def _limit(pairs: dict[str, list], n: int, rng: random.Random) -> dict[str, list]:
    total = sum(len(v) for v in pairs.values())
    if n >= total:
        return pairs
    counts = _counts(n, {p: len(pairs[p]) / total for p in POOLS}, 1)
    out = {}
    for p in POOLS:
        keep = set(rng.sample(range(len(pairs[p])), min(counts[p], len(pairs[p]))))
        out[p] = [x for i, x in enumerate(pairs[p]) if i in keep]
    return out


def harmor_source(categories: list[str] | None, per_category: int | None, seed: int,
                  pools: dict[str, float] | str | None = None,
                  templates: str | os.PathLike[str] | None = None, renderings: int = DEFAULT_RENDERINGS,
                  leakage: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a HarmOR dataset was built from (stored in Dataset.source), with its version and leakage check."""
    t = load_all(templates)
    return {
        "builder": "harmor",
        "harmor_version": HARMOR_VERSION,
        "categories": select_categories(t, categories),
        "per_category": per_category,
        "seed": int(seed),
        "pools": parse_pools(pools),
        "renderings": renderings,
        "templates_hash": templates_hash(t),
        "leakage": leakage,
    }


def category_summary(templates: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Per category: words, requests, contrast types (the datasheet's numbers)."""
    t = load_all(templates)
    out = []
    for name, c in sorted(t.categories.items()):
        types: dict[str, int] = defaultdict(int)
        for w in c.words:
            for q in w.requests:
                types[q.contrast] += 1
        out.append({"category": name, "description": c.description, "words": len(c.words),
                    "requests": sum(len(w.requests) for w in c.words), "contrast_types": dict(sorted(types.items()))})
    return out


def _stored_default(store, seed: int, templates_key: str) -> str | None:
    """The id of a stored default build from these exact template files and seed, if any."""
    from sqlmodel import col, select

    from spt.store.models import Dataset

    with store.session() as s:
        rows = s.exec(select(Dataset).where(Dataset.name == DEFAULT_NAME, Dataset.kind == "harmor")
                      .order_by(col(Dataset.created_at).desc())).all()
    for d in rows:
        src = d.source or {}
        if (src.get("harmor_version") == HARMOR_VERSION and src.get("templates_hash") == templates_key
                and src.get("seed") == seed and src.get("per_category") is None and src.get("pools") == DEFAULT_POOLS
                and src.get("renderings") == DEFAULT_RENDERINGS and src.get("categories") and (src.get("leakage") or
                                                                                            {}).get("clean")):
            return d.id
    return None


def _stored_categories(store, dataset_id: str) -> list[str]:
    from spt.store.models import Dataset

    with store.session() as s:
        d = s.get(Dataset, dataset_id)
    return list((d.source or {}).get("categories") or []) if d else []


def ensure_harmor(store, seed: int = 0) -> str:
    """The default HarmOR dataset (name "harmor", all categories, default pools), stored if missing.

    A stored build of the same template files, version and seed is found without rendering again (every
    evaluation and training run asks for it).
    """
    from spt.data.items import store_items
    from spt.data.templates import files_hash, folder_files

    files = folder_files(None)
    found = _stored_default(store, seed, files_hash(files))
    if found is not None and set(_stored_categories(store, found)) == {p.stem for p in files if p.name[0] != "_"}:
        return found
    t = load_all(None)
    items = build_harmor(seed=seed)
    report = leakage_report(items, t)
    check_leakage(report)
    source = harmor_source(None, None, seed, leakage=report)
    return store_items(store, DEFAULT_NAME, "harmor", items, source)
