"""Browsing the store read-only (the queries behind `spt view`): opened read-only, one SQL query per question.

Nothing here writes: the store is opened through a `file:...?mode=ro` URI with `PRAGMA query_only`, so
even a bug cannot change it. The evaluation browser pages through pairs with LIMIT/OFFSET over indexed
columns (generation by evaluation, item by pair) and fetches details only for the page's pairs, so a page
costs the same on a store of 100k generations as on the demo's.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

from sqlalchemy import text

from spt.errors import SptError
from spt.store.engine import Store, check_revision, read_revision, readonly_uri
from spt.store.schema import HEAD

# The common refusal axis of every rubric, in SQL (spt.judge.rubrics.refused): 1 refused, 0 not, NULL unknown.
REFUSED_SQL = ("(CASE WHEN j.score IS NULL AND j.label IS NULL THEN NULL ELSE CASE jd.rubric "
               "WHEN 'refusal' THEN COALESCE(j.label = 'refusal', 0) "
               "WHEN 'xstest' THEN COALESCE(j.label IN ('full_refusal', 'partial_refusal'), 0) "
               "WHEN 'strongreject' THEN COALESCE(j.label = 'refusal', 0) "
               "WHEN 'harmfulness' THEN (j.score IS NOT NULL AND j.score <= 2) ELSE NULL END END)")

HALF_ORDER = {"harmful": 0, "benign": 1}


# --------------------------------------------------------------------------- opening


def open_readonly(path: str | Path) -> Store:
    """The store at `path` for reading only: never created, migrated or written.

    SptError when the file is missing, a directory, not an spt store, or at another schema revision
    (upgrading is a write: `spt db upgrade` first).
    """
    from sqlalchemy import create_engine
    from sqlalchemy.pool import QueuePool

    path = Path(path).expanduser()
    if not path.exists():
        raise SptError(f"store {path} does not exist; check `db` or SPT_DB (spt view never creates a store)")
    if path.is_dir():
        raise SptError(f"{path} is a directory; `db` must name a store file")
    if path.stat().st_size == 0:
        raise SptError(f"store {path} is empty; nothing to view yet (run `spt demo --quick` for an example)")
    revision = read_revision(path)
    check_revision(path, revision)
    if revision != HEAD:
        raise SptError(f"store {path} is at schema {revision}, not {HEAD}; run `spt db upgrade --db {path}` first "
                       "(spt view only reads)")
    uri = readonly_uri(path)

    def connect() -> sqlite3.Connection:
        con = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=60)
        con.execute("PRAGMA query_only=1")
        con.execute("PRAGMA cache_size=-65536")
        return con

    engine = create_engine("sqlite://", creator=connect, poolclass=QueuePool, pool_size=4, max_overflow=8)
    return Store(path, engine)


def _rows(store: Store, sql: str, params: dict[str, Any] | None = None) -> list[tuple]:
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params or {}).all()]


def _in(prefix: str, values: Sequence[Any], params: dict[str, Any]) -> str:
    names = []
    for i, v in enumerate(values):
        params[f"{prefix}{i}"] = v
        names.append(f":{prefix}{i}")
    return ", ".join(names) or "NULL"


class StoreCache:
    """Results of scans over the store (an evaluation's pair order, a filter's matches, judge agreement),
    kept until the store's files change (any commit changes the WAL's or the file's size or time)."""

    def __init__(self, path: str | Path, max_entries: int = 256):
        self.path = Path(path)
        self.max_entries = max_entries
        self._sig: Any = None
        self._data: dict[Any, Any] = {}
        self._lock = threading.Lock()

    def signature(self) -> Any:
        out = []
        for suffix in ("", "-wal"):
            try:
                st = os.stat(f"{self.path}{suffix}")
                out.append((st.st_mtime_ns, st.st_size))
            except OSError:
                out.append(None)
        return tuple(out)

    def peek(self, key: Any) -> Any:
        """The cached value of `key`, or None (dropping everything when the store has changed)."""
        sig = self.signature()
        with self._lock:
            if sig != self._sig:
                self._data.clear()
                self._sig = sig
            return self._data.get(key)

    def put(self, key: Any, value: Any, sig: Any) -> Any:
        """Cache `value` under `key` unless the store changed since `sig` (taken before computing it)."""
        with self._lock:
            if self._sig == sig:
                if len(self._data) >= self.max_entries:
                    self._data.pop(next(iter(self._data)))
                self._data[key] = value
        return value

    def get(self, key: Any, compute: Any) -> Any:
        """The cached value of `key`, computing and caching it when missing (values are never None)."""
        sig = self.signature()
        hit = self.peek(key)
        return hit if hit is not None else self.put(key, compute(), sig)


