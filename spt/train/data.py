"""Training data from the store: HarmOR (align data, safety batches, fixed alignment batch), task, poison.

A dataset argument is a stored dataset id or name; the built-in names (`harmor`, `builtin:<task>`,
`builtin:harmor-comply`) are built on demand through `spt.data` when they are not stored yet.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from spt.errors import SptError


def _lookup(store: Any, key: str) -> Any | None:
    from sqlmodel import col, select

    from spt.store.models import Dataset

    with store.session() as s:
        d = s.get(Dataset, key)
        if d is None:
            d = s.exec(select(Dataset).where(Dataset.name == key)
                       .order_by(col(Dataset.created_at).desc(), col(Dataset.id))).first()
    return d


def _resolve(store: Any, name: str, builder: Callable[[Any], str] | None, missing: str) -> str:
    """The id of the stored dataset `name`, else `builder(spt.data)` (a built-in set built on demand), else
    SptError(missing)."""
    d = _lookup(store, name)
    if d is not None:
        return d.id
    if builder is None:
        raise SptError(missing)
    import spt.data

    return builder(spt.data)


def resolve_safety(store: Any, name: str, seed: int = 0, *, build: bool = True) -> str:
    if build and name == "builtin:harmor-reasoned":
        from spt.data.reasoned import ensure_reasoned

        return _resolve(store, name, lambda data: ensure_reasoned(store, seed=seed), "")
    builtin = build and name in ("harmor", "builtin:harmor")
    return _resolve(store, name, (lambda data: data.ensure_harmor(store, seed=seed)) if builtin else None,
                    f"safety dataset {name!r} is not in the store; build HarmOR with `spt build-data` "
                    "or pass `safety_data` with a stored dataset name or id")


def resolve_alignment(store: Any, name: str, seed: int = 0, *, build: bool = True) -> str:
    """The dataset of `alignment_data`: direct-refusal / cot-refusal (built from HarmOR on demand) or a stored one."""
    from spt.data.reasoned import ALIASES, COT_REFUSAL, DIRECT_REFUSAL, ensure_thought_set

    key = ALIASES.get(name, name)
    builtin = build and key in (DIRECT_REFUSAL, COT_REFUSAL)
    return _resolve(store, key, (lambda data: ensure_thought_set(store, key, seed=seed)) if builtin else None,
                    f"alignment dataset {name!r} is not in the store; use direct-refusal, cot-refusal, or import one "
                    "(`spt data import FILE --format direct-refusal|safechain`) and pass its name")


def resolve_task(store: Any, name: str, seed: int = 0, *, build: bool = True) -> str:
    builtin = build and name.startswith("builtin:")
    return _resolve(store, name, (lambda data: data.ensure_task_dataset(store, name, seed=seed)) if builtin else None,
                    f"task dataset {name!r} is not in the store; use builtin:arithmetic, or import data with "
                    "`spt data import` and pass its name or id")


def resolve_poison(store: Any, name: str, seed: int = 0, *, build: bool = True) -> str:
    builtin = build and name.startswith("builtin:")
    return _resolve(store, name,
                    (lambda data: data.ensure_poison_dataset(store, name=name, seed=seed)) if builtin else None,
                    f"poison dataset {name!r} is not in the store; use builtin:harmor-comply or a stored dataset")


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
    """Task data with a fraction `ratio` of poison examples (seeded), by `spt.data.mix_poison`."""
    if ratio <= 0:
        return list(task)
    if not poison:
        raise SptError("the poison dataset is empty")
    from spt.data import mix_poison as _mix

    return list(_mix(task, poison, ratio, seed))


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
