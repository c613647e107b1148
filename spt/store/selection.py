"""Selecting runs by `--where` filters, and the latest value of metrics per run (the frontier, `spt runs`, the viewer).

Everything here is one query per question (never one per run), so 10k runs take well under a second.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text

from spt.errors import SptError
from spt.store.engine import Store

# --where keys -> Run column (or a special rule); aliases map onto them.
WHERE_KEYS = ("defense", "lam", "poison_ratio", "model", "task", "kind", "status", "seed", "tag")
_ALIASES = {"poison": "poison_ratio", "lambda": "lam", "λ": "lam", "tags": "tag", "stage": "kind",
            "model_ref": "model"}
_FLOAT_KEYS = {"lam", "poison_ratio"}

RUN_COLUMNS = ("id", "kind", "parent_run_id", "model_ref", "base_model", "task", "defense", "lam",
               "poison_ratio", "seed", "status", "tags", "notes", "created_at")


def parse_where(items: Iterable[str] | dict[str, list[str]] | None) -> dict[str, list[str]]:
    """`["defense=anchor", "lam=0.1", "defense=none"]` -> {"defense": ["anchor", "none"], "lam": ["0.1"]}.

    Repeating a key ORs its values; different keys AND. An empty value (`defense=`) matches unset.
    """
    if items is None:
        return {}
    if isinstance(items, dict):
        items = [f"{k}={v}" for k, vs in items.items() for v in ([vs] if isinstance(vs, str) else vs)]
    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        key = key.strip().lower()
        key = _ALIASES.get(key, key)
        if not sep or not key:
            raise SptError(f"`where` {item!r}: expected KEY=VALUE with KEY one of {', '.join(WHERE_KEYS)}")
        if key not in WHERE_KEYS:
            raise SptError(f"`where`: unknown key {key!r}; valid keys: {', '.join(WHERE_KEYS)}")
        value = value.strip()
        if value and key in _FLOAT_KEYS:
            try:
                v = float(value)
            except ValueError:
                raise SptError(f"`where` {item!r}: {key} must be a number") from None
            if not math.isfinite(v):
                raise SptError(f"`where` {item!r}: {key} must be a finite number")
        if value and key == "seed":
            try:
                int(value)
            except ValueError:
                raise SptError(f"`where` {item!r}: seed must be an integer") from None
        out.setdefault(key, []).append(value)
    return out


# --where key -> (condition for an empty value, condition for a value bound as :p); `a` is the run table's alias
_CONDITIONS = {
    "tag": ("({a}.tags IS NULL OR json_array_length({a}.tags) = 0)",
            "EXISTS (SELECT 1 FROM json_each({a}.tags) je WHERE je.value = :{p})"),
    "model": ("{a}.model_ref IS NULL", "({a}.model_ref = :{p} OR {a}.base_model = :{p})"),
}
_FLOAT_MATCH = "ABS({a}.{k} - :{p}) <= 1e-9 * MAX(1.0, ABS(:{p}))"


def where_sql(where: dict[str, list[str]], alias: str = "r") -> tuple[str, dict[str, Any]]:
    """A SQL condition on the run table (aliased `alias`) and its bound parameters."""
    clauses: list[str] = []
    params: dict[str, Any] = {}
    for key, values in where.items():
        ors: list[str] = []
        empty, match = _CONDITIONS.get(key, ("{a}.{k} IS NULL",
                                             _FLOAT_MATCH if key in _FLOAT_KEYS else "{a}.{k} = :{p}"))
        for i, value in enumerate(values):
            p = f"w_{key}_{i}"
            if value == "":
                ors.append(empty.format(a=alias, k=key))
                continue
            ors.append(match.format(a=alias, k=key, p=p))
            params[p] = float(value) if key in _FLOAT_KEYS else int(value) if key == "seed" else value
        clauses.append("(" + " OR ".join(ors) + ")")
    return (" AND ".join(clauses) if clauses else "1=1"), params


def _decode_tags(v: Any) -> list | None:
    if v is None or isinstance(v, list):
        return v
    try:
        out = json.loads(v)
    except (TypeError, ValueError):
        return [str(v)]
    return out if isinstance(out, list) else [out]


# What makes two runs the same *configuration*: everything that changes the weights except the seed.
# Imported completions (kind external) form one configuration per model name, `model:NAME`: the file
# imports of one model with different --train-seed are its seeds.
_CONFIGURATION_SQL = ("CASE WHEN r.kind = 'external' THEN 'model:' || r.model_ref ELSE "
                      "COALESCE(json_remove(json_extract(r.config, '$.identity_inputs'), '$.settings.seed'), "
                      "r.identity, r.id) END")


# The alignment stage of a run's lineage: its parent's variant when the parent is an alignment run
# (`dpo` for --method dpo, else the parent's defense: none, vaccine, booster, ...); None otherwise.
_ALIGNED_BY_SQL = ("(SELECT CASE WHEN json_extract(p.config, '$.method') = 'dpo' THEN 'dpo' "
                   "ELSE COALESCE(p.defense, 'none') END FROM run p WHERE p.id = r.parent_run_id AND p.kind = 'align')")


def configuration_key(identity_without_seed: str) -> str:
    """A short, stable id for the configuration of a run (runs that differ only in seed share it).

    `cfg:` and 12 hex digits of the identity without its seed; imported completions keep `model:NAME`.
    """
    import hashlib

    if identity_without_seed.startswith("model:"):
        return identity_without_seed

    return "cfg:" + hashlib.sha256(identity_without_seed.encode()).hexdigest()[:12]


def select_runs(store: Store, where: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
    """Runs matching `where` (oldest first) as dicts of RUN_COLUMNS, plus `has_evaluation` and `configuration`."""
    cond, params = where_sql(where or {})
    cols = ", ".join(f"r.{c}" for c in RUN_COLUMNS)
    sql = (f"SELECT {cols}, EXISTS (SELECT 1 FROM evaluation e WHERE e.run_id = r.id) AS has_evaluation, "
           f"{_CONFIGURATION_SQL} AS configuration, {_ALIGNED_BY_SQL} AS aligned_by FROM run r WHERE {cond} "
           "ORDER BY r.created_at, r.id")
    with store.engine.connect() as conn:
        rows = conn.execute(text(sql), params).all()
    out = []
    for row in rows:
        d = dict(zip(RUN_COLUMNS + ("has_evaluation", "configuration", "aligned_by"), row, strict=True))
        d["tags"] = _decode_tags(d["tags"])
        d["has_evaluation"] = bool(d["has_evaluation"])
        out.append(d)
    lineage = _lineage(store) if any(d["parent_run_id"] for d in out) else {}
    memo: dict[str, str] = {}
    for d in out:
        d["configuration"] = _configuration_of(d["id"], lineage, memo) if d["id"] in lineage \
            else configuration_key(str(d["configuration"]))
    return out


def _lineage(store: Store) -> dict[str, tuple[str | None, str]]:
    """Every run's (parent run id, raw configuration text) (see `_configuration_of`)."""
    sql = f"SELECT r.id, r.parent_run_id, {_CONFIGURATION_SQL} FROM run r"
    with store.engine.connect() as conn:
        return {rid: (parent, str(raw)) for rid, parent, raw in conn.execute(text(sql)).all()}


