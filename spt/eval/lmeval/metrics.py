"""Metric rows of a benchmark evaluation, recomputed from its stored per-sample values.

Naming: `TASK/METRIC` for the task's default filter (its first filter in lm-eval's `filter_list`, or
`none` when it has none), `TASK/METRIC,FILTER` otherwise, with lm-eval's own `METRIC,FILTER` spelling:
`gsm8k/exact_match` (strict-match, gsm8k's first filter) and `gsm8k/exact_match,flexible-extract`.
Every row is category `all`; a group's rows (`mmlu/acc`) come with one row per leaf task as category.

Values and intervals (all through `spt.metrics.estimate`): a metric lm-eval averages (`mean`) whose
per-sample values are all 0/1 is a rate (exact Clopper-Pearson interval); other averaged metrics are
means (a bootstrap over documents). A group that weights by size pools its leaves' documents (the same
number as lm-eval's size-weighted mean; the bootstrap resamples leaf tasks); one that does not is the
plain mean of its leaves' values, bootstrapped over leaves. Corpus-level aggregations (bleu, perplexity,
f1 over all documents ...) are computed with lm-eval's own aggregation function and have no interval
(`ci_method` None, the reason in `meta.interval`): spt does not bootstrap corpus statistics.
`n` counts documents with a value; `n_unscored` documents without one (a NaN, or a missing key).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from spt.metrics import MEAN, RATE, estimate

NO_INTERVAL = "none: corpus-level aggregation {agg}; spt bootstraps only per-document means"


def metric_name(task: str, metric: str, filter_name: str, default_filter: str) -> str:
    return f"{task}/{metric}" if filter_name == default_filter else f"{task}/{metric},{filter_name}"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float))  # bools are ints: 0/1 values


def value_kind(values: Sequence[Any]) -> str | None:
    """RATE for 0/1 values, MEAN for other numbers, None when some value is not a number (corpus-level)."""
    if not all(_is_number(v) for v in values):
        return None
    return RATE if all(float(v) in (0.0, 1.0) for v in values) else MEAN


def _row(name: str, category: str, values: list[Any], n_missing: int, agg: str, meta: dict[str, Any],
         clusters: list[str] | None = None) -> dict[str, Any]:
    kind = value_kind(values) if agg == "mean" else None
    if kind is not None:
        est = estimate([float(v) for v in values], kind, clusters)
        value, lo, hi, method, n = est.value, est.ci_low, est.ci_high, est.method, est.n
        meta = {**meta, "kind": kind}
    else:
        value = _corpus_value(agg, values) if values else None
        lo = hi = method = None
        n = len(values)
        meta = {**meta, "interval": NO_INTERVAL.format(agg=agg)}
    return {"name": name, "category": category, "value": value, "ci_low": lo, "ci_high": hi, "ci_method": method,
            "n": n, "n_unscored": n_missing, "preset": None, "meta": meta}


def _corpus_value(agg: str, values: list[Any]) -> float | None:
    from lm_eval.api.registry import get_aggregation

    fn = get_aggregation(agg)
    if fn is None:
        return None
    items = [tuple(v) if isinstance(v, list) else v for v in values]
    out = fn(items)
    return float(out) if out is not None else None


def task_values(samples: list[dict[str, Any]]) -> dict[tuple[str, str], list[tuple[str, Any]]]:
    """(metric, filter) -> [(unit, value or None)] in document order, from samples' `metrics` dicts."""
    out: dict[tuple[str, str], list[tuple[str, Any]]] = {}
    keys: list[tuple[str, str]] = []
    for s in samples:
        for fk, ms in (s["metrics"] or {}).items():
            for m in ms:
                if (m, fk) not in out:
                    out[(m, fk)] = []
                    keys.append((m, fk))
    for s in samples:
        for m, fk in keys:
            out[(m, fk)].append((s["unit"], ((s["metrics"] or {}).get(fk) or {}).get(m)))
    return out


def benchmark_metrics(samples: dict[str, list[dict[str, Any]]], tasks: dict[str, dict[str, Any]],
                      groups: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Metric rows (see module doc). `samples[task]`: [{"unit", "metrics": {filter: {metric: value}}}];
    `tasks[task]`: its `default_filter`, `aggregation` and `higher_is_better` as recorded in the evaluation."""
    rows: list[dict[str, Any]] = []
    per_task: dict[str, dict[tuple[str, str], list[tuple[str, Any]]]] = {}
    for task, info in tasks.items():
        vals = task_values(samples.get(task, []))
        per_task[task] = vals
        for (metric, fk), pairs in vals.items():
            scored = [v for _u, v in pairs if v is not None]
            agg = (info.get("aggregation") or {}).get(metric, "mean")
            meta = {"task": task, "metric": metric, "filter": fk, "aggregation": agg,
                    "higher_is_better": (info.get("higher_is_better") or {}).get(metric),
                    "lm_eval_key": f"{metric},{fk}"}
            rows.append(_row(metric_name(task, metric, fk, info.get("default_filter", "none")), "all", scored,
                             len(pairs) - len(scored), agg, meta))
    for group, ginfo in groups.items():
        rows += _group_rows(group, ginfo, per_task, tasks)
    return rows


def _group_rows(group: str, ginfo: dict[str, Any], per_task: dict[str, Any], tasks: dict[str, dict[str, Any]]
                ) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    leaves = [t for t in ginfo.get("tasks", []) if t in per_task]
    defaults = {tasks[t].get("default_filter", "none") for t in leaves}
    default = defaults.pop() if len(defaults) == 1 else "none"
    for agg in ginfo.get("aggregate") or []:
        metric = agg["metric"]
        filters = agg.get("filter_list") or sorted({fk for t in leaves for (m, fk) in per_task[t] if m == metric})
        for fk in filters:
            have = [t for t in leaves if (metric, fk) in per_task[t]]
            if not have:
                continue
            name = metric_name(group, metric, fk, default)
            meta = {"group": group, "metric": metric, "filter": fk, "aggregation": "mean",
                    "weight_by_size": agg.get("weight_by_size", True), "tasks": have,
                    "higher_is_better": next(((tasks[t].get("higher_is_better") or {}).get(metric) for t in have),
                                             None), "lm_eval_key": f"{metric},{fk}"}
            pooled = [(t, v) for t in have for _u, v in per_task[t][(metric, fk)]]
            scored = [(t, v) for t, v in pooled if v is not None]
            if agg.get("weight_by_size", True):
                rows.append(_row(name, "all", [v for _t, v in scored], len(pooled) - len(scored), "mean", meta,
                                 clusters=[t for t, _v in scored]))
            else:
                leaf_means = []
                for t in have:
                    vs = [float(v) for _u, v in per_task[t][(metric, fk)] if v is not None]
                    if vs:
                        leaf_means.append(sum(vs) / len(vs))
                est = estimate(leaf_means, MEAN)
                rows.append({"name": name, "category": "all", "value": est.value, "ci_low": est.ci_low,
                             "ci_high": est.ci_high, "ci_method": est.method, "n": len(scored),
                             "n_unscored": len(pooled) - len(scored), "preset": None,
                             "meta": {**meta, "kind": MEAN, "n_subtasks": len(leaf_means),
                                      "interval": "bootstrap over subtasks (unweighted mean of subtask values)"}})
            for t in have:
                vs = [v for _u, v in per_task[t][(metric, fk)]]
                sc = [v for v in vs if v is not None]
                rows.append(_row(name, t, sc, len(vs) - len(sc), "mean", {**meta, "task": t}))
    return rows