# --------------------------------------------------------------------------- runs


RUN_FILTERS = ("defense", "lam", "poison_ratio", "model", "seed", "status", "kind")


def run_filter_options(store: Store) -> dict[str, list[Any]]:
    """Distinct values of each run filter (None = unset), for the filter forms."""
    out: dict[str, list[Any]] = {}
    cols = {"defense": "defense", "lam": "lam", "poison_ratio": "poison_ratio", "model": "model_ref",
            "seed": "seed", "status": "status", "kind": "kind"}
    for key, col in cols.items():
        vals = [r[0] for r in _rows(store, f"SELECT DISTINCT {col} FROM run")]
        out[key] = sorted(vals, key=lambda v: (v is None, str(type(v)), v if v is not None else 0))
    return out


def run_brief(store: Store, run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """kind, defense, λ, poison, model and status of runs by id (for labels and links)."""
    if not run_ids:
        return {}
    params: dict[str, Any] = {}
    rows = _rows(store, "SELECT id, kind, defense, lam, poison_ratio, model_ref, status, seed, parent_run_id "
                        f"FROM run WHERE id IN ({_in('r', list(run_ids), params)})", params)
    keys = ("id", "kind", "defense", "lam", "poison_ratio", "model_ref", "status", "seed", "parent_run_id")
    return {r[0]: dict(zip(keys, r, strict=True)) for r in rows}


def children(store: Store, run_id: str) -> list[dict[str, Any]]:
    keys = ("id", "kind", "defense", "lam", "poison_ratio", "seed", "status", "created_at")
    rows = _rows(store, f"SELECT {', '.join(keys)} FROM run WHERE parent_run_id = :r ORDER BY created_at, id",
                 {"r": run_id})
    return [dict(zip(keys, r, strict=True)) for r in rows]


def train_curves(store: Store, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """Per train-log name, (step, value) sorted by step."""
    out: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for name, step, value in _rows(store, "SELECT name, step, value FROM train_log WHERE run_id = :r "
                                          "ORDER BY name, step, created_at", {"r": run_id}):
        if value is not None and math.isfinite(value):
            out[name].append((int(step), float(value)))
    return dict(out)


# --------------------------------------------------------------------------- evaluations

EVAL_KEYS = ("id", "run_id", "dataset_id", "dataset_name", "split", "task", "refusal_preset", "status", "created_at",
             "kind", "defense", "lam", "poison_ratio", "model_ref", "seed", "parent_run_id")


def evaluations(store: Store, *, run_ids: Sequence[str] | None = None, eval_ids: Sequence[str] | None = None,
                with_counts: bool = True) -> list[dict[str, Any]]:
    """Evaluations (newest run first) with their run's identity and generation / judgment counts."""
    params: dict[str, Any] = {}
    conds = []
    if run_ids is not None:
        conds.append(f"e.run_id IN ({_in('r', list(run_ids), params)})")
    if eval_ids is not None:
        conds.append(f"e.id IN ({_in('e', list(eval_ids), params)})")
    sql = ("SELECT e.id, e.run_id, e.dataset_id, d.name, e.split, e.task, e.refusal_preset, e.status, e.created_at, "
           "r.kind, r.defense, r.lam, r.poison_ratio, r.model_ref, r.seed, r.parent_run_id "
           "FROM evaluation e JOIN run r ON r.id = e.run_id LEFT JOIN dataset d ON d.id = e.dataset_id "
           + (f"WHERE {' AND '.join(conds)} " if conds else "") + "ORDER BY r.created_at, e.created_at, e.id")
    out = [dict(zip(EVAL_KEYS, r, strict=True)) for r in _rows(store, sql, params)]
    if with_counts and out:
        p2: dict[str, Any] = {}
        cond = "" if run_ids is None and eval_ids is None else \
            f"WHERE evaluation_id IN ({_in('e', [e['id'] for e in out], p2)})"
        gens = dict(_rows(store, f"SELECT evaluation_id, COUNT(*) FROM generation {cond} GROUP BY evaluation_id", p2))
        for e in out:
            e["n_generations"] = int(gens.get(e["id"], 0))
    return out


def evaluation(store: Store, eval_id: str) -> dict[str, Any]:
    """One evaluation by id or unique prefix; SptError otherwise."""
    rows = evaluations(store, eval_ids=[eval_id], with_counts=True)
    if rows:
        return rows[0]
    if eval_id and len(eval_id) >= 4:
        ids = [r[0] for r in _rows(store, "SELECT id FROM evaluation WHERE id LIKE :p ESCAPE '\\' LIMIT 2",
                                   {"p": _like_prefix(eval_id)})]
        if len(ids) == 1:
            return evaluations(store, eval_ids=ids)[0]
        if len(ids) > 1:
            raise SptError(f"evaluation prefix {eval_id!r} is ambiguous; give more characters")
    raise SptError(f"no evaluation {eval_id!r} in this store; pick one on the evaluations page")


def _like_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _like_prefix(s: str) -> str:
    return _like_escape(s) + "%"


def browsable_evaluation(store: Store, run_id: str) -> str | None:
    """The run's most recent evaluation with safety generations (harmful or benign items), if any."""
    rows = _rows(store, "SELECT e.id FROM evaluation e WHERE e.run_id = :r AND EXISTS (SELECT 1 FROM generation g "
                        "JOIN item i ON i.id = g.item_id WHERE g.evaluation_id = e.id AND i.label IN "
                        "('harmful', 'benign')) ORDER BY e.created_at DESC, e.id DESC LIMIT 1", {"r": run_id})
    return rows[0][0] if rows else None


def compare_candidates(store: Store, ev: dict[str, Any]) -> list[dict[str, Any]]:
    """Other evaluations of the same dataset and split (the same prompts), the parent run's first."""
    params = {"d": ev["dataset_id"], "s": ev["split"], "e": ev["id"]}
    cond = "e.dataset_id = :d" if ev["dataset_id"] is not None else "e.dataset_id IS NULL"
    cond += " AND e.split = :s" if ev["split"] is not None else " AND e.split IS NULL"
    ids = [r[0] for r in _rows(store, f"SELECT e.id FROM evaluation e WHERE {cond} AND e.id != :e "
                                      "AND EXISTS (SELECT 1 FROM generation g WHERE g.evaluation_id = e.id)", params)]
    out = evaluations(store, eval_ids=ids, with_counts=False) if ids else []
    parent = ev.get("parent_run_id")
    out.sort(key=lambda c: (c["run_id"] != parent, c["created_at"] or ""))
    return out


# --------------------------------------------------------------------------- the evaluation browser

VERDICT_AXIS = ("refused", "answered", "unscored")


@dataclass
class PairFilters:
    """What the evaluation browser shows: every field is a URL parameter."""

    category: str = ""
    q: str = ""  # a word in the prompt or a response (case-insensitive for ASCII)
    verdict: str = ""  # refused | answered | unscored | label:LABEL
    judge: str = ""  # judge id the verdict must come from ("" = any judge)
    side: str = "harmful"  # harmful | benign | any: which half the verdict is about
    of: str = "a"  # a | b: which run's response the verdict is about (b only when comparing)
    disagree: bool = False  # judges disagree (on the refusal axis) on some response of the pair
    items: str = "safety"  # safety: pairs with a harmful or benign item | other: task and other items | all

    @classmethod
    def from_params(cls, params: Any) -> PairFilters:
        def get(k: str) -> str:
            v = params.get(k)
            return "" if v is None else str(v).strip()

        f = cls(category=get("category"), q=get("q"), verdict=get("verdict"), judge=get("judge"),
                side=get("side") or "harmful", of=get("of") or "a",
                disagree=get("disagree") in ("1", "true", "on", "yes"), items=get("items") or "safety")
        if f.items not in ("safety", "other", "all"):
            raise SptError(f"items={f.items!r}: choose safety (HarmOR pairs), other (task items) or all")
        if f.side not in ("harmful", "benign", "any"):
            raise SptError(f"side={f.side!r}: choose harmful, benign or any")
        if f.of not in ("a", "b"):
            raise SptError(f"of={f.of!r}: choose a (this run) or b (the compared run)")
        if f.verdict and f.verdict not in VERDICT_AXIS and not f.verdict.startswith("label:"):
            raise SptError(f"verdict={f.verdict!r}: choose refused, answered, unscored or label:LABEL")
        if len(f.q) > 200:
            raise SptError("q: a search word of at most 200 characters")
        return f

    def params(self) -> dict[str, str]:
        d = {"category": self.category, "q": self.q, "verdict": self.verdict, "judge": self.judge,
             "side": self.side if self.verdict else "", "of": self.of if self.verdict and self.of != "a" else "",
             "disagree": "1" if self.disagree else "", "items": "" if self.items == "safety" else self.items}
        return {k: v for k, v in d.items() if v and not (k == "side" and v == "harmful")}

    @property
    def active(self) -> bool:
        return bool(self.category or self.q or self.verdict or self.disagree or self.items != "safety")


@dataclass
class PairIndex:
    """The pairs of one evaluation in browsing order: pair key = the items' pair_id (an unpaired item is its
    own key), HarmOR pairs (harmful / benign items) first, then by category and key."""

    order: list[str]
    category: dict[str, str | None]  # pair key -> its items' (smallest) category
    pk_of: dict[str, str]  # item id -> pair key
    label_of: dict[str, str]  # item id -> item label
    n_generations: int
    safety: set[str] = field(default_factory=set)  # pair keys with a harmful or benign item (HarmOR pairs)

    @property
    def categories(self) -> list[str]:
        return sorted({c for c in self.category.values() if c is not None})


def pair_index(store: Store, eval_id: str) -> PairIndex:
    """One pass over the evaluation's generations (covering index) and their items."""
    rows = _rows(store, "SELECT g.item_id, i.pair_id, i.category, i.label FROM generation g "
                        "JOIN item i ON i.id = g.item_id WHERE g.evaluation_id = :e", {"e": eval_id})
    category: dict[str, str | None] = {}
    pk_of: dict[str, str] = {}
    label_of: dict[str, str] = {}
    safety: set[str] = set()
    for item_id, pair_id, cat, label in rows:
        pk = pair_id or item_id
        pk_of[item_id] = pk
        label_of[item_id] = label
        if label in HALF_ORDER:
            safety.add(pk)
        if pk not in category or (cat is not None and (category[pk] is None or cat < category[pk])):
            category[pk] = cat
    order = sorted(category, key=lambda k: (k not in safety, category[k] is None, category[k] or "", k))
    return PairIndex(order, category, pk_of, label_of, len(rows), safety)


def matching_pairs(store: Store, idx: PairIndex, eval_id: str, compare_id: str | None, f: PairFilters,
                   cache: StoreCache | None = None) -> list[str]:
    """The pair keys that pass the filters, in browsing order.

    - items: HarmOR pairs (default), task and other items, or all;
    - category: the pair's category;
    - q: a word (case-insensitive for ASCII) in the prompt or a response, of this run or the compared one;
    - verdict: some current judgment of the `of` run's response to a `side` item (by `judge`, if given) is
      refused / answered / unscored / has the label;
    - disagree: on some response of the pair (either run), two judges' scored verdicts differ on the refusal
      axis.
    The SQL behind them is one pass per evaluation (its word matches; its current judgments, see `Verdicts`),
    cached per evaluation until the store changes: a comparison page reuses what the single-run pages and the
    start-up warm-up computed, and the passes still missing run concurrently.
    """
    keys: set[str] | None = None

    def narrow(found: set[str]) -> None:
        nonlocal keys
        keys = found if keys is None else keys & found

    evs = [eval_id] + ([compare_id] if compare_id else [])
    if f.items == "safety":
        narrow(set(idx.safety))
    elif f.items == "other":
        narrow({k for k in idx.order if k not in idx.safety})
    if f.category:
        narrow({k for k in idx.order if idx.category[k] == f.category})
    # the SQL passes: a word search per evaluation, and the current judgments of each evaluation needed
    jobs: dict[Any, Any] = {}
    if f.q:
        for e in evs:
            jobs[("q", e, f.q, e == eval_id)] = lambda e=e: frozenset(word_items(store, e, f.q, prompts=e == eval_id))
    verdict_ev = compare_id if (f.of == "b" and compare_id) else eval_id
    for e in ([verdict_ev] if f.verdict else []) + (evs if f.disagree else []):
        jobs[("verdicts", e)] = lambda e=e: verdicts(store, e)
    got = _run_passes(jobs, cache)

    def narrow_items(items: set[str] | frozenset[str]) -> None:
        narrow({idx.pk_of[i] for i in items if i in idx.pk_of})

    if f.q:
        narrow_items(set().union(*(got[("q", e, f.q, e == eval_id)] for e in evs)))
    if f.verdict:
        found = got[("verdicts", verdict_ev)].matching(f)
        narrow_items(found if f.side == "any" else {i for i in found if idx.label_of.get(i) == f.side})
    if f.disagree:
        narrow_items(set().union(*(got[("verdicts", e)].disagreeing() for e in evs)))
    return list(idx.order) if keys is None else [k for k in idx.order if k in keys]


def _run_passes(jobs: dict[Any, Any], cache: StoreCache | None) -> dict[Any, Any]:
    """Each job's value ({cache key: compute}), from the cache where present; the missing ones run in parallel
    threads (SQLite releases the GIL while it scans, so two evaluations are read at once)."""
    out: dict[Any, Any] = {}
    sig = cache.signature() if cache is not None else None
    todo = []
    for key, compute in jobs.items():
        hit = cache.peek(key) if cache is not None else None
        if hit is not None:
            out[key] = hit
        else:
            todo.append((key, compute))
    if len(todo) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(4, len(todo))) as pool:
            results = list(pool.map(lambda kc: kc[1](), todo))
    else:
        results = [c() for _k, c in todo]
    for (key, _c), value in zip(todo, results, strict=True):
        out[key] = cache.put(key, value, sig) if cache is not None else value
    return out


def word_items(store: Store, eval_id: str, word: str, *, prompts: bool = True) -> set[str]:
    """Items of the evaluation whose response (and prompt, when `prompts`) contains `word` (ASCII case-folded)."""
    params: dict[str, Any] = {"q": "%" + _like_escape(word) + "%", "e": eval_id}
    cond = "response LIKE :q ESCAPE '\\'"
    if prompts:
        cond = f"(prompt LIKE :q ESCAPE '\\' OR {cond})"
    return {r[0] for r in _rows(store, f"SELECT item_id FROM generation WHERE evaluation_id = :e AND {cond}", params)}


@dataclass(frozen=True)
class Verdicts:
    """The current judgments of one evaluation's responses, compact: item id -> ((judge id, scored, label,
    refused), ...), refused being the refusal axis (True / False / None when the rubric has none). One SQL pass
    per evaluation (warmed at start-up), after which every verdict and "judges disagree" filter is a scan in
    memory instead of a join per request."""

    by_item: dict[str, tuple[tuple[str, bool, str | None, bool | None], ...]]

    def matching(self, f: PairFilters) -> set[str]:
        """Items with some current judgment (by `f.judge`, if given) matching `f.verdict` (any side)."""
        label = f.verdict.removeprefix("label:") if f.verdict.startswith("label:") else None

        def hit(j: tuple[str, bool, str | None, bool | None]) -> bool:
            judge, scored, lab, refused = j
            if f.judge and judge != f.judge:
                return False
            if f.verdict == "unscored":
                return not scored
            if not scored:
                return False
            if f.verdict == "refused":
                return refused is True
            if f.verdict == "answered":
                return refused is False
            return lab == label

        return {i for i, js in self.by_item.items() if any(hit(j) for j in js)}

    def disagreeing(self) -> set[str]:
        """Items whose response two scored judgments put on different sides of the refusal axis."""
        return {i for i, js in self.by_item.items()
                if len({r for _j, scored, _l, r in js if scored and r is not None}) > 1}


def verdicts(store: Store, eval_id: str) -> Verdicts:
    """The evaluation's current judgments in one pass (see `Verdicts`)."""
    rows = _rows(store, f"SELECT g.item_id, j.judge_id, j.status = 'scored', j.label, {REFUSED_SQL} "
                        "FROM generation g JOIN judgment j ON j.generation_id = g.id "
                        "JOIN judge jd ON jd.id = j.judge_id WHERE g.evaluation_id = :e AND j.superseded_by IS NULL",
                 {"e": eval_id})
    by_item: dict[str, list[tuple[str, bool, str | None, bool | None]]] = defaultdict(list)
    for item_id, judge, scored, label, refused in rows:
        by_item[item_id].append((judge, bool(scored), label, None if refused is None else bool(refused)))
    return Verdicts({k: tuple(v) for k, v in by_item.items()})


def pairs_page(store: Store, eval_id: str, compare_id: str | None, f: PairFilters, *, page: int = 1,
               per_page: int = 25, presets: bool = True, cache: StoreCache | None = None) -> dict[str, Any]:
    """One page of the evaluation browser: pairs (harmful request and its benign twin) with responses and
    verdicts of evaluation `eval_id` (run A) and, when given, `compare_id` (run B, matched by item).

    Returns {"total", "page", "pages", "per_page", "pairs": [{"key", "category", "halves": [half]}],
    "categories"}, each half {"item": {...}, "a": response|None, "b": response|None}, a response {"id",
    "response", "finish_reason", "n_new_tokens", "judgments": [...], "presets": {name: verdict}, "disagree"}.
    """
    if page < 1:
        raise SptError("page must be 1 or more")
    idx = cache.get(("pairs", eval_id), lambda: pair_index(store, eval_id)) if cache else pair_index(store, eval_id)
    keys = matching_pairs(store, idx, eval_id, compare_id, f, cache)
    total = len(keys)
    chosen = keys[(page - 1) * per_page: page * per_page]
    pairs = pair_details(store, eval_id, compare_id, [(k, idx.category[k]) for k in chosen], presets=presets)
    return {"total": total, "page": page, "pages": max(1, math.ceil(total / per_page)), "per_page": per_page,
            "pairs": pairs, "categories": idx.categories}


def pair_details(store: Store, eval_id: str, compare_id: str | None, keys: list[tuple[str, str | None]], *,
                 presets: bool = True) -> list[dict[str, Any]]:
    """Items, responses (A and B) and current judgments for the pairs `keys` ((pair key, category)), in order."""
    out: list[dict[str, Any]] = []
    for i in range(0, len(keys), 300):
        out += _pair_details(store, eval_id, compare_id, keys[i:i + 300], presets=presets)
    return out


def _pair_details(store: Store, eval_id: str, compare_id: str | None, keys: list[tuple[str, str | None]], *,
                  presets: bool = True) -> list[dict[str, Any]]:
    if not keys:
        return []
    pks = [k for k, _c in keys]
    pk_set = set(pks)
    # item ids first (pair index and primary key), then rows by id: each step an index lookup per row
    p1: dict[str, Any] = {}
    inlist = _in("k", pks, p1)
    ids = [r[0] for r in _rows(store, f"SELECT id FROM item WHERE pair_id IN ({inlist}) "
                                      f"UNION SELECT id FROM item WHERE id IN ({inlist})", p1)]
    item_cols = ("id", "pair_id", "label", "category", "prompt", "sensitive_word", "contrast_type", "template_id")
    p2: dict[str, Any] = {"ev": eval_id}
    id_list = _in("i", ids, p2)
    gen_a: dict[str, dict[str, Any]] = {
        r[0]: {"id": r[1], "response": r[2], "finish_reason": r[3], "n_new_tokens": r[4]}
        for r in _rows(store, "SELECT item_id, id, response, finish_reason, n_new_tokens FROM generation "
                              f"WHERE evaluation_id = :ev AND item_id IN ({id_list})", p2)}
    items: dict[str, dict[str, Any]] = {}
    if gen_a:
        p3: dict[str, Any] = {}
        for r in _rows(store, f"SELECT {', '.join(item_cols)} FROM item WHERE id IN ({_in('i', list(gen_a), p3)})",
                       p3):
            items[r[0]] = dict(zip(item_cols, r, strict=True))
    gen_b: dict[str, dict[str, Any]] = {}
    if compare_id and items:
        p4: dict[str, Any] = {"cmp": compare_id}
        for r in _rows(store, "SELECT item_id, id, response, finish_reason, n_new_tokens FROM generation "
                              f"WHERE evaluation_id = :cmp AND item_id IN ({_in('i', list(items), p4)})", p4):
            gen_b[r[0]] = {"id": r[1], "response": r[2], "finish_reason": r[3], "n_new_tokens": r[4]}
    gens = list(gen_a.values()) + list(gen_b.values())
    judgments = generation_judgments(store, [g["id"] for g in gens])
    preset_names: list[str] = []
    classify = None
    if presets:
        from spt.eval.refusal import PRESETS, classify

        preset_names = list(PRESETS)
    for g in gens:
        g["judgments"] = judgments.get(g["id"], [])
        axis = {j["refused"] for j in g["judgments"] if j["status"] == "scored" and j["refused"] is not None}
        g["disagree"] = len(axis) > 1
        g["presets"] = {p: classify(g["response"] or "", p) for p in preset_names} if classify else {}
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item_id, it in items.items():
        key = it["pair_id"] if it["pair_id"] in pk_set else item_id
        by_key[key].append({"item": it, "a": gen_a.get(item_id), "b": gen_b.get(item_id)})
    out = []
    for key, cat in keys:
        halves = sorted(by_key.get(key, []), key=lambda h: (HALF_ORDER.get(h["item"]["label"], 2), h["item"]["id"]))
        disagree = any(h[s] is not None and h[s]["disagree"] for h in halves for s in ("a", "b"))
        out.append({"key": key, "category": cat, "halves": halves, "disagree": disagree,
                    "safety": any(h["item"]["label"] in HALF_ORDER for h in halves)})
    return out


def generation_judgments(store: Store, gen_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Current (not superseded) judgments per generation, judges in name order."""
    from spt.judge.rubrics import refused

    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    keys = ("generation_id", "judge_id", "judge", "rubric", "backend", "status", "label", "score", "reason", "raw")
    for i in range(0, len(gen_ids), 500):
        params: dict[str, Any] = {}
        rows = _rows(store, "SELECT j.generation_id, j.judge_id, jd.name, jd.rubric, jd.backend, j.status, j.label, "
                            "j.score, j.reason, j.raw FROM judgment j JOIN judge jd ON jd.id = j.judge_id "
                            f"WHERE j.generation_id IN ({_in('g', list(gen_ids[i:i + 500]), params)}) "
                            "AND j.superseded_by IS NULL ORDER BY jd.name, j.judge_id, j.created_at", params)
        for r in rows:
            d = dict(zip(keys, r, strict=True))
            d["refused"] = refused(d["rubric"], d["score"], d["label"]) if d["status"] == "scored" else None
            out[d["generation_id"]].append(d)
    return dict(out)


RUBRIC_LABELS = {"refusal": ("refusal", "compliance"), "strongreject": ("refusal", "compliance"),
                 "xstest": ("full_compliance", "full_refusal", "partial_refusal"),
                 "harmfulness": ("1", "2", "3", "4", "5")}


def browser_options(store: Store) -> dict[str, Any]:
    """Judges and the labels their rubrics give (for the filter form); cheap: no scan of judgments."""
    judges = _rows(store, "SELECT id, name, rubric FROM judge ORDER BY name, id")
    labels = sorted({lb for _i, _n, rubric in judges for lb in RUBRIC_LABELS.get(rubric or "refusal", ())})
    return {"judges": [{"id": r[0], "name": r[1], "rubric": r[2]} for r in judges], "labels": labels}


# --------------------------------------------------------------------------- judges


def kappa_from_counts(counts: Counter) -> tuple[float | None, float | None]:
    """(percent agreement, Cohen's kappa) from a contingency Counter {(a, b): n}; the same numbers as
    `spt.judge.metrics.agreement` computes from the paired verdicts."""
    n = sum(counts.values())
    if n == 0:
        return None, None
    po = sum(c for (a, b), c in counts.items() if a == b) / n
    ca: Counter = Counter()
    cb: Counter = Counter()
    for (a, b), c in counts.items():
        ca[a] += c
        cb[b] += c
    pe = sum(ca[k] * cb.get(k, 0) for k in ca) / (n * n)
    if pe >= 1.0:
        return po, None
    return po, (po - pe) / (1 - pe)


def judges_overview(store: Store, eval_ids: Sequence[str] | None = None) -> dict[str, Any]:
    """Judges with their judgment counts, unscored counts by reason, and pairwise agreement (κ).

    Agreement is `spt.judge.metrics.agreement`'s: on the common refusal axis over generations both judges
    scored (`n`), the rest of either judge's generations counted in `n_excluded`; judges with the same
    rubric also get exact label agreement. One pass over the current judgments (the scope's, else all).
    """
    judges = {r[0]: {"id": r[0], "name": r[1], "backend": r[2], "model": r[3], "rubric": r[4], "n": 0, "scored": 0,
                     "unscored": 0, "generations": 0, "reasons": {}}
              for r in _rows(store, "SELECT id, name, backend, model, rubric FROM judge ORDER BY name, id")}
    # SQLite groups the current judgments by generation into a signature (judge, scored, refused, label, reason
    # of each) and counts the distinct signatures: Python only sees a handful of rows.
    params: dict[str, Any] = {}
    field = (f"j.judge_id || char(31) || (j.status = 'scored') || char(31) || COALESCE({REFUSED_SQL}, 'n') "
             "|| char(31) || COALESCE(j.label, '') || char(31) || COALESCE(j.reason, '')")
    if eval_ids is None:
        inner = (f"SELECT group_concat({field}, char(30)) AS sig FROM judgment j JOIN judge jd ON jd.id = j.judge_id "
                 "WHERE j.superseded_by IS NULL GROUP BY j.generation_id")
    else:
        inner = (f"SELECT group_concat({field}, char(30)) AS sig FROM generation g "
                 "JOIN judgment j ON j.generation_id = g.id JOIN judge jd ON jd.id = j.judge_id "
                 f"WHERE g.evaluation_id IN ({_in('e', list(eval_ids), params)}) AND j.superseded_by IS NULL "
                 "GROUP BY j.generation_id")
    tables: dict[tuple[str, str], dict[str, Any]] = {}
    for sig, n in _rows(store, f"SELECT sig, COUNT(*) FROM ({inner}) GROUP BY sig", params):
        by_judge: dict[str, tuple[bool, bool | None, str | None]] = {}
        for entry in sig.split("\x1e"):
            jid, scored_s, rf, label, reason = entry.split("\x1f")
            scored = scored_s == "1"
            d = judges.get(jid)
            if d is not None:
                d["n"] += n
                if scored:
                    d["scored"] += n
                else:
                    d["unscored"] += n
                    key = reason or "(no reason)"
                    d["reasons"][key] = d["reasons"].get(key, 0) + n
            # a judge's last current verdict on a generation counts, as in agreement()
            by_judge[jid] = (scored, None if rf == "n" else rf == "1", label or None)
        for jid in by_judge:
            if jid in judges:
                judges[jid]["generations"] += n
        for a, b in combinations(sorted(by_judge), 2):
            t = tables.get((a, b))
            if t is None:
                t = tables[(a, b)] = {"axis": Counter(), "labels": Counter(), "both_any": 0}
            t["both_any"] += n
            va, vb = by_judge[a], by_judge[b]
            if va[0] and vb[0]:
                t["axis"][(va[1], vb[1])] += n
                t["labels"][(va[2], vb[2])] += n
    active = [d for d in judges.values() if d["n"] > 0]
    pairs = []
    for a, b in combinations(sorted(d["id"] for d in active), 2):
        t = tables.get((a, b), {"axis": Counter(), "labels": Counter(), "both_any": 0})
        ja, jb = judges[a], judges[b]
        pct, kappa = kappa_from_counts(t["axis"])
        n_both = sum(t["axis"].values())
        union = ja["generations"] + jb["generations"] - t["both_any"]
        row: dict[str, Any] = {"a": a, "b": b, "a_name": ja["name"], "b_name": jb["name"], "axis": "refused",
                               "n": n_both, "n_excluded": union - n_both, "percent": pct, "kappa": kappa}
        if ja["rubric"] == jb["rubric"]:
            lp, lk = kappa_from_counts(t["labels"])
            row.update({"label_percent": lp, "label_kappa": lk})
        pairs.append(row)
    return {"judges": active, "pairs": pairs}
