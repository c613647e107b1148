"""`spt evaluate TARGET --benchmark NAMES`: lm-eval tasks on a run, checkpoint, model reference or endpoint.

The evaluation is an `Evaluation` row with `config["kind"] = "benchmark"` and a content identity over
what changes its numbers: the weights, each task's lm-eval version, configuration hash and documents
hash, `limit`, `num_fewshot`, the chat template (flag and template hash), the system instruction, the
generation settings, the seeds, the engine and the lm-eval version. Its documents are `Item`s (label
`benchmark`, category = the task, prompt = the rendered prompt, answer = the target) in one `Dataset`
per task (kind `benchmark`); each document's output is a `Generation` (the generated text, or for
log-likelihood tasks the chosen answer) with its choice log-likelihoods and per-sample metric values in
`meta`; the metrics are `Metric` rows (`spt.eval.lmeval.metrics`).

Resume: a finished evaluation is found by its identity before any model is loaded. An unfinished one
(killed, or failed) keeps the samples committed chunk by chunk, and a re-run runs only the documents
without one (lm-eval builds every document's prompt either way, so few-shot examples do not change).
Everything the user can get wrong is checked before anything is written.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from types import SimpleNamespace
from typing import Any

from spt.errors import SptError
from spt.progress import ProgressFn, report
from spt.store import content_id, new_id, queries
from spt.store.engine import Store
from spt.store.models import Dataset, DatasetItem, Evaluation, Generation, Item, Metric, utcnow

KIND = "benchmark"
BENCH_VERSION = 1
BATCH_SIZES = ("auto",)


@dataclass
class BenchmarkConfig:
    """Settings of one benchmark evaluation (all but batch size, device and chunk size enter its identity)."""

    benchmarks: list[str] = field(default_factory=list)  # lm-eval task/group names or task YAML paths
    limit: int | None = None  # the first N documents of each task (lm-eval's --limit)
    num_fewshot: int | None = None  # None: each task's default
    apply_chat_template: bool = False
    fewshot_as_multiturn: bool = True  # with the chat template: few-shot examples as turns (lm-eval's default)
    system_instruction: str | None = None
    gen_kwargs: dict[str, Any] | str | None = None  # generate_until overrides, e.g. "max_gen_toks=64,temperature=0"
    engine: str = "hf"
    # openai: base_url, api_key_env, max_connections, tokenizer
    engine_options: dict[str, Any] = field(default_factory=dict)
    batch_size: int | str = 8
    dtype: str | None = None
    device: str | None = None
    seeds: dict[str, int] | None = None  # random, numpy, torch, fewshot (lm-eval's defaults when None)
    chunk_size: int = 64  # documents run and committed together
    reasoning: str | None = None  # none | think | tags:OPEN,ANSWER: score generated answers with the thinking removed

    def validate(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise SptError(f"`limit` must be at least 1 (got {self.limit}); omit it to evaluate every document")
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise SptError(f"`num_fewshot` must be 0 or more (got {self.num_fewshot}); omit it for each task's default")
        bs = self.batch_size
        if not (bs in BATCH_SIZES or (isinstance(bs, int) and not isinstance(bs, bool) and bs >= 1)):
            raise SptError(f"`batch_size` must be a positive integer or 'auto' (got {bs!r})")
        if self.chunk_size < 1:
            raise SptError(f"`chunk_size` must be at least 1 (got {self.chunk_size})")
        if self.reasoning is not None:
            from spt.eval.reasoning import parse_reasoning

            parse_reasoning(self.reasoning)  # an unknown format is an error before anything loads
        if self.fewshot_as_multiturn and not self.apply_chat_template:
            self.fewshot_as_multiturn = False  # only meaningful with a chat template; lm-eval ignores it otherwise
        if self.dtype is not None:
            from spt.models.load import DTYPES

            if self.dtype not in DTYPES:
                raise SptError(f"unknown `dtype` {self.dtype!r}; use one of {', '.join(DTYPES)}")


@dataclass
class BenchmarkResult:
    """One benchmark evaluation as `evaluate_benchmark` left it.

    `n_docs[task]`: documents evaluated per leaf task; `n_run`: documents run now; `n_reused`: documents
    whose samples an earlier attempt had committed. `metrics`: the stored metric rows, sorted by name.
    """

    evaluation_id: str
    identity: str
    run_id: str
    checkpoint_id: str | None
    tasks: list[str]
    groups: list[str]
    status: str
    n_docs: dict[str, int]
    n_run: int
    n_reused: int
    engine: str
    lm_eval_version: str
    metrics: list[dict[str, Any]] = field(default_factory=list)

    @property
    def reused(self) -> bool:
        return self.n_run == 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "kind": KIND}


def parse_gen_kwargs(value: dict[str, Any] | str | None) -> dict[str, Any] | None:
    """`"max_gen_toks=64,temperature=0"` -> a dict, with lm-eval's own parser (its --gen_kwargs syntax)."""
    if value is None or value == "" or value == {}:
        return None
    if isinstance(value, dict):
        return dict(value)
    import re

    from lm_eval.utils import simple_parse_args_string

    for part in str(value).split(","):
        key = part.partition("=")[0].strip()
        if "=" not in part or not re.fullmatch(r"[A-Za-z_]\w*", key):
            raise SptError(f"`gen_kwargs` {value!r}: {part.strip()!r} is not KEY=VALUE; e.g. "
                           "max_gen_toks=64,temperature=0")
    try:
        out = simple_parse_args_string(str(value))
    except ValueError as e:
        raise SptError(f"`gen_kwargs` {value!r} is not KEY=VALUE,...: {e}") from None
    return out or None


