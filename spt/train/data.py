"""Training data from the store: HarmOR (align data, safety batches, fixed alignment batch), task, poison.

A dataset argument is a stored dataset id or name; the built-in names (`harmor`, `builtin:<task>`,
`builtin:harmor-comply`) are built on demand through `spt.data` when they are not stored yet.
"""

from __future__ import annotations

import random
from typing import Any

from spt.errors import SptError


def _data_fn(name: str) -> Any | None:
    try:
        import spt.data as d
    except ImportError:  # pragma: no cover
        return None
    return getattr(d, name, None)


def _lookup(store: Any, key: str) -> Any | None:
    from sqlmodel import col, select

    from spt.store.models import Dataset

    with store.session() as s:
        d = s.get(Dataset, key)
        if d is None:
            d = s.exec(select(Dataset).where(Dataset.name == key)
                       .order_by(col(Dataset.created_at).desc(), col(Dataset.id))).first()
    return d


def resolve_safety(store: Any, name: str, seed: int = 0, *, build: bool = True) -> str:
    d = _lookup(store, name)
    if d is not None:
        return d.id
    if name in ("harmor", "builtin:harmor"):
        fn = _data_fn("ensure_harmor")
        if fn is not None and build:
            return fn(store, seed=seed)
    raise SptError(f"safety dataset {name!r} is not in the store; build HarmOR with `spt build-data` "
                   "or pass --safety-data with a stored dataset name or id")


def resolve_task(store: Any, name: str, seed: int = 0, *, build: bool = True) -> str:
    d = _lookup(store, name)
    if d is not None:
        return d.id
    if name.startswith("builtin:"):
        fn = _data_fn("ensure_task_dataset")
        if fn is not None and build:
            return fn(store, name, seed=seed)
    raise SptError(f"task dataset {name!r} is not in the store; use builtin:arithmetic, or import data with "
                   "`spt data import` and pass its name or id")


def resolve_poison(store: Any, name: str, seed: int = 0, *, build: bool = True) -> str:
    d = _lookup(store, name)
    if d is not None:
        return d.id
    if name.startswith("builtin:"):
        fn = _data_fn("ensure_poison_dataset")
        if fn is not None and build:
            return fn(store, name=name, seed=seed)
    raise SptError(f"poison dataset {name!r} is not in the store; use builtin:harmor-comply or a stored dataset")


def load_items(store: Any, dataset_id: str, split: str | None = None) -> list[dict[str, Any]]:
    """Items of a dataset in position order (id, prompt, response, label, pair_id, category, split)."""
    from sqlmodel import col, select

    from spt.store.models import DatasetItem, Item

    with store.session() as s:
        q = (select(Item, DatasetItem.split).join(DatasetItem, col(DatasetItem.item_id) == col(Item.id))
             .where(DatasetItem.dataset_id == dataset_id))
        if split is not None:
            q = q.where(DatasetItem.split == split)
        rows = s.exec(q.order_by(col(DatasetItem.position), col(Item.id))).all()
    return [{"id": it.id, "prompt": it.prompt, "response": it.response, "label": it.label,
             "pair_id": it.pair_id, "category": it.category, "split": sp, "answer": it.answer}
            for it, sp in rows]


def train_split(items: list[dict]) -> list[dict]:
    """The train split when the dataset has one, else everything."""
    tr = [x for x in items if x["split"] == "train"]
    return tr if tr else items


def mix_poison(task: list[dict], poison: list[dict], ratio: float, seed: int) -> list[dict]:
    """Task data with a fraction `ratio` of poison examples (seeded); `spt.data.mix_poison` when present."""
    if ratio <= 0:
        return list(task)
    fn = _data_fn("mix_poison")
    if fn is not None:
        return list(fn(task, poison, ratio, seed))
    if not poison:
        raise SptError("the poison dataset is empty")
    rng = random.Random(seed)
    n = len(task)
    n_p = max(1, round(ratio * n))
    kept = rng.sample(task, n - n_p)
    picked = rng.sample(poison, n_p) if len(poison) >= n_p else [rng.choice(poison) for _ in range(n_p)]
    out = kept + picked
    rng.shuffle(out)
    return out


def pairs_of(items: list[dict]) -> list[tuple[dict, dict]]:
    """(harmful, benign) pairs by pair_id, in a stable order; items without a partner are dropped."""
    by: dict[str, dict[str, dict]] = {}
    for it in items:
        if it.get("pair_id") and it["label"] in ("harmful", "benign"):
            by.setdefault(it["pair_id"], {}).setdefault(it["label"], it)
    return [(v["harmful"], v["benign"]) for k, v in sorted(by.items()) if "harmful" in v and "benign" in v]


def fixed_eval_pairs(items: list[dict], n_pairs: int) -> list[tuple[dict, dict]]:
    """The fixed alignment-loss batch: `n_pairs` HarmOR test pairs chosen with a fixed seed (0)."""
    pairs = pairs_of(items)
    if not pairs:
        raise SptError("the safety dataset has no harmful/benign pairs in its test split")
    rng = random.Random(0)
    return sorted(rng.sample(pairs, min(n_pairs, len(pairs))), key=lambda p: p[0]["pair_id"])