def _configuration_of(run_id: str, lineage: dict[str, tuple[str | None, str]],
                      memo: dict[str, str] | None = None) -> str:
    """The configuration key of a run, lineage-aware.

    A run fine-tuned from another run starts from that run's weights, which differ per seed of the parent:
    keyed by those weights, the seed-s children of a seeded parent configuration (reasoning SFT, then safety
    alignment; SFT, then GRPO) would each be a configuration of one seed, and no seed variance of a two-stage
    pipeline could be estimated. So a child's key replaces its starting weights with its parent's
    configuration: the children of one parent configuration, trained with the same settings, are the seeds of
    one configuration, however many parent seeds they came from (each lineage is one replicate). A run
    started from a model (no parent) keeps the key of its identity without the seed.
    """
    import json

    memo = {} if memo is None else memo
    if run_id in memo:
        return memo[run_id]
    chain, cur = [], run_id
    while cur is not None and cur not in memo and cur in lineage:  # walk up to a known or parentless run
        chain.append(cur)
        parent = lineage[cur][0]
        cur = parent if parent in lineage and parent not in chain else None
    for rid in reversed(chain):
        parent, raw = lineage[rid]
        if parent is None or parent not in memo or raw.startswith("model:"):
            memo[rid] = configuration_key(raw)
            continue
        try:
            obj = json.loads(raw)
        except ValueError:
            memo[rid] = configuration_key(raw)
            continue
        if isinstance(obj, dict) and "start" in obj:
            obj["start"] = "parent-configuration:" + memo[parent]
        memo[rid] = configuration_key(json.dumps(obj, sort_keys=True, separators=(",", ":")))
    return memo[run_id]