# ---------------------------------------------------------------------------------------------
# Targets


def resolve_benchmark_target(store: Store, target: str, config: BenchmarkConfig) -> Any:
    """spt's `resolve_target` for local engines; for `openai`, the served model (a base run per model and host)."""
    from spt.eval.evaluate import resolve_served_target, resolve_target

    if config.engine != "openai":
        if target.startswith("openai:"):
            raise SptError(f"TARGET {target!r} is a served model; pass `engine` openai with its `base_url`")
        return resolve_target(store, target)
    return resolve_served_target(store, target, config.engine_options.get("base_url"))


# ---------------------------------------------------------------------------------------------
# Rows


def _unit(task: str, doc_id: int, doc_hash: str) -> str:
    """A document across evaluations (the unit `spt compare` pairs): task, position and content."""
    return f"{task}/{doc_id}/{doc_hash[:16]}"


def _item_row(d: Any) -> dict[str, Any]:
    ident = {"kind": KIND, "task": d.task, "doc_id": d.doc_id, "doc_hash": d.doc_hash, "prompt_hash": d.prompt_hash,
             "target_hash": d.target_hash}
    from spt.eval.lmeval.samples import json_safe

    return {"id": content_id(ident), "prompt": d.prompt, "response": None, "category": d.task, "label": KIND,
            "answer": d.answer, "meta": {"task": d.task, "doc_id": d.doc_id, "doc_hash": d.doc_hash,
                                         "prompt_hash": d.prompt_hash, "target_hash": d.target_hash,
                                         "target": json_safe(d.target), "choices": d.choices, "doc": json_safe(d.doc),
                                         "output_type": d.output_type}}


def _insert(store: Store, table: Any, rows: list[dict[str, Any]]) -> int:
    from sqlalchemy.dialects.sqlite import insert

    n = 0
    for k in range(0, len(rows), 500):
        with store.write() as s:
            res = s.execute(insert(table).values(rows[k:k + 500]).on_conflict_do_nothing())
            n += res.rowcount or 0
    return n


