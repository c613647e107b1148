"""HarmOR's leakage check beyond exact strings: word forms, hyphen parts and synonyms across pools.

A held-out word is not held out if a training prompt holds it as "hacking", inside "neo-nazi", or as
its synonym "firearm"; and synonyms that are themselves sensitive words ("pot" and "weed") must be
in one pool. These tests check the rules on the shipped templates and that the build refuses a hit.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from harmor_fixture import write_templates

from spt.data.harmor import build_harmor, pool_assignment
from spt.data.leakage import check_leakage, forms, leakage_report, template_word_leaks, tokens
from spt.data.templates import load_all
from spt.errors import SptError


@pytest.fixture(scope="module")
def templates():
    return load_all()


@pytest.fixture(scope="module")
def full():
    return build_harmor()


@pytest.mark.parametrize("word,expected", [
    ("hack", {"hacks", "hacked", "hacking", "hacker", "hackers"}),
    ("stab", {"stabbing", "stabbed", "stabs"}),
    ("bully", {"bullies", "bullied", "bullying"}),
    ("forge", {"forged", "forging", "forger", "forges"}),
    ("die", {"dying", "died", "dies"}),
    ("neo-nazi", {"neo-nazis"}),
])
def test_forms_include_the_real_inflections(word, expected):
    assert expected <= forms(word)


def test_tokens_split_hyphenated_words_and_drop_possessives():
    assert {"neo-nazi", "neo", "nazi", "hacker"} <= tokens("A neo-nazi hacker's forum")
    assert "pot" not in tokens("repot the plant") and "pot" in tokens("a pot-bellied pig")


def test_shipped_templates_have_no_word_that_could_leak(templates):
    """Seed-independent: no request holds another group's word in any form, and no wrapper holds any word."""
    hits = template_word_leaks(templates)
    assert hits == [], hits[:5]


def test_synonym_groups_share_a_pool(templates):
    for seed in range(4):
        plan = pool_assignment(templates, seed, {"train": 0.5, "poison": 0.15, "dev": 0.1, "test": 0.25})
        for g in templates.synonyms:
            pools = {p for p, ws in plan["words"][g.category].items() for w in g.words if w in ws}
            assert len(pools) == 1, (seed, g.words, pools)
    groups = {g.words for g in templates.synonyms}
    assert ("weed", "pot", "grass") in groups and any({"gun", "pistol", "rifle"} <= set(w) for w in groups)


def test_default_build_is_clean_for_several_seeds(templates, full):
    assert leakage_report(full, templates)["word_in_prompts"] == 0
    for seed in (1, 7):
        report = leakage_report(build_harmor(seed=seed), templates)
        assert report["clean"], report["examples"]


def _pool_of(full, word: str) -> str:
    return next(it["split"] for it in full if it["sensitive_word"] == word)


def _inject(full, pool_not: str, text: str) -> list[dict]:
    items = [dict(it) for it in full]
    i = next(k for k, it in enumerate(items) if it["split"] != pool_not and it["label"] == "harmful")
    items[i]["prompt"] = items[i]["prompt"] + " " + text
    return items


@pytest.mark.parametrize("word,guise", [("hack", "hacking"), ("nazi", "neo-nazis"), ("gun", "firearm"),
                                        ("suicide", "suicidal")])
def test_a_form_or_synonym_in_another_pool_fails_the_build(templates, full, word, guise):
    pool = _pool_of(full, word)
    items = _inject(full, pool, f"(something about {guise})")
    report = leakage_report(items, templates)
    assert report["word_in_prompts"] == 1 and not report["clean"]
    assert any("in a " in e and guise.split("-")[-1] in e for e in report["examples"]), report["examples"]
    with pytest.raises(SptError, match="form or synonym"):
        check_leakage(report)
    # the same text inside the word's own pool is no leak
    same = [dict(it) for it in full]
    j = next(k for k, it in enumerate(same) if it["split"] == pool and it["label"] == "harmful")
    same[j]["prompt"] += f" ({guise})"
    assert leakage_report(same, templates)["word_in_prompts"] == 0


def test_template_check_finds_a_planted_form(tmp_path):
    d = write_templates(tmp_path)
    t = load_all(d)
    a, b = t.categories["alpha"].words[0].word, t.categories["alpha"].words[1].word
    p = d / "alpha.yaml"
    text = p.read_text()
    first = f"  - harm: misuse {b} against my rival"
    assert first in text
    p.write_text(text.replace(first, first + f" and {a}s", 1))
    hits = template_word_leaks(load_all(d))
    assert [(h["word"], h["term"]) for h in hits] == [(a, a + "s")]


def _write(d: Path, name: str, doc: dict) -> None:
    (d / name).write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.mark.parametrize("groups,msg", [
    ({"nope": [["x", "y"]]}, "unknown category 'nope'"),
    ({"alpha": [["zzz", "yyy"]]}, "needs a sensitive word"),
    ({"alpha": [["Bad Term", "x"]]}, "one lowercase word"),
    ({"alpha": [["@A0", "@A1"], ["@A1", "@A2"]]}, "two synonym groups"),
    ({"alpha": [["@A0", "@B0"]]}, "stays inside one category"),
])
def test_bad_synonym_files_are_rejected(tmp_path, groups, msg):
    d = write_templates(tmp_path)
    t = load_all(d)
    names = {f"@A{i}": w.word for i, w in enumerate(t.categories["alpha"].words)}
    names |= {f"@B{i}": w.word for i, w in enumerate(t.categories["beta"].words)}
    groups = {c: [[names.get(x, x) for x in g] for g in gs] for c, gs in groups.items()}
    _write(d, "_synonyms.yaml", {"version": 2, "groups": groups})
    with pytest.raises(SptError, match=msg):
        load_all(d)


def test_a_synonym_file_changes_the_templates_hash_and_groups_pools(tmp_path):
    from spt.data.templates import templates_hash

    d = write_templates(tmp_path)
    before = templates_hash(load_all(d))
    words = [w.word for w in load_all(d).categories["alpha"].words[:3]]
    _write(d, "_synonyms.yaml", {"version": 2, "groups": {"alpha": [words]}})
    t = load_all(d)
    assert templates_hash(t) != before
    items = build_harmor(templates=d)
    assert len({it["split"] for it in items if it["sensitive_word"] in words}) == 1
    assert leakage_report(items, t)["clean"]


@pytest.mark.parametrize("by_category,msg", [
    ({"beta": ["I can't help with that one, friend."]}, "at least 8"),
    ({"gamma": [f"Refusal number {i} of gamma." for i in range(8)]}, "no gamma.yaml here"),
])
def test_bad_category_refusals_are_rejected(tmp_path, by_category, msg):
    d = write_templates(tmp_path)
    doc = yaml.safe_load((d / "_refusals.yaml").read_text())
    doc["by_category"] = by_category
    _write(d, "_refusals.yaml", doc)
    with pytest.raises(SptError, match=msg):
        load_all(d)


def test_category_refusals_are_used_for_their_category_only(tmp_path):
    d = write_templates(tmp_path)
    doc = yaml.safe_load((d / "_refusals.yaml").read_text())
    own = [f"I won't help with this, and here is a number to call, line {i}." for i in range(8)]
    doc["by_category"] = {"beta": own}
    _write(d, "_refusals.yaml", doc)
    items = build_harmor(templates=d)
    harmful = [it for it in items if it["label"] == "harmful"]
    assert {it["response"] for it in harmful if it["category"] == "beta"} <= set(own)
    assert not {it["response"] for it in harmful if it["category"] == "alpha"} & set(own)
