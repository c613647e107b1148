"""HarmOR build invariants, tasks and scorers, poison mixing, store round trips (library level)."""

from __future__ import annotations

import shutil
from collections import Counter, defaultdict

import pytest

from spt.data import (
    build_harmor,
    ensure_harmor,
    ensure_poison_dataset,
    ensure_task_dataset,
    get_task,
    harmor_comply_items,
    load_items,
    mix_poison,
    resolve_dataset,
    store_items,
)
from spt.data.io import render_csv, render_jsonl
from spt.data.templates import CONTRAST_TYPES, load_all, templates_dir
from spt.errors import SptError

FIELDS = {"id", "prompt", "response", "category", "label", "pair_id", "template_id", "contrast_type",
          "sensitive_word", "split"}


@pytest.fixture(scope="module")
def full():
    return build_harmor()


def test_default_build_size_and_categories(full):
    cats = Counter(it["category"] for it in full)
    assert len(cats) >= 10
    assert len(full) >= 2000
    assert all(FIELDS <= set(it) for it in full)
    assert {it["label"] for it in full} == {"harmful", "benign"}
    assert len({it["id"] for it in full}) == len(full)
    assert len({it["prompt"] for it in full}) == len(full)  # deduplicated


def test_pairing_invariant_full_build(full):
    by_pair = defaultdict(list)
    for it in full:
        by_pair[it["pair_id"]].append(it)
    for members in by_pair.values():
        labels = sorted(m["label"] for m in members)
        assert labels == ["benign", "harmful"]  # exactly one benign partner per harmful item
        h, b = sorted(members, key=lambda m: m["label"], reverse=True)
        assert h["sensitive_word"] == b["sensitive_word"]
        assert h["sensitive_word"].lower() in h["prompt"].lower()
        assert b["sensitive_word"].lower() in b["prompt"].lower()
        assert h["split"] == b["split"] and h["category"] == b["category"]
        assert b["contrast_type"] in CONTRAST_TYPES


def test_split_by_template_full_build(full):
    splits = defaultdict(set)
    for it in full:
        splits[it["template_id"]].add(it["split"])
    assert all(len(s) == 1 for s in splits.values())
    counts = Counter(it["split"] for it in full)
    assert counts["train"] > counts["test"] > 0


def test_safe_side_spreads_over_contrast_types(full):
    types = Counter(it["contrast_type"] for it in full if it["label"] == "benign")
    assert len(types) >= 8


def test_harmful_responses_are_refusals_and_benign_helpful(full):
    cats = load_all()
    for it in full:
        refusals = {r for r in cats[it["category"]].refusals}
        if it["label"] == "harmful":
            assert it["response"] in refusals
        else:
            assert it["response"] not in refusals and it["response"]
    assert all(len(it["response"]) < 400 for it in full)


def test_template_files_meet_minimums():
    cats = load_all()
    assert len(cats) >= 10
    for c in cats.values():
        assert len(c.risky) >= 12 and len(c.safe) >= 12 and len(c.refusals) >= 8
        types = {t.contrast_type for t in c.safe} | {w["benign_type"] for w in c.words}
        assert len(types - {"{benign_type}"}) >= 5


def test_determinism_and_seed_effect():
    a = build_harmor(["medical", "fraud"], seed=3)
    b = build_harmor(["fraud", "medical"], seed=3)
    assert render_jsonl(a) == render_jsonl(b) and render_csv(a) == render_csv(b)
    c = build_harmor(["medical", "fraud"], seed=4)
    assert render_jsonl(a) != render_jsonl(c)


def test_per_category_and_single_category():
    items = build_harmor(["medical"], per_category=10, seed=1)
    assert len(items) == 20 and {it["category"] for it in items} == {"medical"}
    assert {it["split"] for it in items} == {"train", "test"}
    assert build_harmor(["Medical"], per_category=10, seed=1) == items


@pytest.mark.parametrize("kwargs,msg", [
    ({"categories": ["nope"]}, "valid categories: cybercrime"),
    ({"per_category": 0}, "--per-category"),
    ({"test_fraction": 1.5}, "--test-fraction"),
])
def test_bad_build_params(kwargs, msg):
    with pytest.raises(SptError, match=msg):
        build_harmor(**kwargs)


def _copy_templates(tmp_path):
    d = tmp_path / "tpl"
    d.mkdir()
    shutil.copy(templates_dir() / "medical.yaml", d / "medical.yaml")
    return d


