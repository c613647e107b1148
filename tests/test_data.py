"""Tasks and scorers, poison mixing, store round trips (library level); HarmOR itself: test_harmor.py."""

from __future__ import annotations

from collections import Counter

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
from spt.errors import SptError


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


def test_arithmetic_steps_shows_correct_work_and_keeps_three_disjoint_splits(store):
    """The demo's task: every target spells out a correct `a op b = c` before its answer; dev and test
    never share a prompt with train or each other; the test split does not move when n_train does."""
    import re

    task = get_task("builtin:arithmetic-steps")
    items = task.build(seed=0, n_train=120, n_test=40)
    assert Counter(it["split"] for it in items) == {"train": 120, "dev": 100, "test": 40}
    by = {sp: {it["prompt"] for it in items if it["split"] == sp} for sp in ("train", "dev", "test")}
    assert not (by["train"] & by["dev"] or by["train"] & by["test"] or by["dev"] & by["test"])
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "x": lambda a, b: a * b}
    for it in items:
        m = re.fullmatch(r"(\d+) ([+\-x]) (\d+) = (\d+)\. The answer is (\d+)\.", it["response"])
        assert m, it["response"]
        a, op, b, c, ans = m.groups()
        assert ops[op](int(a), int(b)) == int(c) == int(ans) == int(it["answer"])
        assert a in it["prompt"] and b in it["prompt"] and task.score(it["response"], it["answer"])
    assert not task.score("12 + 5 = 17. The answer is 18.", "17")
    again = task.build(seed=0, n_train=300, n_test=40)
    assert [it["prompt"] for it in again if it["split"] == "test"] == [it["prompt"] for it in items
                                                                       if it["split"] == "test"]
    assert task.splits == ("train", "dev", "test") and get_task("builtin:arithmetic").splits == ("train", "test")
    did = ensure_task_dataset(store, "builtin:arithmetic-steps")
    assert len(load_items(store, did, split="dev")) == 100


def test_scorers():
    ar = get_task("builtin:arithmetic")
    assert ar.score("The answer is 19.", "19")
    assert ar.score("19", "19") and ar.score("Sam has 1,234 apples now.", "1234")
    assert ar.score("12 + 5 = 17", "17") and not ar.score("12 + 5 = 17", "12")  # the final answer counts
    assert not ar.score("The answer is 18.", "19") and not ar.score("no idea", "19")
    se = get_task("builtin:sentiment")
    assert se.score("The sentiment is Positive.", "positive") and se.score("negative", "negative")
    assert not se.score("It is negative, not positive.", "positive") and not se.score("unclear", "positive")
    with pytest.raises(SptError, match="built-in tasks"):
        get_task("builtin:nope")


def test_poison_items_and_mixing(store):
    harmor = build_harmor(["violence_weapons", "fraud"])
    poison = harmor_comply_items(harmor, seed=0)
    pool_harmful = [it for it in harmor if it["label"] == "harmful" and it["split"] == "poison"]
    assert len(poison) == len(pool_harmful)
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
    harmor_test = {it["prompt"] for it in load_items(store, ensure_harmor(store), split="test")}
    harmor_train = {it["prompt"] for it in load_items(store, ensure_harmor(store), split="train")}
    assert stored and not {it["prompt"] for it in stored} & (harmor_test | harmor_train)
