"""`benchmark`: lm-evaluation-harness tasks (MMLU, GSM8K, ARC, HellaSwag, ...) through `spt.eval.lmeval`.

Units for paired comparisons are documents (`TASK/DOC_ID/DOC_HASH`, so only the same document of the
same task pairs); each metric of each task (and each group metric, over its leaves' documents) has the
documents' per-sample values. Each document is its own cluster, or with `cluster="task"` its task (the
subject of an MMLU-style group), so intervals can resample subjects instead of questions.
"""

from __future__ import annotations

from typing import Any

from spt.eval.kinds.base import UnitValues
from spt.progress import ProgressFn
from spt.store.engine import Store


class BenchmarkKind:
    name = "benchmark"
    summary = "lm-evaluation-harness tasks and groups (accuracy, exact match, ...) per document"

    def run(self, store: Store, target: str, config: Any, progress: ProgressFn | None = None) -> Any:
        from spt.eval.lmeval.run import evaluate_benchmark

        return evaluate_benchmark(store, target, config, progress=progress)

    def recompute(self, store: Store, evaluation: Any) -> Any:
        """Rewrite the metric rows from the stored samples and task settings (no model, no lm-eval tasks).

        The rows keep their ids, so a changed aggregation or interval method updates them in place.
        """
        from spt.eval.lmeval.run import compute_metrics, stored_metrics, write_metrics
        from spt.eval.recompute import Recomputed, diff_metrics

        before = {(m["name"], m["category"]): m for m in stored_metrics(store, evaluation.id)}
        metrics = compute_metrics(store, evaluation)
        write_metrics(store, evaluation, metrics, finish=False)
        changed, added = diff_metrics(before, metrics)
        return Recomputed(evaluation.id, evaluation.run_id, len(metrics), 0, changed, added, [])

    def unit_values(self, store: Store, evaluation_id: str, **options: Any) -> UnitValues:
        """Per metric (the stored metric names), each document's value; see the module doc.

        Only per-document means and rates have unit values: a corpus-level metric (bleu, perplexity) is not
        a mean of its documents' values and is left out. `cluster`: "document" (default) or "task".
        """
        from spt.errors import SptError
        from spt.eval.lmeval.metrics import metric_name, value_kind
        from spt.eval.lmeval.run import stored_samples
        from spt.store.models import Evaluation

        cluster = options.get("cluster", "document")
        if cluster not in ("document", "task"):
            raise SptError(f"`cluster` must be 'document' or 'task' for benchmark evaluations (got {cluster!r})")
        with store.session() as s:
            ev = s.get(Evaluation, evaluation_id)
        if ev is None:
            raise SptError(f"no evaluation {evaluation_id!r}")
        cfg = ev.config or {}
        settings = cfg.get("task_settings") or {}
        groups = (cfg.get("identity_fields") or {}).get("groups") or {}
        out = UnitValues()
        per_task: dict[str, dict[str, dict[str, Any]]] = {}
        for task, samples in stored_samples(store, evaluation_id).items():
            info = settings.get(task, {})
            for smp in samples:
                unit = smp["unit"]
                out.clusters[unit] = unit if cluster == "document" else task
                for fk, ms in (smp.get("metrics") or {}).items():
                    for metric, v in ms.items():
                        if (info.get("aggregation") or {}).get(metric, "mean") != "mean":
                            continue
                        name = metric_name(task, metric, fk, info.get("default_filter", "none"))
                        out.values.setdefault(name, {})[unit] = v
                        per_task.setdefault(task, {}).setdefault(f"{metric},{fk}", {})[unit] = v
        for group, g in groups.items():
            leaves = [t for t in g.get("tasks", []) if t in per_task]
            defaults = {settings.get(t, {}).get("default_filter", "none") for t in leaves}
            default = defaults.pop() if len(defaults) == 1 else "none"
            for agg in g.get("aggregate") or []:
                if not agg.get("weight_by_size", True):
                    continue  # an unweighted mean of subtasks is not a mean over documents
                for key in sorted({k for t in leaves for k in per_task[t] if k.split(",", 1)[0] == agg["metric"]}):
                    metric, fk = key.split(",", 1)
                    if agg.get("filter_list") and fk not in agg["filter_list"]:
                        continue
                    vals = out.values.setdefault(metric_name(group, metric, fk, default), {})
                    for t in leaves:
                        vals.update(per_task[t].get(key, {}))
        for name, vals in out.values.items():
            kind = value_kind([v for v in vals.values() if v is not None])
            if kind is None:
                out.values[name] = {u: None for u in vals}
                kind = "mean"
            out.kinds[name] = kind
        return out


KIND = BenchmarkKind()