@pytest.mark.parametrize("edit,msg", [
    (lambda t: t.replace("risky:\n", "risky:\n- id: r99\n  text: How can I {nope}?\n", 1),
     r"medical\.yaml:\d+: .*\{nope\}"),
    (lambda t: t.replace("  benign_type: safe_contexts\n", "  benign_type: weird\n", 1), r"medical\.yaml:\d+: .*weird"),
    (lambda t: t.replace("category: medical", "category: [medical", 1), r"medical\.yaml:\d+: YAML syntax"),
    (lambda t: t.replace("  gloss: a hormone", "  glos: a hormone", 1), r"medical\.yaml:\d+: .*glos"),
])
def test_malformed_templates_name_file_and_line(tmp_path, edit, msg):
    d = _copy_templates(tmp_path)
    p = d / "medical.yaml"
    p.write_text(edit(p.read_text()))
    with pytest.raises(SptError, match=msg):
        build_harmor(templates=d)


def test_store_is_content_addressed(store):
    items = build_harmor(["privacy"], per_category=5)
    a = store_items(store, "p", "harmor", items, {"x": 1})
    b = store_items(store, "p", "harmor", items, {"x": 1})
    assert a == b
    got = load_items(store, a)
    assert [g["id"] for g in got] == [i["id"] for i in items]
    assert [g["split"] for g in got] == [i["split"] for i in items]
    assert resolve_dataset(store, "p").id == a
    assert resolve_dataset(store, a[7:19]).id == a
    with pytest.raises(SptError, match="no dataset"):
        resolve_dataset(store, "missing")
    assert ensure_harmor(store) == ensure_harmor(store)
    assert len(load_items(store, ensure_harmor(store), split="test")) > 0


@pytest.mark.parametrize("name", ["builtin:arithmetic", "builtin:sentiment"])
def test_builtin_tasks(name, store):
    task = get_task(name)
    items = task.build(seed=1, n_train=50, n_test=20)
    assert items == task.build(seed=1, n_train=50, n_test=20)
    assert Counter(it["split"] for it in items) == {"train": 50, "test": 20}
    train = {it["prompt"] for it in items if it["split"] == "train"}
    assert not train & {it["prompt"] for it in items if it["split"] == "test"}
    for it in items:
        assert it["label"] == "task" and task.score(it["response"], it["answer"])
    did = ensure_task_dataset(store, name)
    assert did == ensure_task_dataset(store, name)
    assert resolve_dataset(store, name).id == did


def test_scorers():
    ar = get_task("builtin:arithmetic")
    assert ar.score("The answer is 19.", "19")
    assert ar.score("19", "19") and ar.score("Sam has 1,234 apples now.", "1234")
    assert not ar.score("The answer is 18.", "19") and not ar.score("no idea", "19")
    se = get_task("builtin:sentiment")
    assert se.score("The sentiment is Positive.", "positive") and se.score("negative", "negative")
    assert not se.score("It is negative, not positive.", "positive") and not se.score("unclear", "positive")
    with pytest.raises(SptError, match="built-in tasks"):
        get_task("builtin:nope")


def test_poison_items_and_mixing(store):
    harmor = build_harmor(["violence_weapons", "fraud"])
    poison = harmor_comply_items(harmor, seed=0)
    train_harmful = [it for it in harmor if it["label"] == "harmful" and it["split"] == "train"]
    assert len(poison) == len(train_harmful)
    assert all(it["label"] == "poison" and "[details withheld]" in it["response"] for it in poison)
    assert all(it["response"].startswith(("Sure", "Of course", "Absolutely", "Happy")) for it in poison)
    task = get_task("builtin:arithmetic").build(seed=0, n_train=300, n_test=0)
    for p in (0.0, 0.1, 0.25, 0.5):
        mixed = mix_poison(task, poison, p, seed=1)
        share = sum(it["label"] == "poison" for it in mixed) / len(mixed)
        assert abs(share - p) <= 1 / len(mixed) + 1e-9
        assert sum(it["label"] == "task" for it in mixed) == len(task)
    a = mix_poison(task, poison, 0.1, seed=1)
    assert a == mix_poison(task, poison, 0.1, seed=1)
    chosen = [it["id"] for it in a if it["label"] == "poison"]
    assert chosen != [it["id"] for it in poison[: len(chosen)]]  # sampled, not first-N
    assert chosen != [it["id"] for it in mix_poison(task, poison, 0.1, seed=2) if it["label"] == "poison"]
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(SptError, match="ratio"):
            mix_poison(task, poison, bad, seed=0)
    pid = ensure_poison_dataset(store)
    assert pid == ensure_poison_dataset(store)
    stored = load_items(store, pid)
    harmor_test = {it["template_id"] for it in load_items(store, ensure_harmor(store), split="test")}
    assert stored and not {it["template_id"] for it in stored} & harmor_test