def _store_documents(store: Store, task: str, split: str, docs: list[Any], source: dict[str, Any]) -> tuple[str, dict]:
    """Items and the task's Dataset (content rows, shared by every evaluation that renders them alike)."""
    items = [_item_row(d) for d in docs]
    ds_id = content_id({"kind": KIND, "task": task, "items": [it["id"] for it in items]})
    _insert(store, Item, items)
    _insert(store, Dataset, [{"id": ds_id, "name": f"lm-eval:{task}", "kind": KIND, "n_items": len(items),
                              "source": source, "meta": {"task": task, "split": split}, "created_at": utcnow()}])
    _insert(store, DatasetItem, [{"dataset_id": ds_id, "item_id": it["id"], "split": split, "position": d.doc_id}
                                 for it, d in zip(items, docs, strict=True)])
    return ds_id, {d.doc_id: it["id"] for it, d in zip(items, docs, strict=True)}


def _generation_row(evaluation_id: str, item_id: str, rec: Any) -> dict[str, Any]:
    d = rec.doc
    meta = {"task": d.task, "doc_id": d.doc_id, "unit": _unit(d.task, d.doc_id, d.doc_hash), "doc_hash": d.doc_hash,
            "prompt_hash": d.prompt_hash, "target_hash": d.target_hash, "output_type": d.output_type,
            "metrics": rec.metrics, **rec.meta}
    return {"id": new_id(), "evaluation_id": evaluation_id, "item_id": item_id, "prompt": d.prompt,
            "response": rec.response, "n_prompt_tokens": None, "n_new_tokens": None, "latency_s": None,
            "finish_reason": None, "meta": meta, "created_at": utcnow()}


def stored_samples(store: Store, evaluation_id: str) -> dict[str, list[dict[str, Any]]]:
    """Per task, the stored samples in document order: {"unit", "doc_id", "metrics", ...} (from Generation.meta)."""
    from sqlmodel import select

    with store.session() as s:
        metas = s.exec(select(Generation.meta).where(Generation.evaluation_id == evaluation_id)).all()
    out: dict[str, list[dict[str, Any]]] = {}
    for m in metas:
        if m and m.get("task") is not None:
            out.setdefault(m["task"], []).append(m)
    for v in out.values():
        v.sort(key=lambda m: m.get("doc_id", 0))
    return out


def _done_doc_ids(store: Store, evaluation_id: str) -> dict[str, set[int]]:
    return {t: {m["doc_id"] for m in ms} for t, ms in stored_samples(store, evaluation_id).items()}


def write_metrics(store: Store, evaluation: Evaluation, metrics: list[dict[str, Any]], *, finish: bool) -> None:
    """Upsert the metric rows under their content ids (`metric_id`) and, with `finish`, mark the evaluation done."""
    from spt.eval.evaluate import metric_id

    with store.write() as s:
        for m in metrics:
            s.merge(Metric(id=metric_id(evaluation.id, m["name"], m["category"], None), run_id=evaluation.run_id,
                           evaluation_id=evaluation.id, name=m["name"], category=m["category"], preset=None,
                           value=m["value"], ci_low=m["ci_low"], ci_high=m["ci_high"], ci_method=m["ci_method"],
                           n=m["n"], n_unscored=m["n_unscored"], meta={**m["meta"], "kind": KIND,
                                                                         "value_kind": m["meta"].get("kind")}))
        if finish:
            ev = s.get(Evaluation, evaluation.id)
            ev.status, ev.error, ev.finished_at = "done", None, utcnow()
            ev.lease_owner = ev.lease_heartbeat = None
            s.add(ev)


def compute_metrics(store: Store, evaluation: Evaluation) -> list[dict[str, Any]]:
    """The metric rows of `evaluation` from its stored samples and recorded task settings (no model, no data)."""
    from spt.eval.lmeval.metrics import benchmark_metrics

    cfg = evaluation.config or {}
    return benchmark_metrics(stored_samples(store, evaluation.id), cfg.get("task_settings") or {},
                             (cfg.get("identity_fields") or {}).get("groups") or {})