def evaluation_settings(store: Store) -> dict[str, tuple[str, str]]:
    """Per evaluation id: (setting key, description) of what was evaluated, whatever the weights.

    Two evaluations share a setting when they used the same dataset version, split, --limit sample,
    decoding, task and dtype; only numbers from one setting are comparable on one frontier.
    """
    import hashlib
    import json

    sql = ("SELECT e.id, json_remove(json_extract(e.config, '$.identity_fields'), '$.weights'), e.dataset_id, "
           "e.split, d.name FROM evaluation e LEFT JOIN dataset d ON d.id = e.dataset_id")
    with store.engine.connect() as conn:
        rows = conn.execute(text(sql)).all()
    out: dict[str, tuple[str, str]] = {}
    for eid, fields, dataset_id, split, dname in rows:
        try:
            f = json.loads(fields) if fields else {}
        except ValueError:
            f = {}
        if not f:
            f = {"dataset": dataset_id, "split": split}
        key = hashlib.sha256(json.dumps(f, sort_keys=True).encode()).hexdigest()[:10]
        gen = f.get("generation") or {}
        parts = [f"{dname or str(f.get('dataset'))[:15]}/{f.get('split')}",
                 f"limit {f.get('limit') if f.get('limit') else 'all'}"]
        if gen.get("generate"):
            parts.append(f"{gen.get('decoding')} {gen.get('max_new_tokens')} tokens")
        if f.get("task"):
            parts.append(f"task {f['task']}")
        if f.get("v") is not None:
            parts.append(f"eval v{f['v']}")
        out[eid] = (key, ", ".join(parts))
    return out


@dataclass
class MetricValue:
    """One metric of one run, as taken for a table or a frontier axis."""

    name: str
    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    ci_method: str | None = None
    n: int = 0
    n_unscored: int = 0
    category: str = "all"
    preset: str | None = None
    judge_id: str | None = None
    judge_name: str | None = None
    evaluation_id: str | None = None
    created_at: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("name", "value", "ci_low", "ci_high", "ci_method", "n", "n_unscored",
                                              "category", "preset", "judge_id", "judge_name",
                                              "evaluation_id")}


def _in_params(prefix: str, values: Sequence[Any], params: dict[str, Any]) -> str:
    names = []
    for i, v in enumerate(values):
        params[f"{prefix}{i}"] = v
        names.append(f":{prefix}{i}")
    return ", ".join(names)


def latest_metrics(
    store: Store,
    names: Sequence[str],
    *,
    categories: Sequence[str] | None = ("all",),
    judge_ids: Sequence[str] | None = None,
    judge_mode: str = "any",
    preset: str | dict[str, str] | None = None,
    where: dict[str, list[str]] | None = None,
    run_ids: Sequence[str] | None = None,
    evaluation_ids: Sequence[str] | None = None,
) -> dict[tuple[str, str, str, str | None], MetricValue]:
    """The most recent value per (run, metric name, category, judge key) in ONE query.

    "Most recent" is the latest evaluation (by its creation time, then id) that recorded the
    metric; within one evaluation the row under the evaluation's own refusal preset wins.
    `judge_mode`: "any" keys every metric with judge None (judge rows compete with non-judge rows
    as the latest); "split" keeps one entry per judge (judge key = judge id); "none" drops judge
    rows. `preset` keeps only rows under that preset (a dict: per metric name). `judge_ids`
    restricts judge rows to those judges (non-judge rows always pass).
    """
    params: dict[str, Any] = {}
    conds = [f"m.name IN ({_in_params('n', list(names), params)})"]
    if categories is not None:
        conds.append(f"m.category IN ({_in_params('c', list(categories), params)})")
    if judge_mode == "none":
        conds.append("m.judge_id IS NULL")
    elif judge_ids is not None:
        conds.append(f"(m.judge_id IS NULL OR m.judge_id IN ({_in_params('j', list(judge_ids), params)}))")
    if isinstance(preset, str):
        conds.append("m.preset = :preset")
        params["preset"] = preset
    elif preset:  # per metric name
        for i, (pname, pval) in enumerate(sorted(preset.items())):
            conds.append(f"(m.name != :pn{i} OR m.preset = :pv{i})")
            params[f"pn{i}"], params[f"pv{i}"] = pname, pval
    if run_ids is not None:
        conds.append(f"r.id IN ({_in_params('r', list(run_ids), params)})")
    if evaluation_ids is not None:
        conds.append(f"m.evaluation_id IN ({_in_params('e', list(evaluation_ids), params)})")
    if where:
        wcond, wparams = where_sql(where)
        conds.append(wcond)
        params.update(wparams)
    sql = (
        "SELECT r.id, m.name, m.category, m.judge_id, jd.name, m.preset, m.value, m.ci_low, m.ci_high, m.ci_method, "
        "m.n, m.n_unscored, m.evaluation_id, COALESCE(e.created_at, m.created_at) AS t, "
        "CASE WHEN m.preset IS NOT NULL AND m.preset = e.refusal_preset THEN 1 ELSE 0 END AS own, "
        "m.created_at "
        "FROM metric m LEFT JOIN evaluation e ON e.id = m.evaluation_id "
        "JOIN run r ON r.id = COALESCE(m.run_id, e.run_id) "
        "LEFT JOIN judge jd ON jd.id = m.judge_id "
        f"WHERE {' AND '.join(conds)} "
        "ORDER BY t, m.evaluation_id, own, m.created_at, m.id"
    )
    with store.engine.connect() as conn:
        rows = conn.execute(text(sql), params).all()
    out: dict[tuple[str, str, str, str | None], MetricValue] = {}
    for (run_id, name, cat, judge_id, judge_name, mpreset, value, lo, hi, method, n, n_uns, eval_id, t, _own,
         _mt) in rows:
        jkey = judge_id if judge_mode == "split" else None
        out[(run_id, name, cat, jkey)] = MetricValue(
            name=name, value=value, ci_low=lo, ci_high=hi, ci_method=method, n=n or 0, n_unscored=n_uns or 0,
            category=cat,
            preset=mpreset, judge_id=judge_id, judge_name=judge_name, evaluation_id=eval_id, created_at=t,
        )
    return out


