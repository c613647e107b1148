"""Does anything of a HarmOR pool reach another pool? The checks a build must pass before it is stored.

A held-out pool measures generalisation only if nothing of it was trained on. Exact strings and shared
8-word sequences of words, requests, wrappers and targets are one kind of overlap; the other is a
sensitive word reaching another pool's prompts in another guise: an inflection ("hacking" for
`hack`), a hyphen part ("neo-nazi" holds `nazi`), or a synonym listed in `_synonyms.yaml` ("firearm"
for `gun`). Synonym groups are assigned to one pool together, so the terms of a word are its own
forms, every form of the other words of its group, and the group's extra terms.

`template_word_leaks` finds the texts that could leak under *some* seed (a word's term inside another
word's request or inside any wrapper); the shipped templates have none (a test). `leakage_report`
checks one rendered build, and `spt build-data` refuses to store a build with a hit.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from spt.data.templates import HarmorTemplates
from spt.errors import SptError

NGRAM = 8
_TOKEN = re.compile(r"[a-z]+(?:-[a-z]+)*")
_DOUBLE = re.compile(r"[^aeiou][aeiou][bdgklmnprtz]$")


def forms(word: str) -> set[str]:
    """A word and its regular inflections and agent noun (plural, -ed, -ing, -er), spelling rules included.

    Over-generation is harmless (a non-word never occurs in a prompt); what matters is that every real
    form of the word is in the set.
    """
    w = word.lower()
    if "-" in w:
        head, _, last = w.rpartition("-")
        return {w} | {f"{head}-{f}" for f in forms(last)}
    out = {w, w + "s", w + "es", w + "ed", w + "ing", w + "er", w + "ers"}
    if w.endswith("ie"):
        out |= {w[:-2] + "ying"}
    if w.endswith("e"):
        out |= {w + "d", w + "r", w + "rs", w[:-1] + "ing"}
    if w.endswith("y") and len(w) > 2 and w[-2] not in "aeiou":
        out |= {w[:-1] + "ies", w[:-1] + "ied", w[:-1] + "ier"}
    if _DOUBLE.search(w):
        d = w + w[-1]
        out |= {d + "ed", d + "ing", d + "er", d + "ers"}
    return out


def tokens(text: str) -> set[str]:
    """Lower-cased words of a text, hyphenated words also as their parts ("neo-nazi" -> neo, nazi)."""
    out: set[str] = set()
    for t in _TOKEN.findall(text.lower()):
        out.add(t)
        if "-" in t:
            out.update(t.split("-"))
    return out


def word_terms(t: HarmorTemplates) -> dict[str, set[str]]:
    """Per sensitive word: every form of it, of the other words of its synonym group and of the group's terms."""
    group_of = {w: g for g in t.synonyms for w in g.words}
    out: dict[str, set[str]] = {}
    for c in t.categories.values():
        for w in c.words:
            g = group_of.get(w.word)
            members = (set(g.words) | set(g.terms)) if g else {w.word}
            out[w.word] = set().union(*(forms(m) for m in members | {w.word}))
    return out


def _group_key(t: HarmorTemplates) -> dict[str, str]:
    key = {w.word: w.word for c in t.categories.values() for w in c.words}
    for g in t.synonyms:
        for w in g.words:
            key[w] = g.words[0]
    return key


def template_word_leaks(t: HarmorTemplates) -> list[dict[str, str]]:
    """Texts that carry a sensitive word's term while they may be rendered in another pool.

    A request of word B holding a term of word A leaks when A and B are not in one synonym group; a
    wrapper holding any term leaks (wrappers are assigned to pools on their own).
    """
    terms = word_terms(t)
    key = _group_key(t)
    by_term: dict[str, set[str]] = defaultdict(set)
    for word, ts in terms.items():
        for x in ts:
            by_term[x].add(word)
    hits: list[dict[str, str]] = []
    for c in sorted(t.categories.values(), key=lambda c: c.category):
        for w in c.words:
            for q in w.requests:
                for fieldname in ("harm", "benign"):
                    text = getattr(q, fieldname)
                    for tok in sorted(tokens(text)):
                        for other in sorted(by_term.get(tok, ())):
                            if key[other] != key[w.word]:
                                hits.append({"word": other, "term": tok, "in": f"{c.category}/{w.word}:{fieldname}",
                                             "text": text})
    for kind, wrappers in (("risky", t.risky), ("safe", t.safe)):
        for wr in wrappers:
            for tok in sorted(tokens(wr.text)):
                for other in sorted(by_term.get(tok, ())):
                    hits.append({"word": other, "term": tok, "in": f"wrapper {kind}/{wr.id}", "text": wr.text})
    return hits


