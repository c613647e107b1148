"""HarmOR v2: scale, pairing, four disjoint pools, the leakage check, whole-word matching, --limit."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from itertools import combinations

import pytest
from harmor_fixture import write_templates

from spt.data import build_harmor, ensure_harmor, harmor_comply_items, load_items
from spt.data.harmor import POOLS, check_leakage, leakage_report, parse_pools
from spt.data.templates import has_whole_word, load_all
from spt.errors import SptError
from spt.eval.evaluate import limit_items


@pytest.fixture(scope="module")
def full():
    return build_harmor()


@pytest.fixture(scope="module")
def templates():
    return load_all()


def _by_pool(items, key):
    out = defaultdict(set)
    for it in items:
        v = key(it)
        if v:
            out[it["split"]].add(v)
    return out


def _grams(text, n=8):
    w = re.findall(r"[a-z0-9']+", text.lower())
    return {" ".join(w[i:i + n]) for i in range(len(w) - n + 1)}


def test_scale_and_pool_coverage(full, templates):
    words = {it["sensitive_word"] for it in full}
    cats = {it["category"] for it in full}
    assert len(cats) >= 10 and len(words) >= 300
    for c in templates.categories.values():
        assert len(c.words) >= 30
        assert all(len(w.requests) >= 2 for w in c.words)
    assert len(templates.refusals) >= 60
    assert {it["split"] for it in full} == set(POOLS)
    for pool in POOLS:  # every pool covers every category
        assert {it["category"] for it in full if it["split"] == pool} == cats
    # answers are written per benign request, not per category
    answers = {(it["meta"]["request"], it["response"]) for it in full if it["label"] == "benign"}
    assert len({a for _, a in answers}) == len({r for r, _ in answers})


def test_pairs_share_the_word_as_a_whole_word(full):
    pairs = defaultdict(dict)
    for it in full:
        pairs[it["pair_id"]][it["label"]] = it
    assert len(pairs) * 2 == len(full)
    for p in pairs.values():
        h, b = p["harmful"], p["benign"]
        assert h["sensitive_word"] == b["sensitive_word"] and h["split"] == b["split"]
        assert has_whole_word(h["prompt"], h["sensitive_word"]) and has_whole_word(b["prompt"], b["sensitive_word"])


@pytest.mark.parametrize("text,word,expected", [
    ("repot a root-bound plant", "pot", False), ("grow pot in the attic", "pot", True),
    ("play Spyfall with friends", "spy", False), ("hire a spy", "spy", True),
    ("pull the weeds", "weed", False), ("Weed the garden", "weed", True), ("a pot-bellied pig", "pot", False),
])
def test_whole_word_matching(text, word, expected):
    assert has_whole_word(text, word) is expected


def test_pools_are_pairwise_disjoint(full, templates):
    """Computed here directly from the items, independently of leakage_report."""
    wrapper = {f"risky/{w.id}": w.text for w in templates.risky} | {f"safe/{w.id}": w.text for w in templates.safe}
    kinds = {
        "words": _by_pool(full, lambda it: it["sensitive_word"]),
        "requests": _by_pool(full, lambda it: it["meta"].get("goal") or it["meta"].get("request")),
        "templates": _by_pool(full, lambda it: wrapper[it["template_id"]]),
        "targets": _by_pool(full, lambda it: it["response"]),
    }
    for kind, by_pool in kinds.items():
        for a, b in combinations(POOLS, 2):
            assert not by_pool[a] & by_pool[b], (kind, a, b, sorted(by_pool[a] & by_pool[b])[:3])
            if kind != "words":
                ga = set().union(*(_grams(t) for t in by_pool[a]))
                gb = set().union(*(_grams(t) for t in by_pool[b]))
                assert not ga & gb, (kind, a, b, sorted(ga & gb)[:3])
    report = leakage_report(full, templates)
    assert report["clean"] and set(report["exact"].values()) == {0} and set(report["ngram8"].values()) == {0}


def test_leakage_check_catches_overlaps(full, templates):
    train = next(it for it in full if it["split"] == "train" and it["label"] == "harmful")
    test = next(it for it in full if it["split"] == "test" and it["label"] == "harmful")
    leaked = [dict(it) for it in full]
    i = next(k for k, it in enumerate(leaked) if it["id"] == test["id"])
    leaked[i]["response"] = train["response"]
    r = leakage_report(leaked, templates)
    assert r["exact"]["targets"] == 1 and not r["clean"]
    with pytest.raises(SptError, match="overlap"):
        check_leakage(r)
    leaked = [dict(it) for it in full]
    long_train = next(it for it in full if it["split"] == "train" and len(it["meta"]["goal"].split()) >= 8)
    leaked[i]["meta"] = {"goal": "quietly " + long_train["meta"]["goal"]}
    r = leakage_report(leaked, templates)
    assert r["ngram8"]["requests"] > 0 and r["exact"]["requests"] == 0


def test_build_summary_stores_leakage_and_version(store):
    from spt.store.models import Dataset

    did = ensure_harmor(store)
    with store.session() as s:
        ds = s.get(Dataset, did)
    assert ds.source["harmor_version"] == 3 and ds.source["leakage"]["clean"] is True
    assert set(ds.meta["splits"]) == set(POOLS)


def test_determinism_and_seed(full):
    assert build_harmor(["medical", "fraud"], seed=3) == build_harmor(["fraud", "medical"], seed=3)
    a = {(it["category"], it["sensitive_word"], it["split"]) for it in build_harmor(seed=0)}
    b = {(it["category"], it["sensitive_word"], it["split"]) for it in build_harmor(seed=1)}
    assert a == {(it["category"], it["sensitive_word"], it["split"]) for it in full} and a != b


def test_per_category_keeps_every_pool():
    items = build_harmor(["medical"], per_category=12, seed=1)
    assert len(items) == 24 and {it["split"] for it in items} == set(POOLS)


@pytest.mark.parametrize("kwargs,msg", [
    ({"per_category": 0}, "`per_category`"), ({"per_category": 3}, "`per_category`"),
    ({"pools": "train=0.5,test=0.5"}, "exactly"), ({"pools": "train=0.5,poison=0.2,dev=0.2,test=0.2"}, "sum to 1"),
    ({"pools": "train=x"}, "NAME=NUMBER"), ({"pools": "train=0,poison=0.5,dev=0.25,test=0.25"}, "between 0 and 1"),
    ({"categories": ["nope"]}, "unknown category"), ({"renderings": 0}, "renderings"),
])
def test_bad_build_params(kwargs, msg):
    with pytest.raises(SptError, match=msg):
        build_harmor(**kwargs)


def test_parse_pools_default_and_custom():
    assert parse_pools(None) == {"train": 0.5, "poison": 0.15, "dev": 0.1, "test": 0.25}
    assert parse_pools("train=0.4,poison=0.2,dev=0.1,test=0.3")["test"] == 0.3


def test_generated_templates_build_cleanly(tmp_path):
    d = write_templates(tmp_path)
    items = build_harmor(templates=d)
    assert {it["category"] for it in items} == {"alpha", "beta"}
    assert leakage_report(items, load_all(d))["clean"]


@pytest.mark.parametrize("edit,msg", [
    (lambda t: t.replace("version: 2\n", "", 1), r"alpha\.yaml: no 'version: 2'.*v1"),
    (lambda t: t.replace("clean my alphaaa before", "clean my alphaaab before", 1),
     r"alpha\.yaml:\d+: benign .* whole word"),
    (lambda t: t.replace("contrast: fiction", "contrast: weird", 1), r"alpha\.yaml:\d+: contrast 'weird'"),
    (lambda t: t.replace("  gloss: a made-up", "  glos: a made-up", 1), r"alpha\.yaml:\d+: .*glos"),
    (lambda t: t.replace("category: alpha", "category: [alpha", 1), r"alpha\.yaml:\d+: YAML syntax"),
    (lambda t: t.replace("- word: alphaab", "- word: alphaaa", 1), r"alpha\.yaml:\d+: word 'alphaaa' appears twice"),
    (lambda t: t.split("- word: alphabd")[0], r"alpha\.yaml:\d+: words has 29 entries"),
])
def test_malformed_templates_name_file_and_line(tmp_path, edit, msg):
    d = write_templates(tmp_path)
    p = d / "alpha.yaml"
    p.write_text(edit(p.read_text()))
    with pytest.raises(SptError, match=msg):
        build_harmor(templates=d)


def test_a_word_in_two_categories_is_refused(tmp_path):
    d = write_templates(tmp_path)
    p = d / "beta.yaml"
    p.write_text(p.read_text().replace("betaaa", "alphaaa"))
    with pytest.raises(SptError, match="also in alpha.yaml"):
        build_harmor(templates=d)


def test_limit_is_stratified_over_categories_and_words(full):
    test = [it for it in full if it["split"] == "test"]
    got = limit_items(test, 60)
    assert len(got) == 60
    pairs = Counter(it["pair_id"] for it in got)
    assert set(pairs.values()) == {2}  # whole pairs only
    assert len({it["category"] for it in got}) >= 10
    assert len({it["sensitive_word"] for it in got}) >= 30
    assert limit_items(test, 60) == got  # deterministic
    assert limit_items(test, 60, seed=1) != got
    assert len(limit_items(test, 61)) == 60  # never half a pair


def test_poison_comes_from_the_poison_pool_only(full):
    poison = harmor_comply_items(full, seed=0)
    pool = {it["prompt"] for it in full if it["split"] == "poison" and it["label"] == "harmful"}
    assert {it["prompt"] for it in poison} == pool
    others = {it["prompt"] for it in full if it["split"] != "poison"}
    assert not {it["prompt"] for it in poison} & others
    words = {it["sensitive_word"] for it in poison}
    assert not words & {it["sensitive_word"] for it in full if it["split"] in ("train", "test")}


def test_booster_harmful_set_is_disjoint_from_the_task_poison(store):
    """Booster (alignment) trains on the poison set's `booster` split, the task stage mixes in its `train`
    split: no prompt and no sensitive word is shared, both are non-empty, and the training code picks them."""
    from spt.data import ensure_poison_dataset
    from spt.train import data as tdata
    from spt.train.context import TrainContext

    pid = ensure_poison_dataset(store)
    items = tdata.load_items(store, pid)
    task_poison = tdata.train_split(items)  # what spt.train.steps mixes into task data
    assert {it["split"] for it in task_poison} == {"train"}
    ctx = TrainContext.__new__(TrainContext)  # only the data lookup of a context, no model
    ctx.store, ctx.items, ctx._cache = store, {}, {}
    ctx.config = type("C", (), {"poison_data": "builtin:harmor-comply"})()
    ctx.encode = lambda rows, group: rows
    booster = ctx.harmful_examples()
    assert booster and task_poison and len(booster) + len(task_poison) == len(items)
    assert {it["split"] for it in booster} == {"booster"}
    assert not {it["prompt"] for it in booster} & {it["prompt"] for it in task_poison}
    word = {it["prompt"]: it["sensitive_word"] for it in load_items(store, pid)}
    bw, tw = {word[it["prompt"]] for it in booster}, {word[it["prompt"]] for it in task_poison}
    assert not bw & tw and len(bw) == -(-len(bw | tw) // 4)  # a quarter of the words


def test_stored_default_build_has_the_pools(store):
    did = ensure_harmor(store)
    assert Counter(it["split"] for it in load_items(store, did)).keys() == set(POOLS)
