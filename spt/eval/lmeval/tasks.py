"""Benchmark names and task YAML paths -> lm-eval tasks and groups, with the overrides and identity spt records.

A benchmark is an lm-eval task, group or tag name (`gsm8k`, `mmlu`, `arc_easy`) or a path to a task YAML
(its folder is added to lm-eval's include path, so sibling `include:` files and groups resolve). Loading a
task loads its data (lm-eval does that when it builds the task), so everything about the documents is
known before a model is loaded: a task's identity is its lm-eval version, a hash of its resolved
configuration (the YAML with its includes; functions by their source) and a hash of the documents that
will be evaluated, so an edited YAML or a changed data file is a different evaluation, never a silent mix.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spt.errors import SptError

# lm-eval's own defaults in simple_evaluate (random, numpy, torch and few-shot seeds)
DEFAULT_SEEDS = {"random": 0, "numpy": 1234, "torch": 1234, "fewshot": 1234}


@dataclass
class Benchmark:
    """One requested benchmark: an lm-eval name, or a YAML path (`path` set)."""

    spec: str
    path: Path | None = None

    @property
    def key(self) -> str:
        return str(self.path) if self.path else self.spec


@dataclass
class LoadedTasks:
    """What lm-eval built for the requested benchmarks: leaf tasks by name and groups by name."""

    benchmarks: list[Benchmark]
    tasks: dict[str, Any]  # leaf task name -> lm_eval Task
    groups: dict[str, Any] = field(default_factory=dict)  # group name -> lm_eval Group
    identities: dict[str, dict[str, Any]] = field(default_factory=dict)  # leaf task -> identity fields


def parse_benchmarks(names: list[str] | str | None) -> list[Benchmark]:
    """`["gsm8k,arc_easy", "my/task.yaml"]` -> benchmarks; SptError for an empty list or a missing YAML."""
    if isinstance(names, str):
        names = [names]
    out: list[Benchmark] = []
    for raw in names or []:
        for part in str(raw).split(","):
            spec = part.strip()
            if not spec:
                continue
            looks_like_path = spec.endswith((".yaml", ".yml")) or "/" in spec or spec.startswith(".")
            if looks_like_path:
                p = Path(spec).expanduser()
                if not p.is_file():
                    raise SptError(f"benchmark YAML {spec} does not exist; pass an lm-eval task name or the path of "
                                   "a task YAML")
                out.append(Benchmark(spec, p.resolve()))
            else:
                out.append(Benchmark(spec))
    if not out:
        raise SptError("no benchmark given; pass `benchmarks` (lm-eval task or group names, or task YAML paths), "
                       "e.g. gsm8k,arc_easy")
    keys = [b.key for b in out]
    dup = next((k for k in keys if keys.count(k) > 1), None)
    if dup:
        raise SptError(f"benchmark {dup!r} is given twice; name each once")
    return out


def _task_manager(benchmarks: list[Benchmark], include_defaults: bool) -> Any:
    from lm_eval.tasks import TaskManager

    include = sorted({str(b.path.parent) for b in benchmarks if b.path is not None})
    return TaskManager(include_path=include or None, include_defaults=include_defaults)


def _unknown(tm: Any, spec: str) -> SptError:
    import difflib

    known = list(getattr(tm, "all_tasks", []) or [])
    close = difflib.get_close_matches(spec, known, n=3, cutoff=0.75)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return SptError(f"unknown lm-eval task or group {spec!r}{hint}; list them with `lm-eval ls tasks`, or pass the "
                    "path of a task YAML")


def _spec_for(tm: Any, b: Benchmark) -> str:
    """What to ask lm-eval for: a name, or a YAML path by the name it registers from its folder.

    lm-eval 0.4.13 loads a task YAML by path but fails on a group YAML by path (`unhashable type: 'list'`);
    by name (its folder is on the include path) both load, so a YAML whose name lm-eval indexed from this
    very file is loaded by that name.
    """
    if b.path is None:
        return b.spec
    name = _yaml_name(b.path)
    entry = (getattr(tm, "task_index", None) or {}).get(name) if name else None
    yaml_path = getattr(entry, "yaml_path", None)
    if yaml_path and Path(yaml_path).resolve() == b.path:
        return name
    return str(b.path)


def _yaml_name(path: Path) -> str | None:
    """The `group:` (else `task:`) name a task YAML declares; lm-eval's `!function` tags are not evaluated."""
    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    _Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506 (safe loader subclass)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(data, dict):
        return None
    name = data.get("group") if isinstance(data.get("group"), str) else data.get("task")
    return name if isinstance(name, str) else None


def load_tasks(benchmarks: list[Benchmark]) -> LoadedTasks:
    """Build lm-eval's tasks and groups for `benchmarks` (loading their data); SptError on any failure.

    When every benchmark is a YAML path, lm-eval's own task index (~5 s to scan) is skipped unless the YAMLs
    refer to built-in tasks, which a retry with the defaults then finds.
    """
    only_paths = all(b.path is not None for b in benchmarks)
    try:
        return _load(benchmarks, include_defaults=not only_paths)
    except _NotIndexed:
        return _load(benchmarks, include_defaults=True)


class _NotIndexed(Exception):
    """A YAML names a task lm-eval did not index without its built-in tasks: load again with them."""