def _ngrams(text: str, n: int = NGRAM) -> set[str]:
    words = re.findall(r"[a-z0-9']+", text.lower())
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def _word_hits(items: list[dict[str, Any]], terms: dict[str, set[str]] | None) -> tuple[int, list[str]]:
    """Prompts of one pool holding a term of a sensitive word of another pool."""
    pool_of: dict[str, str] = {}
    for it in items:
        if it.get("sensitive_word"):
            pool_of.setdefault(it["sensitive_word"].lower(), it.get("split") or "train")
    owner: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for word, pool in pool_of.items():
        for x in (terms or {}).get(word) or forms(word):
            owner[x].add((word, pool))
    n = 0
    examples: list[str] = []
    for it in items:
        pool = it.get("split") or "train"
        found = sorted({(word, x) for x in tokens(it.get("prompt") or "") for word, p in owner.get(x, ()) if p != pool})
        if found:
            n += 1
            if len(examples) < 3:
                examples.append(f"word {found[0][0]!r} ({pool_of[found[0][0]]}) as {found[0][1]!r} in a {pool} "
                                f"prompt: {it.get('prompt', '')[:80]!r}")
    return n, examples


def leakage_report(items: list[dict[str, Any]], templates: HarmorTemplates | None = None) -> dict[str, Any]:
    """Overlap between pools of sensitive words, requests, wrapper texts and targets, and words in prompts.

    `exact`: strings of each kind found in more than one pool; `ngram8`: 8-word sequences (lower-cased,
    punctuation dropped) found in more than one pool; `word_in_prompts`: prompts holding a form or
    synonym of another pool's sensitive word. A valid build has every count 0 (`clean`).
    Whole prompts are not n-gram checked: a wrapper of one pool followed by a request of another can
    share a common phrase ("tell me how to write a story about a ...") without sharing any request.
    """
    wrapper_text: dict[str, str] = {}
    if templates is not None:
        wrapper_text.update({f"risky/{w.id}": w.text for w in templates.risky})
        wrapper_text.update({f"safe/{w.id}": w.text for w in templates.safe})
    kinds: dict[str, dict[str, set[str]]] = {k: defaultdict(set) for k in
                                              ("words", "requests", "templates", "targets")}
    for it in items:
        pool = it.get("split") or "train"
        meta = it.get("meta") or {}
        if it.get("sensitive_word"):
            kinds["words"][pool].add(it["sensitive_word"].lower())
        for key in ("goal", "request"):
            if meta.get(key):
                kinds["requests"][pool].add(meta[key])
        if it.get("template_id"):
            kinds["templates"][pool].add(wrapper_text.get(it["template_id"], it["template_id"]))
        if it.get("response"):
            kinds["targets"][pool].add(it["response"])
    pools = sorted({p for k in kinds.values() for p in k})
    exact: dict[str, int] = {}
    ngram: dict[str, int] = {}
    examples: list[str] = []
    for kind, by_pool in kinds.items():
        seen: dict[str, str] = {}
        shared: set[str] = set()
        gram_seen: dict[str, str] = {}
        shared_grams: set[str] = set()
        for pool in pools:
            for text in by_pool.get(pool, ()):
                if seen.setdefault(text, pool) != pool:
                    shared.add(text)
                if kind == "words":
                    continue
                for g in _ngrams(text):
                    if gram_seen.setdefault(g, pool) != pool:
                        shared_grams.add(g)
        exact[kind] = len(shared)
        ngram[kind] = len(shared_grams)
        examples += [f"{kind}: {x!r}" for x in sorted(shared)[:3]] + [f"{kind} 8-gram: {g!r}"
                                                                    for g in sorted(shared_grams)[:3]]
    n_word, word_examples = _word_hits(items, word_terms(templates) if templates is not None else None)
    examples += word_examples
    return {"pools": pools, "exact": exact, "ngram8": ngram, "word_in_prompts": n_word,
            "clean": not any(exact.values()) and not any(ngram.values()) and not n_word,
            "examples": examples[:10]}


def check_leakage(report: dict[str, Any]) -> None:
    """Refuse a build whose pools overlap (a held-out pool that is not held out measures nothing)."""
    if not report["clean"]:
        raise SptError("HarmOR pools overlap (" + "; ".join(report["examples"][:3]) + "); fix the templates so "
                       "no word (or a form or synonym of it), request, wrapper or target is shared between pools")
