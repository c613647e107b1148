"""Item dicts, their content ids, and storing/resolving/loading datasets in the store."""

from __future__ import annotations

import re
from typing import Any

from spt.errors import SptError
from spt.store.ids import content_id

# Fields that make up an item's identity (its content id); `split` lives on the membership row.
ITEM_FIELDS = ("prompt", "response", "category", "label", "pair_id", "template_id", "contrast_type",
               "sensitive_word", "answer", "meta")
# Order of keys in item dicts and exports.
EXPORT_FIELDS = ("id", "prompt", "response", "category", "label", "pair_id", "template_id", "contrast_type",
                 "sensitive_word", "answer", "split", "meta")
LABELS = ("harmful", "benign", "task", "poison", "agentic", "preference")
KINDS = ("harmor", "task", "harmful", "benign", "poison", "external", "agentic", "preference")
_SPLIT = re.compile(r"^[A-Za-z0-9_.-]+$")


def item_id(item: dict[str, Any]) -> str:
    """Content id of an item's content fields (same content, same id, anywhere)."""
    return content_id({k: item.get(k) for k in ITEM_FIELDS})


def make_item(**fields: Any) -> dict[str, Any]:
    """An item dict in export-field order with its content id filled in."""
    d = {k: fields.get(k) for k in EXPORT_FIELDS}
    d["split"] = d["split"] or "train"
    d["id"] = item_id(d)
    return d


def normalize_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validate item dicts and return them in export-field order with recomputed ids (duplicates dropped)."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for n, it in enumerate(items):
        if not isinstance(it, dict):
            raise SptError(f"item {n} is not a mapping; pass item dicts")
        prompt = it.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise SptError(f"item {n} has no prompt text; every item needs a non-empty prompt")
        if it.get("label") not in LABELS:
            raise SptError(f"item {n} has label {it.get('label')!r}; use one of {', '.join(LABELS)}")
        split = it.get("split") or "train"
        if not isinstance(split, str) or not _SPLIT.match(split):
            raise SptError(f"item {n} has split {split!r}; use a simple name such as train or test")
        for k in ITEM_FIELDS:
            v = it.get(k)
            if k != "meta" and v is not None and not isinstance(v, str):
                raise SptError(f"item {n} field {k!r} must be text, not {type(v).__name__}")
        if it.get("meta") is not None and not isinstance(it["meta"], dict):
            raise SptError(f"item {n} field 'meta' must be a mapping")
        d = make_item(**{**it, "split": split})
        if d["id"] in seen:
            continue
        seen.add(d["id"])
        out.append(d)
    return out


def dataset_id_for(kind: str, items: list[dict[str, Any]]) -> str:
    """Content id of a dataset: its kind and its sorted (item id, split) members."""
    return content_id({"kind": kind, "items": sorted([it["id"], it["split"]] for it in items)})


def store_items(store, name: str, kind: str, items: list[dict[str, Any]], source: dict | None) -> str:
    """Store items as a dataset in one write transaction and return its (content) id.

    The same content stored twice is stored once (the existing id is returned, its name unchanged);
    items already in the store (by content id) are shared, not copied.
    """
    from sqlmodel import select

    from spt.store.models import Dataset, DatasetItem, Item

    if not isinstance(name, str) or not name.strip():
        raise SptError("a dataset needs a non-empty name; pass `name`")
    if kind not in KINDS:
        raise SptError(f"unknown dataset kind {kind!r}; use one of {', '.join(KINDS)}")
    norm = normalize_items(items)
    if not norm:
        raise SptError(f"dataset {name!r} has no items; nothing to store")
    did = dataset_id_for(kind, norm)
    splits: dict[str, int] = {}
    for it in norm:
        splits[it["split"]] = splits.get(it["split"], 0) + 1
    with store.write() as s:
        if s.get(Dataset, did) is not None:
            return did
        ids = [it["id"] for it in norm]
        existing: set[str] = set()
        for i in range(0, len(ids), 500):
            existing.update(s.exec(select(Item.id).where(Item.id.in_(ids[i:i + 500]))).all())
        new_rows = [{k: it[k] for k in ("id", *ITEM_FIELDS)} for it in norm if it["id"] not in existing]
        if new_rows:
            s.execute(Item.__table__.insert(), new_rows)
        s.add(Dataset(id=did, name=name.strip(), kind=kind, n_items=len(norm), source=source,
                      meta={"splits": splits}))
        s.flush()
        s.execute(DatasetItem.__table__.insert(), [
            {"dataset_id": did, "item_id": it["id"], "split": it["split"], "position": pos}
            for pos, it in enumerate(norm)
        ])
    return did


def resolve_dataset(store, name_or_id: str):
    """A stored Dataset by exact id, by name (the latest one), or by a unique id prefix."""
    from sqlmodel import col, select

    from spt.store.models import Dataset

    key = (name_or_id or "").strip()
    if not key:
        raise SptError("no dataset given; pass a dataset name or id (see `spt data list`)")
    with store.session() as s:
        by_name = select(Dataset).where(Dataset.name == key).order_by(col(Dataset.created_at).desc(), col(Dataset.id))
        d = s.get(Dataset, key) or s.exec(by_name).first()
        if d is not None:
            return d
        hexpart = key.removeprefix("sha256:")
        if len(hexpart) >= 4 and re.fullmatch(r"[0-9a-f]+", hexpart):
            found = s.exec(select(Dataset).where(col(Dataset.id).startswith("sha256:" + hexpart))).all()
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise SptError(f"dataset id prefix {key!r} is ambiguous ({len(found)} datasets); give more digits")
        names = sorted(set(s.exec(select(Dataset.name)).all()))
    known = ", ".join(names[:20]) if names else "none stored yet"
    raise SptError(f"no dataset named or with id {key!r}; known datasets: {known} (see `spt data list`)")


def load_items(store, dataset_id: str, split: str | None = None) -> list[dict[str, Any]]:
    """The dataset's items in stable position order, each with its split."""
    from sqlmodel import col, select

    from spt.store.models import DatasetItem, Item

    with store.session() as s:
        q = (select(Item, DatasetItem.split).join(DatasetItem, col(DatasetItem.item_id) == col(Item.id))
             .where(DatasetItem.dataset_id == dataset_id))
        if split is not None:
            q = q.where(DatasetItem.split == split)
        rows = s.exec(q.order_by(col(DatasetItem.position))).all()
    out = []
    for item, sp in rows:
        d = {k: getattr(item, k) for k in ("id", *ITEM_FIELDS)}
        d["split"] = sp
        out.append({k: d[k] for k in EXPORT_FIELDS})
    return out