def stored_metrics(store: Store, evaluation_id: str) -> list[dict[str, Any]]:
    with store.session() as s:
        rows = queries.evaluation_metrics(s, evaluation_id)
    keys = ("name", "category", "value", "ci_low", "ci_high", "ci_method", "n", "n_unscored")
    out = [{k: getattr(m, k) for k in keys} for m in rows]
    return sorted(out, key=lambda m: (m["name"], m["category"] != "all", m["category"]))


# ---------------------------------------------------------------------------------------------
# The evaluation


def _task_settings(loaded: Any) -> dict[str, dict[str, Any]]:
    """Per task what scoring its stored samples needs later without lm-eval's task objects."""
    out = {}
    for name, task in loaded.tasks.items():
        filters = [f.name for f in getattr(task, "_filters", []) or []]
        aggs = {m: getattr(fn, "__name__", "mean") for m, fn in (task.aggregation() or {}).items()}
        out[name] = {"default_filter": filters[0] if filters else "none", "filters": filters or ["none"],
                     "aggregation": aggs, "higher_is_better": dict(task.higher_is_better() or {}),
                     "num_fewshot": task.get_config("num_fewshot"), "alias": task.get_config("task_alias") or name}
    return out


def _chat_template_hash(spec: Any, apply_chat_template: bool) -> str | None:
    if not apply_chat_template or spec.engine == "openai":
        return None
    from spt.models.chat import chat_template_hash
    from spt.models.load import load_tokenizer

    tok = load_tokenizer(spec.tokenizer_path)
    if not tok.chat_template:
        raise SptError(f"`apply_chat_template` is set but the tokenizer at {spec.tokenizer_path} has no chat template")
    return chat_template_hash(tok)


def _result(ev: Evaluation, run_id: str, loaded_names: list[str], groups: list[str], n_docs: dict[str, int],
            n_run: int, n_reused: int, engine: str, version: str, store: Store) -> BenchmarkResult:
    return BenchmarkResult(evaluation_id=ev.id, identity=ev.identity, run_id=run_id, checkpoint_id=ev.checkpoint_id,
                           tasks=loaded_names, groups=groups, status=ev.status, n_docs=n_docs, n_run=n_run,
                           n_reused=n_reused, engine=engine, lm_eval_version=version,
                           metrics=stored_metrics(store, ev.id))


