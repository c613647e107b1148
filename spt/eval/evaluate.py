"""`spt evaluate`: generations, keyword refusal, teacher-forced losses and task accuracy, resumable.

An evaluation is identified by a content hash of what changes its numbers: the weights (checkpoint
content hash, else a fingerprint of the weight files), the dataset and split, the limit, the
generation settings, the refusal preset and the task. Running the same evaluation again finds the
row by that identity and only generates what is missing; generations are committed batch by batch,
so a killed evaluation loses at most the batch in flight. A running evaluation holds a lease (owner and
heartbeat, see spt.store.lease): a second process asking for the same identity waits while the lease is
live and adopts the row once it has expired (the owner was killed). Generations of another evaluation that
differs only in its refusal preset are copied rather than generated again (generation does not
depend on the preset).

Everything the user can get wrong is checked before anything is written.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import func
from sqlmodel import select

from spt.engines.base import FAILED_FINISH
from spt.errors import SptError
from spt.eval.refusal import PRESETS, get_preset
from spt.models.fingerprint import weights_id
from spt.progress import ProgressFn, report
from spt.provenance import provenance
from spt.store import content_id, new_id, queries
from spt.store.engine import Store
from spt.store.lease import Heartbeat, describe, heartbeat_interval, is_stale, my_owner
from spt.store.models import Checkpoint, Dataset, DatasetItem, Evaluation, Generation, Metric, Run, utcnow

EVAL_VERSION = 2  # 2: HarmOR v2 pools, seeded stratified --limit, interval methods



@dataclass
class EvaluateResult:
    """One evaluation as `evaluate` left it: what was evaluated, how much was generated now, its metrics.

    `metrics`: the stored metric rows (name, category, value, ci_low, ci_high, ci_method, n, n_unscored,
    preset), sorted by name. `n_reused`: items whose generations an earlier attempt had committed;
    `n_copied`: generations copied from an evaluation that differs only in its refusal preset.
    """

    evaluation_id: str
    identity: str
    run_id: str
    checkpoint_id: str | None
    dataset_id: str
    dataset: str
    split: str
    task: str | None
    refusal_preset: str
    status: str
    n_items: int
    n_task_items: int
    n_generated: int
    n_reused: int
    n_copied: int
    new_tokens: int
    tokens_per_s: float | None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    n_failed: int = 0  # generations the engine could not produce (stored as failed, left out of every metric)

    @property
    def reused(self) -> bool:
        """Nothing was generated or copied now: the evaluation existed (or was complete) already."""
        return self.n_generated == 0 and not self.n_copied

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# The task splits an evaluation may score: test for claims, dev for choosing settings (train is trained on).
TASK_SPLITS = ("test", "dev")


@dataclass
class EvaluateConfig:
    """Settings of one evaluation (all but batch sizes, device and progress enter its identity)."""

    dataset: str | None = None  # name or id; None: HarmOR (built if missing)
    split: str = "test"
    task: str | None = None  # None: the run's task; "none": no task metrics
    task_split: str = "test"  # "dev" to choose a protocol without looking at the task's test items
    limit: int | None = None
    max_new_tokens: int = 64
    batch_size: int | str = "auto"
    temperature: float = 0.0
    seed: int = 0
    refusal_preset: str = "spt"
    generate: bool = True  # False: losses only
    dtype: str | None = None
    device: str | None = None
    loss_batch_size: int = 8
    max_length: int = 1024
    # the generation engine (`spt.engines`): hf (default), vllm, openai; and its options (base_url, api_key_env,
    # max_connections, max_retries, timeout for openai; gpu_memory_utilization, max_model_len for vllm)
    engine: str | None = None  # None: openai for an `openai:MODEL` target, else hf
    engine_options: dict[str, Any] = field(default_factory=dict)
    # how the model marks its thinking (spt.eval.reasoning): none | think | tags:OPEN,ANSWER
    reasoning: str = "none"
    # a system turn before every prompt (spt.eval.system_prompt): text, @FILE or grpo[:OPEN,ANSWER]; None: none
    system_prompt: str | None = None

    def validate(self) -> None:
        from spt.engines import get_engine
        from spt.eval.reasoning import parse_reasoning

        self.reasoning = parse_reasoning(self.reasoning).name
        from spt.eval.system_prompt import resolve_system_prompt

        self.system_prompt = resolve_system_prompt(self.system_prompt)
        if self.dtype is not None:
            from spt.models.load import DTYPES

            if self.dtype not in DTYPES:
                raise SptError(f"unknown `dtype` {self.dtype!r}; use one of {', '.join(DTYPES)}")

        get_engine(self.engine or "hf")  # an unknown engine names the known ones
        if self.limit is not None and self.limit < 1:
            raise SptError(f"`limit` must be at least 1 (got {self.limit}); omit it to evaluate the whole split")
        if self.max_new_tokens < 1:
            raise SptError(f"`max_new_tokens` must be at least 1 (got {self.max_new_tokens})")
        if self.temperature < 0:
            raise SptError(f"`temperature` must be >= 0 (got {self.temperature}); 0 is greedy")
        if self.refusal_preset not in PRESETS:
            get_preset(self.refusal_preset)  # raises with the list of presets
        bs = self.batch_size
        if not (bs == "auto" or (isinstance(bs, int) and bs >= 1)):
            raise SptError(f"`batch_size` must be a positive integer or 'auto' (got {bs!r})")
        if self.loss_batch_size < 1 or self.max_length < 16:
            raise SptError("loss batch size must be >= 1 and max length >= 16")
        if not self.split:
            raise SptError("`split` must not be empty; use e.g. `split` test")
        if self.task_split not in TASK_SPLITS:
            raise SptError(f"task split {self.task_split!r} is not one of {', '.join(TASK_SPLITS)}; use test, or dev "
                           "to choose a protocol without looking at test")


def parse_batch_size(value: str | int | None) -> int | str:
    """`auto` or a positive integer from a CLI string."""
    if value is None or value == "auto":
        return "auto"
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise SptError(f"`batch_size` must be a positive integer or 'auto' (got {value!r})") from None
    if n < 1:
        raise SptError(f"`batch_size` must be a positive integer or 'auto' (got {value!r})")
    return n


# ---------------------------------------------------------------------------------------------
# Targets


@dataclass
class Target:
    """What to evaluate: an existing run/checkpoint, or a model reference (run created later)."""

    run: Run | None
    checkpoint: Checkpoint | None
    path: str
    weights_id: str
    model_ref: str | None = None
    base_model: str | None = None
    engine: dict[str, Any] | None = None  # served models: engine, served name, host (recorded on the base run)


def _checkpoint_weights_id(ck: Checkpoint) -> str:
    return ck.content_hash or weights_id(ck.path)


def _final_checkpoint(s: Any, run: Run) -> Checkpoint:
    ck = queries.final_checkpoint(s, run.id)
    if ck is None:
        raise SptError(
            f"run {run.id} has no final checkpoint (status {run.status}); pass one of its checkpoint ids "
            f"(`spt runs show {run.id[:13]}`)"
        )
    return ck


def resolve_target(store: Store, target: str) -> Target:
    """A run id or unique prefix (its final checkpoint), a checkpoint id or prefix, or a model reference."""
    if not target or not target.strip():
        raise SptError("TARGET is empty; pass a run id, a checkpoint id, or a model reference")
    target = target.strip()
    with store.session() as s:
        ck = s.get(Checkpoint, target)
        run = s.get(Run, target) if ck is None else s.get(Run, ck.run_id)
        if ck is None and run is None:
            runs = queries.runs_by_prefix(s, target) if len(target) >= 4 else []
            cks = queries.checkpoint_by_prefix(s, target) if len(target) >= 4 else []
            # Runs win over checkpoints (a run and its first checkpoint often share a time prefix).
            if len(runs) > 1 or (not runs and len(cks) > 1):
                raise SptError(f"TARGET prefix {target!r} is ambiguous; give more characters of the id")
            if runs:
                run = runs[0]
            elif cks:
                ck = cks[0]
                run = s.get(Run, ck.run_id)
        if run is not None and ck is None:
            ck = _final_checkpoint(s, run)
    if ck is not None and run is not None:
        if not Path(ck.path).exists() and ck.kind != "reference":
            raise SptError(f"checkpoint {ck.id} points at {ck.path}, which does not exist on this machine")
        return Target(run=run, checkpoint=ck, path=ck.path, weights_id=_checkpoint_weights_id(ck))
    from spt.models.resolve import resolve_model

    try:
        resolved = resolve_model(target)
    except SptError:
        raise SptError(
            f"TARGET {target!r} is not a run id, a checkpoint id, or a model reference; "
            "list runs with `spt runs`, or pass tiny-random, smollm2-135m, a model directory or a hub id"
        ) from None
    # Reuse a base run recorded earlier for the same weights.
    wid = weights_id(resolved.path) if resolved.kind != "hub" else "hub:" + resolved.ref
    ident = content_id({"kind": "base", "base_model": resolved.base_model, "weights": wid})
    with store.session() as s:
        run = next(iter(queries.runs_with_identity(s, ident, kind="base")), None)
        ck = _final_checkpoint(s, run) if run is not None else None
    return Target(run=run, checkpoint=ck, path=resolved.path, weights_id=wid, model_ref=target,
                  base_model=resolved.base_model)


def resolve_served_target(store: Store, target: str, base_url: str | None) -> Target:
    """`openai:MODEL` (or MODEL) on the endpoint at `base_url`: one base run per served model and host.

    Its weights id is `served:HOST/MODEL`: the same name on another host is another model (it may be
    quantised or another revision); the host and name are recorded on the run, never the key.
    """
    from spt.engines.openai import endpoint_host

    model = target.strip().removeprefix("openai:").strip()
    if not model:
        raise SptError("TARGET openai:MODEL needs the served model's name after 'openai:'")
    host = endpoint_host(base_url)
    wid = f"served:{host}/{model}"
    ident = content_id({"kind": "base", "base_model": model, "weights": wid})
    with store.session() as s:
        run = next(iter(queries.runs_with_identity(s, ident, kind="base")), None)
        ck = queries.final_checkpoint(s, run.id) if run is not None else None
    return Target(run=run, checkpoint=ck, path=model, weights_id=wid, model_ref=f"openai:{model}", base_model=model,
                  engine={"engine": "openai", "model": model, "host": host})


def _ensure_base_run(s: Any, target: Target, chat_hash: str | None) -> tuple[Run, Checkpoint]:
    """Inside a write transaction: the `base` run and `reference` checkpoint for a model reference."""
    ident = content_id({"kind": "base", "base_model": target.base_model, "weights": target.weights_id})
    run = next(iter(queries.runs_with_identity(s, ident, kind="base")), None)
    if run is not None:
        return run, _final_checkpoint(s, run)
    now = utcnow()
    run = Run(kind="base", model_ref=target.model_ref or target.path, base_model=target.base_model,
              status="done", identity=ident,
              config={"path": target.path, "weights": target.weights_id,
                      **({"engine": target.engine} if target.engine else {})},
              provenance=provenance(), finished_at=now)
    ck = Checkpoint(run_id=run.id, step=0, kind="reference", path=target.path, content_hash=target.weights_id,
                    is_final=True, meta={"chat_template_hash": chat_hash})
    s.add(run)
    s.add(ck)
    return run, ck


# ---------------------------------------------------------------------------------------------
# Datasets and items


def find_dataset(store: Store, name_or_id: str) -> Dataset:
    """A dataset by id, unique id prefix, or name (the newest of that name)."""
    from spt.data import resolve_dataset

    return resolve_dataset(store, name_or_id)


def dataset_items(store: Store, dataset_id: str, split: str | None) -> list[dict]:
    """Items of a dataset (one split, or all) in their stored order, as dicts."""
    from spt.data import load_items

    return load_items(store, dataset_id, split)


def limit_items(items: list[dict], limit: int | None, seed: int = 0) -> list[dict]:
    """A seeded, stratified sample of at most `limit` items that keeps harmful/benign pairs whole.

    Pairs are taken round-robin over categories (in a seeded order), and within a category round-robin
    over sensitive words (seeded order, seeded pair order within a word). So `--limit 60` on HarmOR
    covers 30 pairs of 30 distinct words spread over every category, not the first pairs in stored
    order. Items without a pair (task items) are their own group; a group that would overflow the
    limit is skipped, so a pair is never cut in half.
    """
    import random

    if not limit or limit >= len(items):
        return list(items)
    rng = random.Random(f"spt-limit:{seed}")
    groups: dict[str, list[dict]] = {}
    for it in items:
        groups.setdefault(it.get("pair_id") or it["id"], []).append(it)
    by_cat: dict[str, dict[str, list[list[dict]]]] = {}
    for key, g in groups.items():
        word = g[0].get("sensitive_word") or key
        by_cat.setdefault(g[0].get("category") or "", {}).setdefault(word, []).append(g)
    queues: list[list[list[dict]]] = []
    cats = sorted(by_cat)
    rng.shuffle(cats)
    for cat in cats:
        words = sorted(by_cat[cat])
        rng.shuffle(words)
        for w in words:
            rng.shuffle(by_cat[cat][w])
        depth = max(len(by_cat[cat][w]) for w in words)
        queues.append([by_cat[cat][w][r] for r in range(depth) for w in words if r < len(by_cat[cat][w])])
    out: list[dict] = []
    k = 0
    while len(out) < limit and any(k < len(q) for q in queues):
        for q in queues:
            if k < len(q) and len(out) + len(q[k]) <= limit:
                out.extend(q[k])
        k += 1
    return out


def dataset_splits(store: Store, dataset_id: str) -> dict[str, int]:
    with store.session() as s:
        rows = s.exec(select(DatasetItem.split, func.count()).where(DatasetItem.dataset_id == dataset_id)
                      .group_by(DatasetItem.split)).all()
    return {sp: n for sp, n in rows}


def _split_items(store: Store, ds: Dataset, split: str, limit: int | None, what: str) -> list[dict]:
    items = dataset_items(store, ds.id, split)
    if not items:
        splits = dataset_splits(store, ds.id)
        have = ", ".join(f"{k} ({v})" for k, v in sorted(splits.items())) or "none"
        raise SptError(f"{what} {ds.name!r} has no {split!r} split (splits: {have}); pass `split`")
    return limit_items(items, limit)


def _default_safety_dataset(store: Store, split: str) -> Dataset:
    """HarmOR (built and stored on first use); the pool is checked before anything is stored."""
    from spt.data.harmor import POOLS, ensure_harmor

    if split not in POOLS:
        raise SptError(f"dataset 'harmor' has no {split!r} split (its pools: {', '.join(POOLS)}); pass `split`")
    ds_id = ensure_harmor(store, seed=0)
    with store.session() as s:
        return s.get(Dataset, ds_id)


def _resolve_task(store: Store, name: str, split: str = "test") -> tuple[Any, Dataset]:
    try:
        from spt.data import ensure_task_dataset, get_task
    except ImportError:
        raise SptError(f"task {name!r} needs spt.data's task registry, not available here; pass `task` none") from None
    task = get_task(name, store=store)
    if task.splits is not None and split not in task.splits:  # a built-in: refused before it is stored
        raise SptError(f"task {task.name!r} has no {split!r} split (splits: {', '.join(task.splits)}); "
                       "pass another task split")
    ds_id = ensure_task_dataset(store, name, seed=0)
    with store.session() as s:
        return task, s.get(Dataset, ds_id)


# ---------------------------------------------------------------------------------------------
# Writing generations


def _insert_generations(store: Store, rows: list[dict]) -> int:
    """Insert generation rows in one transaction; rows already there (same evaluation+item) are kept."""
    from sqlalchemy.dialects.sqlite import insert

    if not rows:
        return 0
    with store.write() as s:
        res = s.execute(insert(Generation).values(rows).on_conflict_do_nothing())
    return res.rowcount or 0


_NO_STATS = {"new_tokens": 0, "gen_seconds": 0.0}


def _generation_row(evaluation_id: str, item: dict, res: Any, reasoning: Any = None) -> dict:
    """The row of one engine result; a failed one keeps an empty response and says why in `meta`.

    With a `reasoning` format the response is the answer, the thinking and raw reply go to `meta`."""
    meta = dict(res.meta or {})
    response = res.response if res.ok else ""
    if res.ok and reasoning is not None and reasoning.name != "none":
        sp = reasoning.split(res.response or "")
        meta.update(raw_response=res.response, thinking=sp.thinking)
        if sp.unfinished:
            meta["unfinished_thought"] = True
        response = sp.answer
    if res.attempts and res.attempts > 1:
        meta["attempts"] = res.attempts
    if res.resolved_model:
        meta["resolved_model"] = res.resolved_model
    if not res.ok:
        meta.update(status="failed", reason=res.reason, error=res.error)
    return {
        "id": new_id(), "evaluation_id": evaluation_id, "item_id": item["id"], "prompt": item["prompt"],
        "response": response, "n_prompt_tokens": res.n_prompt_tokens,
        "n_new_tokens": res.n_new_tokens, "latency_s": res.latency_s,
        "finish_reason": res.finish_reason if res.ok else FAILED_FINISH, "meta": meta, "created_at": utcnow(),
    }


def _existing_item_ids(store: Store, evaluation_id: str) -> set[str]:
    with store.session() as s:
        return set(s.exec(select(Generation.item_id).where(Generation.evaluation_id == evaluation_id)).all())


def _copy_generations(store: Store, evaluation: Evaluation, item_ids: set[str]) -> int:
    """Copy generations for `item_ids` from a finished evaluation with the same generation identity."""
    gen_ident = (evaluation.config or {}).get("generation_identity")
    if not gen_ident or not item_ids:
        return 0
    with store.session() as s:
        donors = s.exec(select(Evaluation.id).where(
            Evaluation.id != evaluation.id,
            func.json_extract(Evaluation.config, "$.generation_identity") == gen_ident)).all()
        if not donors:
            return 0
        gens = s.exec(select(Generation).where(Generation.evaluation_id.in_(donors))).all()
    rows, seen = [], set()
    for g in gens:
        if g.item_id in item_ids and g.item_id not in seen:
            seen.add(g.item_id)
            rows.append({
                "id": new_id(), "evaluation_id": evaluation.id, "item_id": g.item_id, "prompt": g.prompt,
                "response": g.response, "n_prompt_tokens": g.n_prompt_tokens, "n_new_tokens": g.n_new_tokens,
                "latency_s": g.latency_s, "finish_reason": g.finish_reason,
                "meta": {**(g.meta or {}), "copied_from": g.id}, "created_at": utcnow(),
            })
    n = 0
    for k in range(0, len(rows), 500):
        n += _insert_generations(store, rows[k:k + 500])
    return n


def _generate_missing(store: Store, engine: Any, evaluation_id: str, items: list[dict], config: EvaluateConfig,
                      stage: str, progress: ProgressFn | None, stats: dict) -> int:
    """Generate the items that have no generation yet through `engine`, committing each group of replies as it
    arrives (a killed process loses only what was in flight). A reply the engine could not produce is stored
    as failed (empty response, finish_reason "error", the reason in `meta`) and counted, never scored."""
    import time

    from spt.engines import GenerationRequest
    from spt.eval.reasoning import parse_reasoning

    fmt = parse_reasoning(config.reasoning)
    done = _existing_item_ids(store, evaluation_id)
    todo = [it for it in items if it["id"] not in done]
    total = len(items)
    n_done = total - len(todo)
    new_tokens = 0
    report(progress, stage, n_done, total, new_tokens=new_tokens)
    if not todo:
        return 0
    written = 0

    def on_results(batch: list[Any]) -> None:
        nonlocal written, n_done, new_tokens
        rows = [_generation_row(evaluation_id, todo[r.index], r, fmt) for r in batch]
        written += _insert_generations(store, rows)
        toks = sum(r.n_new_tokens or 0 for r in batch)
        stats["new_tokens"] += toks
        n_done += len(batch)
        new_tokens += toks
        report(progress, stage, n_done, total, new_tokens=new_tokens)

    system = ({"role": "system", "content": config.system_prompt},) if config.system_prompt else ()
    requests = [GenerationRequest(prompt=None if system else it["prompt"],
                                  messages=(*system, {"role": "user", "content": it["prompt"]}) if system else None,
                                  max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                                  seed=config.seed, key=it["id"]) for it in todo]
    t0 = time.perf_counter()
    engine.generate(requests, on_results=on_results)
    stats["gen_seconds"] += time.perf_counter() - t0
    fatal = getattr(engine, "fatal", None)
    if fatal:
        raise SptError(f"{fatal}; {written} replies stored, no metric written (run the same command again to go on)")
    return written


def _generations_by_item(store: Store, evaluation_id: str) -> dict[str, Generation]:
    with store.session() as s:
        return {g.item_id: g for g in s.exec(select(Generation).where(Generation.evaluation_id == evaluation_id))}


# ---------------------------------------------------------------------------------------------
# Claiming the evaluation row (lease)


def _claim_evaluation(store: Store, tgt: Target, chat_hash: str | None, identity: str, ds: Dataset,
                      config: EvaluateConfig, task_name: str | None, preset_name: str,
                      eval_config: dict) -> tuple[Evaluation, str]:
    """Find or create the evaluation row of `identity` and take its lease, in one write transaction.

    A finished row is returned as it is. A running row whose lease is live (another process works on it)
    is waited for, polling at the heartbeat interval, until it finishes or its lease expires; an expired
    one is adopted. Otherwise the newest failed row is resumed, or a new row is inserted. The unique index
    on running identities makes this race-free across processes. Returns (row, run id).
    """
    import sys
    import time

    announced = False
    while True:
        with store.write() as s:
            if tgt.run is None:
                run, ck = _ensure_base_run(s, tgt, chat_hash)
            else:
                run, ck = tgt.run, tgt.checkpoint
            rows = s.exec(select(Evaluation).where(Evaluation.identity == identity).order_by(Evaluation.id)).all()
            done = [e for e in rows if e.status == "done"]
            running = [e for e in rows if e.status == "running"]
            ev = done[0] if done else (running[0] if running else (rows[-1] if rows else None))
            # A running row without an owner was left by an spt before leases: nobody to wait for.
            busy = (ev is not None and ev.status == "running" and ev.lease_owner not in (None, my_owner())
                    and not is_stale(ev.lease_owner, ev.lease_heartbeat, ev.created_at))
            if not busy:
                if ev is None:
                    ev = Evaluation(run_id=run.id, checkpoint_id=ck.id if ck else None, dataset_id=ds.id,
                                    split=config.split, task=task_name, identity=identity, refusal_preset=preset_name,
                                    config=eval_config, status="running")
                if ev.status != "done":  # new, resumed or adopted; a finished evaluation stays finished
                    ev.status, ev.error = "running", None
                    ev.lease_owner, ev.lease_heartbeat = my_owner(), utcnow()
                    s.add(ev)
                s.flush()
                return Evaluation.model_validate(ev.model_dump()), run.id
            who = describe(ev.lease_owner, ev.lease_heartbeat, ev.created_at)
        if not announced:
            sys.stderr.write(f"spt: evaluation {ev.id} is being computed by {who}; waiting for it "
                             "(adopted if its lease expires)\n")
            sys.stderr.flush()
            announced = True
        time.sleep(heartbeat_interval())


# ---------------------------------------------------------------------------------------------
# Metrics


def metric_id(evaluation_id: str, name: str, category: str, preset: str | None) -> str:
    return content_id({"evaluation_id": evaluation_id, "name": name, "category": category, "preset": preset})


def _write_metrics(store: Store, evaluation: Evaluation, metrics: list[dict], meta: dict) -> None:
    with store.write() as s:
        for m in metrics:
            s.merge(Metric(
                id=metric_id(evaluation.id, m["name"], m["category"], m["preset"]),
                run_id=evaluation.run_id, evaluation_id=evaluation.id, name=m["name"], category=m["category"],
                preset=m["preset"], value=m["value"], ci_low=m["ci_low"], ci_high=m["ci_high"],
                ci_method=m.get("ci_method"), n=m["n"], n_unscored=m["n_unscored"], meta=meta,
            ))
        ev = s.get(Evaluation, evaluation.id)
        ev.status = "done"
        ev.error = None
        ev.finished_at = utcnow()
        ev.lease_owner = ev.lease_heartbeat = None  # the lease ends with the work
        s.add(ev)


def stored_metrics(store: Store, evaluation_id: str) -> list[dict]:
    with store.session() as s:
        rows = queries.evaluation_metrics(s, evaluation_id)
    keys = ("name", "category", "value", "ci_low", "ci_high", "ci_method", "n", "n_unscored", "preset")
    out = [{k: getattr(m, k) for k in keys} for m in rows]
    return sorted(out, key=lambda m: (m["name"], m["category"] != "all", m["category"]))


# ---------------------------------------------------------------------------------------------
# The evaluation


def evaluate(store: Store, target: str, config: EvaluateConfig | None = None,
             progress: ProgressFn | None = None) -> EvaluateResult:
    """Evaluate TARGET (run id/prefix, checkpoint id, or model reference); resumable. See module doc.

    `progress` gets `Progress` reports per generation batch ("generate", "generate task answers"; `info`
    has the new tokens so far) and per loss batch ("alignment loss", "task loss").
    """
    from spt.engines import EngineSpec, get_engine

    config = config or EvaluateConfig()
    if config.engine is None:  # the target names its engine
        config = replace(config, engine="openai" if str(target or "").strip().startswith("openai:") else "hf")
    config.validate()
    preset = get_preset(config.refusal_preset)
    factory = get_engine(config.engine)
    missing = factory.available()
    if missing:
        raise SptError(missing)

    # 1. Everything read-only and checkable first.
    if factory.local:
        if str(target or "").strip().startswith("openai:"):
            raise SptError(f"TARGET {target!r} is a served model; evaluate it with `engine` openai and its `base_url`")
        tgt = resolve_target(store, target)
    else:
        if not config.generate:
            raise SptError(f"engine {config.engine} only generates: losses need local weights; drop `generate` False "
                           "or evaluate a local model")
        tgt = resolve_served_target(store, target, config.engine_options.get("base_url"))
    engine_spec = EngineSpec(config.engine, tgt.path, {k: v for k, v in config.engine_options.items()
                                                       if v is not None})
    factory.validate(engine_spec)
    if config.dataset is not None:
        ds = find_dataset(store, config.dataset)
        if ds.kind == "agentic":
            raise SptError(f"dataset {config.dataset!r} holds agentic tool-use cases: run an agent on them with "
                           "--emulator SPEC --evaluator SPEC, or import published runs with --trajectories")
        items = _split_items(store, ds, config.split, config.limit, "dataset")
    else:
        ds = None
        items = []
    task_name = config.task
    if task_name is None and tgt.run is not None and tgt.run.task:
        task_name = tgt.run.task
    if task_name is not None and task_name.lower() in ("none", ""):
        task_name = None
    if task_name is None and config.task_split != "test":
        raise SptError(f"task split {config.task_split!r} is given but no task is evaluated; pass a task "
                       "(--task NAME) or drop --task-split")
    # 2. Default datasets (built on first use; not evaluation rows).
    if ds is None:
        ds = _default_safety_dataset(store, config.split)
        items = _split_items(store, ds, config.split, config.limit, "dataset")
    task_obj, task_ds, task_items = None, None, []
    if task_name is not None:
        task_obj, task_ds = _resolve_task(store, task_name, config.task_split)
        task_items = _split_items(store, task_ds, config.task_split, config.limit, "task dataset")

    gen_cfg = {"generate": config.generate, "max_new_tokens": config.max_new_tokens if config.generate else None,
               "temperature": config.temperature if config.generate else None,
               "seed": config.seed if (config.generate and config.temperature > 0) else None,
               "decoding": ("sample" if config.temperature > 0 else "greedy") if config.generate else None}
    base_ident = {"v": EVAL_VERSION, "weights": tgt.weights_id, "dataset": ds.id, "split": config.split,
                  "limit": config.limit, "generation": gen_cfg, "task": task_name,
                  "task_dataset": task_ds.id if task_ds else None,
                  "dtype": (config.dtype or "float32") if factory.local else None}
    if config.engine != "hf":  # hf evaluations keep the identities they had before engines existed
        base_ident["engine"] = config.engine
    if task_name is not None and config.task_split != "test":  # likewise evaluations of a task's test split
        base_ident["task_split"] = config.task_split
    if config.reasoning != "none":  # likewise evaluations that read the whole reply
        base_ident["reasoning"] = config.reasoning
    if config.system_prompt:  # likewise evaluations without a system turn
        base_ident["system_prompt"] = config.system_prompt
    generation_identity = content_id(base_ident)
    # Two runs can end with byte-identical weights (e.g. proximal at λ=0 and none): each still gets its
    # own evaluation (and metrics), sharing the generations through `generation_identity`. Base
    # models are keyed by their weights alone, however they are referenced.
    subject = tgt.checkpoint.id if tgt.run is not None and tgt.run.kind != "base" and tgt.checkpoint else None
    identity = content_id({**base_ident, "subject": subject, "refusal_preset": preset.name,
                           "preset_version": preset.version})

    # 3. A finished evaluation with this identity: nothing to compute.
    with store.session() as s:
        existing = s.exec(select(Evaluation).where(Evaluation.identity == identity, Evaluation.status == "done")
                          .order_by(Evaluation.id)).first()
    if existing is not None and existing.status == "done" and tgt.run is not None:
        n = len(_existing_item_ids(store, existing.id))
        return _result(store, existing, ds, items, task_items, 0, n, 0, _NO_STATS,
                       stored_metrics(store, existing.id))

    # 4. Load the model, or connect (fails before anything about the evaluation is written).
    from spt.engines import open_engine
    from spt.models.chat import chat_template_hash

    model = tok = None
    if config.engine == "hf":
        from spt.models.load import load_model

        model, tok = load_model(tgt.path, dtype=config.dtype, device=config.device)
        engine_spec.options.update(loaded=(model, tok), batch_size=config.batch_size)
        chat_hash = chat_template_hash(tok)
    elif factory.local:
        from spt.models.load import load_tokenizer

        if config.dtype:
            engine_spec.options.setdefault("dtype", config.dtype)

        chat_hash = chat_template_hash(load_tokenizer(tgt.path))
    else:
        chat_hash = None  # the endpoint applies its own template
    engine = open_engine(engine_spec)

    # 5. Base run (model references) and the evaluation row, created or found in one transaction.
    eval_config = {**asdict(config), "generation_identity": generation_identity, "identity_fields": base_ident,
                   "preset": preset.describe(), "chat_template_hash": chat_hash,
                   "device": str(model.device) if model is not None else None, "engine": engine.describe(),
                   "target": target}
    evaluation, run_id = _claim_evaluation(store, tgt, chat_hash, identity, ds, config, task_name, preset.name,
                                           eval_config)
    if evaluation.status == "done":  # finished meanwhile (another process), or found only now (base model)
        n = len(_existing_item_ids(store, evaluation.id))
        return _result(store, evaluation, ds, items, task_items, 0, n, 0, _NO_STATS,
                       stored_metrics(store, evaluation.id))

    stats = {"new_tokens": 0, "gen_seconds": 0.0}
    all_items = items + task_items
    before = _existing_item_ids(store, evaluation.id)
    n_reused = len(before & {it["id"] for it in all_items})
    try:
        with Heartbeat(store, evaluation.id, table="evaluation"):
            n_copied = 0
            n_generated = 0
            if config.generate:
                n_copied = _copy_generations(store, evaluation, {it["id"] for it in all_items} - before)
                n_generated += _generate_missing(store, engine, evaluation.id, items, config, "generate",
                                                 progress, stats)
                if task_items:
                    n_generated += _generate_missing(store, engine, evaluation.id, task_items, config,
                                                     "generate task answers", progress, stats)
            engine.close()
            if model is None and factory.local:  # losses are transformers' job, after the engine let go
                from spt.models.load import load_model

                model, tok = load_model(tgt.path, dtype=config.dtype, device=config.device)
            metrics = _compute_metrics(store, model, tok, evaluation.id, items, task_items, task_obj, config,
                                       preset.name, progress)
            meta = {"dataset_id": ds.id, "split": config.split, "task": task_name,
                    "preset_version": preset.version, "identity": identity}
            _write_metrics(store, evaluation, metrics, meta)
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
    evaluation.run_id = run_id
    return _result(store, evaluation, ds, items, task_items, n_generated, n_reused, n_copied, stats,
                   stored_metrics(store, evaluation.id))


def _compute_metrics(store: Store, model: Any, tok: Any, evaluation_id: str, items: list[dict],
                     task_items: list[dict], task_obj: Any, config: EvaluateConfig, preset: str,
                     progress: ProgressFn | None) -> list[dict]:
    from spt.eval.losses import example_losses
    from spt.eval.metrics import accuracy_metrics, loss_metrics, refusal_metrics
    from spt.eval.refusal import classify

    metrics: list[dict] = []
    if config.generate:
        gens = _generations_by_item(store, evaluation_id)

        def rec(it: dict) -> dict:
            g = gens[it["id"]]
            unfinished = bool((g.meta or {}).get("unfinished_thought"))
            return {**it, "response": g.response, "failed": g.finish_reason == FAILED_FINISH or unfinished}

        recs = [rec(it) for it in items if it["id"] in gens]
        metrics += refusal_metrics(recs, lambda text: classify(text, preset), preset)
        if task_items and task_obj is not None:
            trecs = [rec(it) for it in task_items if it["id"] in gens]
            metrics += accuracy_metrics("task_accuracy", trecs, task_obj.score)
        if config.reasoning != "none":
            metrics += unfinished_metrics([gens[it["id"]] for it in items + task_items if it["id"] in gens])
    if model is None:  # an endpoint: no weights, so no teacher-forced losses
        return metrics

    def loss_pass(name: str, its: list[dict], split_by_label: bool) -> list[dict]:
        with_ref = [it for it in its if it.get("response")]
        if not with_ref:
            return []
        done = 0
        report(progress, name.replace("_", " "), 0, len(with_ref))

        def tick(n: int) -> None:
            nonlocal done
            done += n
            report(progress, name.replace("_", " "), done, len(with_ref))

        losses = example_losses(model, tok, [(it["prompt"], it["response"]) for it in with_ref],
                                batch_size=config.loss_batch_size, max_length=config.max_length, on_batch=tick)
        recs = [{**it, **lo} for it, lo in zip(with_ref, losses, strict=True)]
        _store_item_losses(store, evaluation_id, recs)
        return loss_metrics(name, recs, split_by_label=split_by_label)

    metrics += loss_pass("alignment_loss", [it for it in items if it.get("label") in ("harmful", "benign")], True)
    if task_items:
        metrics += loss_pass("task_loss", task_items, False)
    return metrics


def unfinished_metrics(gens: list[Any]) -> list[dict]:
    """`unfinished_thought_rate`: the share of replies that ran out mid-thought (`spt.eval.reasoning`); such a
    reply has no answer and is unscored in every other rate, so this says how many were left out."""
    from spt.metrics import RATE, estimate

    vals = [1.0 if (g.meta or {}).get("unfinished_thought") else 0.0 for g in gens if g.finish_reason != FAILED_FINISH]
    if not vals:
        return []
    est = estimate(vals, RATE)
    return [{"name": "unfinished_thought_rate", "category": "all", "value": est.value, "ci_low": est.ci_low,
             "ci_high": est.ci_high, "n": est.n, "n_unscored": 0, "preset": None, "ci_method": est.method}]


def _store_item_losses(store: Store, evaluation_id: str, recs: list[dict]) -> None:
    """Keep each item's loss on its generation row (`meta.loss`), for paired comparisons (`spt compare`)."""
    from sqlalchemy import text

    # repr(): all 17 digits (json_set would print a REAL with 15), so metrics recomputed from the stored
    # losses (`spt evaluate --recompute-metrics`) equal the ones computed here, to the last bit
    rows = [{"e": evaluation_id, "i": r["id"], "loss": repr(float(r["loss"]))} for r in recs
            if r.get("loss") is not None]
    if not rows:
        return
    with store.write() as s:
        s.connection().execute(text(
            "UPDATE generation SET meta = json_set(COALESCE(meta, '{}'), '$.loss', json(:loss)) "
            "WHERE evaluation_id = :e AND item_id = :i"), rows)


def _n_failed(store: Store, evaluation_id: str) -> int:
    with store.session() as s:
        return s.exec(select(func.count()).select_from(Generation).where(
            Generation.evaluation_id == evaluation_id, Generation.finish_reason == FAILED_FINISH)).one()


def _result(store: Store, ev: Evaluation, ds: Dataset, items: list[dict], task_items: list[dict], n_generated: int,
            n_reused: int, n_copied: int, stats: dict, metrics: list[dict]) -> EvaluateResult:
    secs = stats["gen_seconds"]
    return EvaluateResult(
        evaluation_id=ev.id, identity=ev.identity, run_id=ev.run_id, checkpoint_id=ev.checkpoint_id,
        dataset_id=ds.id, dataset=ds.name, split=ev.split, task=ev.task, refusal_preset=ev.refusal_preset,
        status=ev.status, n_items=len(items), n_task_items=len(task_items), n_generated=n_generated,
        n_reused=n_reused, n_copied=n_copied, new_tokens=stats["new_tokens"],
        tokens_per_s=(stats["new_tokens"] / secs) if secs else None, metrics=metrics,
        n_failed=_n_failed(store, ev.id),
    )