def _load(benchmarks: list[Benchmark], include_defaults: bool) -> LoadedTasks:
    from lm_eval.api.group import Group

    tm = _task_manager(benchmarks, include_defaults)
    tasks: dict[str, Any] = {}
    groups: dict[str, Any] = {}
    for b in benchmarks:
        spec = _spec_for(tm, b)
        try:
            loaded = tm.load([spec])
        except KeyError:
            if not include_defaults:
                raise _NotIndexed() from None
            raise (_unknown(tm, b.spec) if b.path is None else SptError(
                f"benchmark YAML {b.spec} does not define a task or group lm-eval can load (or names one that "
                "does not exist); check its `task:` / `group:` keys")) from None
        except SptError:
            raise
        except Exception as e:  # lm-eval raises many kinds (a dataset that is not cached offline, a bad YAML ...)
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise SptError(f"lm-eval could not load benchmark {b.spec!r}: {type(e).__name__}: {first}") from None
        for name, task in loaded["tasks"].items():
            if name in tasks and tasks[name] is not task:
                raise SptError(f"task {name!r} is part of two of the requested benchmarks; name it once")
            tasks[name] = task
        for name, group in loaded["groups"].items():
            if isinstance(group, Group):
                groups[name] = group
    if not tasks:
        raise SptError(f"the benchmarks {', '.join(b.spec for b in benchmarks)} contain no task")
    return LoadedTasks(benchmarks=benchmarks, tasks=dict(sorted(tasks.items())), groups=groups)


def apply_overrides(loaded: LoadedTasks, *, num_fewshot: int | None, gen_kwargs: dict[str, Any] | None,
                    fewshot_seed: int | None) -> None:
    """The per-task settings `lm_eval.simple_evaluate` applies, applied the same way (so numbers match it).

    `num_fewshot` overrides a task's default unless the task fixes 0 shots in its YAML (lm-eval's rule);
    a task without a default gets 0. `gen_kwargs` update generate_until tasks' generation settings.
    """
    for task in loaded.tasks.values():
        if task.get_config("output_type") == "generate_until" and gen_kwargs:
            task.set_config(key="generation_kwargs", value=dict(gen_kwargs), update=True)
        if num_fewshot is not None:
            if task.get_config("num_fewshot") != 0:
                task.set_config(key="num_fewshot", value=num_fewshot)
        elif task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=fewshot_seed)


def _canonical(obj: Any) -> str:
    def default(o: Any) -> Any:
        if callable(o):
            import inspect

            try:
                src = inspect.getsource(o)
            except (OSError, TypeError):
                src = getattr(o, "__qualname__", type(o).__name__)
            return {"callable": getattr(o, "__qualname__", str(type(o))), "source_sha256": _sha(src)}
        if isinstance(o, (set, frozenset)):
            return sorted(map(str, o))
        if hasattr(o, "item"):  # numpy scalars
            return o.item()
        return str(o)

    return json.dumps(obj, sort_keys=True, default=default, ensure_ascii=False)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def config_hash(task: Any) -> str:
    """A hash of the task's resolved configuration, without where its YAML happens to sit on this machine."""
    cfg = dict(task.dump_config())
    meta = dict(cfg.get("metadata") or {})
    meta.pop("config_source", None)
    cfg["metadata"] = meta
    return _sha(_canonical(cfg))


def eval_split(task: Any) -> str:
    """The split lm-eval evaluates a task on (test, else validation, else the few-shot split)."""
    for key in ("test_split", "validation_split", "training_split", "fewshot_split"):
        if task.get_config(key):
            return str(task.get_config(key))
    return "test"


def doc_hash(doc: Any) -> str:
    """lm-eval's own per-sample `doc_hash` (the same string its `log_samples` output carries)."""
    from lm_eval.utils import handle_non_serializable, hash_string

    return hash_string(json.dumps(doc, indent=2, default=handle_non_serializable, ensure_ascii=False))


def n_docs(task: Any, limit: int | None) -> int:
    n = len(task.eval_docs)
    return min(n, limit) if limit else n


def task_identities(loaded: LoadedTasks, limit: int | None) -> dict[str, dict[str, Any]]:
    """Per leaf task: version, output type, config hash, and a hash of the documents to evaluate.

    Computed before any override is applied, so the hash is the task as its YAML defines it; the
    overrides (shots, generation settings) enter the evaluation identity on their own.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, task in loaded.tasks.items():
        n = n_docs(task, limit)
        hashes = [doc_hash(doc) for _i, doc in zip(range(n), task.eval_docs, strict=False)]
        out[name] = {"version": str(task.VERSION), "output_type": task.get_config("output_type"),
                     "config": config_hash(task), "split": eval_split(task), "n_docs": n,
                     "docs": _sha("\n".join(hashes))}
    loaded.identities = out
    return out


def group_tree(loaded: LoadedTasks) -> dict[str, dict[str, Any]]:
    """Per group: its leaf tasks and the aggregations it declares (for the group's metric rows)."""
    out: dict[str, dict[str, Any]] = {}
    for name, group in loaded.groups.items():
        aggs = []
        for agg in group.aggregate_metric_list or []:
            aggs.append({"metric": agg.metric, "aggregation": getattr(agg, "aggregation", "mean"),
                         "weight_by_size": bool(getattr(agg, "weight_by_size", True)),
                         "filter_list": list(agg.filter_list) if getattr(agg, "filter_list", None) else None})
        out[name] = {"tasks": sorted(t.task_name for t in group.get_all_tasks()), "aggregate": aggs,
                     "version": str(group.version)}
    return out