def evaluate_benchmark(store: Store, target: str, config: BenchmarkConfig | None = None,
                       progress: ProgressFn | None = None) -> BenchmarkResult:
    """Evaluate TARGET on lm-eval benchmarks; resumable (see the module doc).

    `progress` gets "load benchmarks" (stages), "build prompts" (tasks) and "benchmark TASK" reports
    (documents done of the task's total, after each committed chunk).
    """
    from spt.eval.evaluate import _claim_evaluation
    from spt.eval.lmeval import lm_eval_version, quiet_lm_eval, require_lm_eval
    from spt.eval.lmeval.model import ModelSpec, build_lm, check_engine
    from spt.eval.lmeval.model import identity as engine_identity
    from spt.eval.lmeval.tasks import (
        DEFAULT_SEEDS,
        apply_overrides,
        group_tree,
        load_tasks,
        parse_benchmarks,
        task_identities,
    )
    from spt.store.lease import Heartbeat, my_owner

    config = config or BenchmarkConfig()
    config.validate()
    benchmarks = parse_benchmarks(config.benchmarks)  # a missing YAML is an error even without lm-eval
    require_lm_eval()
    quiet_lm_eval()
    gen_kwargs = parse_gen_kwargs(config.gen_kwargs)
    seeds = {**DEFAULT_SEEDS, **(config.seeds or {})}
    version = lm_eval_version()

    # 1. Everything read-only and checkable: the target, the tasks and their documents, the engine.
    if not target or not str(target).strip():
        raise SptError("TARGET is empty; pass a run id, a checkpoint id, or a model reference")
    report(progress, "load benchmarks", 0, 1, unit="stages")
    loaded = load_tasks(benchmarks)  # before the target: a bad task file is an error before any model is built
    tgt = resolve_benchmark_target(store, str(target).strip(), config)
    idents = task_identities(loaded, config.limit)
    apply_overrides(loaded, num_fewshot=config.num_fewshot, gen_kwargs=gen_kwargs, fewshot_seed=seeds["fewshot"])
    report(progress, "load benchmarks", 1, 1, unit="stages")
    output_types = {i["output_type"] for i in idents.values()}
    spec = ModelSpec(config.engine, tgt.path, {**config.engine_options, "batch_size": config.batch_size,
                                                "dtype": config.dtype, "device": config.device,
                                                "seed": seeds["torch"]})
    check_engine(config.engine, output_types, config.apply_chat_template, config.engine_options)
    chat_hash = _chat_template_hash(spec, config.apply_chat_template)
    settings = _task_settings(loaded)
    groups = group_tree(loaded)
    fields = {
        "kind": KIND, "v": BENCH_VERSION, "weights": tgt.weights_id,
        "dataset": "lm-eval:" + "+".join(_bench_name(b) for b in benchmarks), "split": "benchmark",
        "benchmarks": [_bench_name(b) for b in benchmarks],
        "tasks": idents, "groups": groups, "limit": config.limit, "num_fewshot": config.num_fewshot,
        "task_num_fewshot": {t: s["num_fewshot"] for t, s in settings.items()},
        "chat_template": bool(config.apply_chat_template), "chat_template_hash": chat_hash,
        "fewshot_as_multiturn": config.fewshot_as_multiturn if config.apply_chat_template else None,
        "system_instruction": config.system_instruction, "gen_kwargs": gen_kwargs, "seeds": seeds,
        "engine": engine_identity(spec, output_types, config.apply_chat_template), "lm_eval": version,
        "dtype": config.dtype or "float32",
    }
    if config.reasoning and config.reasoning != "none":  # in the identity only when set (older ids unchanged)
        fields["reasoning"] = config.reasoning
    subject = tgt.checkpoint.id if tgt.run is not None and tgt.run.kind != "base" and tgt.checkpoint else None
    identity = content_id({**fields, "subject": subject})
    n_docs = {t: i["n_docs"] for t, i in idents.items()}
    task_names = list(loaded.tasks)

    # 2. Finished already: nothing to compute, no model to load.
    from sqlmodel import select

    if tgt.run is not None:
        with store.session() as s:
            done = s.exec(select(Evaluation).where(Evaluation.identity == identity, Evaluation.status == "done")
                          .order_by(Evaluation.id)).first()
        if done is not None:
            return _result(done, done.run_id, task_names, sorted(groups), n_docs, 0, sum(n_docs.values()),
                           config.engine, version, store)

    # 3. The model, then every document's prompt (lm-eval renders few-shot and chat templates with it).
    report(progress, "load model", 0, 1, unit="stages")
    lm, described = build_lm(spec, output_types, config.apply_chat_template)
    report(progress, "load model", 1, 1, unit="stages")
    _seed(seeds)
    from spt.eval.lmeval.samples import build_requests

    requests: dict[str, list[Any]] = {}
    for k, (name, task) in enumerate(loaded.tasks.items()):
        report(progress, "build prompts", k, len(loaded.tasks), unit="tasks")
        requests[name] = build_requests(name, task, limit=config.limit, lm=lm,
                                        apply_chat_template=config.apply_chat_template,
                                        fewshot_as_multiturn=config.fewshot_as_multiturn,
                                        system_instruction=config.system_instruction)
    report(progress, "build prompts", len(loaded.tasks), len(loaded.tasks), unit="tasks")

    # 4. Documents (content rows), then the evaluation row under its lease.
    item_ids: dict[str, dict[int, str]] = {}
    datasets: dict[str, str] = {}
    for name, docs in requests.items():
        src = {"builder": "lm-eval", "lm_eval": version, "task": name, "config_hash": idents[name]["config"],
               "docs_hash": idents[name]["docs"], "version": idents[name]["version"]}
        datasets[name], item_ids[name] = _store_documents(store, name, idents[name]["split"], docs, src)
    single = task_names[0] if len(task_names) == 1 else None
    ds_ref = SimpleNamespace(id=datasets[single] if single else None)
    split_ref = SimpleNamespace(split=idents[single]["split"] if single else None)
    eval_config = {"kind": KIND, **{k: v for k, v in asdict(config).items() if k != "engine_options"},
                   "engine_options": {k: v for k, v in config.engine_options.items() if "key" not in k.lower()},
                   "gen_kwargs": gen_kwargs, "identity_fields": fields, "task_settings": settings, "datasets": datasets,
                   "chat_template_hash": chat_hash, "engine_described": described, "target": target,
                   "lm_eval_version": version}
    # the refusal kind's claim (find or create the row by identity, wait for or adopt a live lease); a benchmark
    # has no `task` (that column names refusal's task-accuracy task) and no refusal preset
    evaluation, run_id = _claim_evaluation(store, tgt, chat_hash, identity, ds_ref, split_ref, None, None, eval_config)
    if evaluation.status == "done":
        return _result(evaluation, run_id, task_names, sorted(groups), n_docs, 0, sum(n_docs.values()),
                       config.engine, version, store)

    # 5. Run the documents without a sample, a chunk at a time; then the metrics.
    n_run = 0
    before = _done_doc_ids(store, evaluation.id)
    n_reused = sum(len(before.get(t, set()) & set(item_ids[t])) for t in task_names)
    try:
        with Heartbeat(store, evaluation.id, table="evaluation"):
            from spt.eval.lmeval.samples import run_chunk
            from spt.eval.reasoning import parse_reasoning

            fmt = parse_reasoning(config.reasoning) if config.reasoning and config.reasoning != "none" else None

            for name, docs in requests.items():
                todo = [d for d in docs if d.doc_id not in before.get(name, set())]
                done_n = len(docs) - len(todo)
                report(progress, f"benchmark {name}", done_n, len(docs), unit="documents")
                for k in range(0, len(todo), config.chunk_size):
                    chunk = todo[k:k + config.chunk_size]
                    recs = run_chunk(lm, loaded.tasks[name], chunk, fmt)
                    rows = [_generation_row(evaluation.id, item_ids[name][r.doc.doc_id], r) for r in recs]
                    _insert(store, Generation, rows)
                    n_run += len(chunk)
                    done_n += len(chunk)
                    report(progress, f"benchmark {name}", done_n, len(docs), unit="documents")
            with store.session() as s:
                evaluation = s.get(Evaluation, evaluation.id)
            write_metrics(store, evaluation, compute_metrics(store, evaluation), finish=True)
    except BaseException as e:
        with store.write() as s:
            ev = s.get(Evaluation, evaluation.id)
            if ev is not None and ev.status == "running" and ev.lease_owner == my_owner():
                ev.status = "failed"
                ev.error = (type(e).__name__ + ": " + str(e)).splitlines()[0][:500] if str(e) else type(e).__name__
                ev.lease_owner = ev.lease_heartbeat = None
                s.add(ev)
        raise
    with store.session() as s:
        evaluation = s.get(Evaluation, evaluation.id)
    return _result(evaluation, run_id, task_names, sorted(groups), n_docs, n_run, n_reused, config.engine, version,
                   store)


def _bench_name(b: Any) -> str:
    """A benchmark as the identity names it: a YAML by its file name (where it sits on disk does not change
    the numbers; its content enters through the task's configuration hash)."""
    return f"yaml:{b.path.name}" if b.path is not None else b.spec


def _seed(seeds: dict[str, int]) -> None:
    """lm-eval's seeding in simple_evaluate (python, numpy, torch), so sampled generation matches it."""
    import random

    import numpy as np

    random.seed(seeds["random"])
    np.random.seed(seeds["numpy"])
    try:
        from lm_eval.utils import set_torch_seed

        set_torch_seed(seeds["torch"])
    except ImportError:
        import torch

        torch.manual_seed(seeds["torch"])