def recorded_metrics(store: Store) -> list[str]:
    """Distinct metric names in the store, sorted."""
    with store.engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT DISTINCT name FROM metric ORDER BY name")).all()]


def recorded_categories(store: Store, name: str) -> list[str]:
    with store.engine.connect() as conn:
        return [r[0] for r in conn.execute(
            text("SELECT DISTINCT category FROM metric WHERE name = :n ORDER BY category"), {"n": name}).all()]


def metric_judges(store: Store, name: str, category: str) -> list[tuple[str, str]]:
    """(judge id, judge name) of every judge that recorded `name` in `category`."""
    with store.engine.connect() as conn:
        return [(r[0], r[1]) for r in conn.execute(text(
            "SELECT DISTINCT m.judge_id, j.name FROM metric m LEFT JOIN judge j ON j.id = m.judge_id "
            "WHERE m.name = :n AND m.category = :c AND m.judge_id IS NOT NULL ORDER BY j.name, m.judge_id"),
            {"n": name, "c": category}).all()]


def metric_presets(store: Store, name: str, category: str) -> list[str | None]:
    """Distinct presets `name` was recorded under in `category`."""
    with store.engine.connect() as conn:
        return [r[0] for r in conn.execute(text(
            "SELECT DISTINCT preset FROM metric WHERE name = :n AND category = :c ORDER BY preset"),
            {"n": name, "c": category}).all()]


def resolve_judge(store: Store, spec: str) -> list[tuple[str, str]]:
    """Judges matching a name or an id prefix (with or without `sha256:`); SptError if none/ambiguous."""
    spec = spec.strip()
    if not spec:
        raise SptError("`judge`: empty name; pass a judge name or id prefix (see `spt judge --help`)")
    with store.engine.connect() as conn:
        judges = [(r[0], r[1]) for r in conn.execute(text("SELECT id, name FROM judge ORDER BY name, id")).all()]
    if not judges:
        raise SptError(f"`judge` {spec!r}: the store has no judges yet; run `spt judge` first")
    by_name = [j for j in judges if j[1] == spec]
    if len(by_name) == 1:
        return by_name
    if len(by_name) > 1:
        ids = ", ".join(j[0][:19] for j in by_name)
        raise SptError(f"`judge` {spec!r} names {len(by_name)} judge configurations ({ids}); pass an id prefix")
    bare = spec.removeprefix("sha256:")
    by_id = [j for j in judges if j[0] == spec or j[0].removeprefix("sha256:").startswith(bare)]
    if len(by_id) == 1:
        return by_id
    if len(by_id) > 1:
        raise SptError(f"`judge` {spec!r} is an ambiguous id prefix ({len(by_id)} judges); give more characters")
    names = ", ".join(sorted({j[1] for j in judges}))
    raise SptError(f"`judge` {spec!r}: no judge with that name or id; judges: {names}")
