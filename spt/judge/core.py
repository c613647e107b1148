"""Judging evaluations: plan (cache, re-judge, fix), call the backend, store judgments, compute metrics.

Cache: a judgment's `cache_key` is content_id(judge id, rubric hash, prompt hash, response hash). For
each generation the current judgment of a judge is the one not superseded; it is reused (no call) on
a re-run whatever its status, unless `rejudge` (everything) or `only_unscored` (the unscored) asks
for a new one. A new judgment supersedes the old one (`superseded_by`), which stays as history. A
scored judgment of the same judge on the same prompt and response in another evaluation is copied
(no call, cost 0, attempts 0). `fix` re-parses stored raw replies with the current parser, without
calls, and records a changed verdict as a new judgment that supersedes the old one.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import update
from sqlmodel import select

from spt.errors import SptError
from spt.judge.backends import HFJudge, OpenAIJudge, Outcome, RetryPolicy, keyword_outcome
from spt.judge.metrics import compute_judge_metrics
from spt.judge.prices import cost_usd, load_price_table, price_for
from spt.judge.rubrics import Verdict
from spt.judge.specs import JudgeSpec, parse_judge_spec
from spt.store import BatchWriter, content_id, text_hash
from spt.store.models import Evaluation, Generation, Item, Judge, Judgment, Run

ProgressFactory = Callable[[str, int], AbstractContextManager[Callable[..., None]]]
TRANSPORT_REASONS = ("api_error", "timeout")


@dataclass
class _Gen:
    id: str
    evaluation_id: str
    prompt: str
    response: str
    label: str
    category: str | None


@dataclass
class _Work:
    gen: _Gen
    cache_key: str
    supersedes: str | None = None


@dataclass
class _Stats:
    judged: int = 0
    cached: int = 0
    fixed: int = 0
    not_judged: int = 0
    calls: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    unpriced: bool = False  # an openai judge whose model has no price in the table
    new_unscored: Counter = field(default_factory=Counter)


class _JudgmentWriter(BatchWriter):
    """BatchWriter that also marks superseded judgments, in the same transaction as their successors."""

    def __init__(self, store, batch_size: int = 64, interval_s: float = 2.0):
        super().__init__(store, batch_size=batch_size, interval_s=interval_s)
        self._supersede: list[tuple[str, str]] = []

    def add_judgment(self, row: Judgment, supersedes: str | None = None) -> None:
        if supersedes:
            self._supersede.append((supersedes, row.id))
        self.add(row)

    def flush(self) -> None:
        if self._pending or self._supersede:
            with self.store.write() as s:
                s.add_all(self._pending)
                for old, new in self._supersede:
                    s.execute(update(Judgment).where(Judgment.id == old).values(superseded_by=new))
            self.written += len(self._pending)
            self._pending = []
            self._supersede = []
        self._last_flush = time.monotonic()


@contextmanager
def _no_progress(description: str, total: int) -> Iterator[Callable[..., None]]:
    yield lambda *a, **k: None


# --------------------------------------------------------------------------- selecting evaluations


def resolve_evaluations(store, evaluation_ids: list[str] | None = None, run_ids: list[str] | None = None,
                        all_pending: bool = False, judge_ids: list[str] | None = None) -> list[str]:
    """Evaluation ids from explicit ids, runs (their evaluations) or pending ones; SptError if none."""
    out: list[str] = []
    with store.session() as s:
        for eid in evaluation_ids or []:
            if s.get(Evaluation, eid) is None:
                raise SptError(f"evaluation {eid} not found in {store.path}; list evaluations with `spt runs`")
            out.append(eid)
        for rid in run_ids or []:
            if s.get(Run, rid) is None:
                raise SptError(f"run {rid} not found in {store.path}; list runs with `spt runs`")
            evs = s.exec(select(Evaluation.id).where(Evaluation.run_id == rid).order_by(Evaluation.created_at)).all()
            if not evs:
                raise SptError(f"run {rid} has no evaluations; run `spt evaluate {rid}` first")
            out.extend(evs)
    if all_pending:
        out.extend(pending_evaluations(store, judge_ids))
    seen: set[str] = set()
    return [e for e in out if not (e in seen or seen.add(e))]


def pending_evaluations(store, judge_ids: list[str] | None = None) -> list[str]:
    """Finished evaluations with generations that lack a current judgment (by any of `judge_ids`, or
    by any judge at all when None), oldest first."""
    with store.session() as s:
        evs = s.exec(select(Evaluation.id).where(Evaluation.status == "done").order_by(Evaluation.created_at)).all()
        pending = []
        for eid in evs:
            gens = set(s.exec(select(Generation.id).where(Generation.evaluation_id == eid)).all())
            if not gens:
                continue
            q = (select(Judgment.judge_id, Judgment.generation_id)
                 .join(Generation, Generation.id == Judgment.generation_id)
                 .where(Generation.evaluation_id == eid, Judgment.superseded_by.is_(None)))
            judged: dict[str, set[str]] = {}
            for jid, gid in s.exec(q).all():
                judged.setdefault(jid, set()).add(gid)
            if judge_ids is None:
                done = set().union(*judged.values()) if judged else set()
                if gens - done:
                    pending.append(eid)
            elif any(gens - judged.get(jid, set()) for jid in judge_ids):
                pending.append(eid)
    return pending


def _load_generations(store, evaluation_ids: list[str]) -> list[_Gen]:
    with store.session() as s:
        rows = s.exec(
            select(Generation.id, Generation.evaluation_id, Generation.prompt, Generation.response, Item.label,
                   Item.category)
            .join(Item, Item.id == Generation.item_id)
            .where(Generation.evaluation_id.in_(evaluation_ids))
            .order_by(Generation.evaluation_id, Generation.id)
        ).all()
    return [_Gen(*r) for r in rows]


def _cache_key(spec: JudgeSpec, g: _Gen) -> str:
    return content_id({"judge": spec.id, "rubric": spec.rubric_hash, "prompt": text_hash(g.prompt or ""),
                       "response": text_hash(g.response or "")})


def _ensure_judge(store, spec: JudgeSpec) -> None:
    with store.write() as s:
        if s.get(Judge, spec.id) is None:
            s.add(Judge(id=spec.id, name=spec.name, backend=spec.backend, model=spec.model, rubric=spec.rubric_name,
                        rubric_version=spec.rubric_version, rubric_hash=spec.rubric_hash or None,
                        config=spec.config))


def _current(store, judge_id: str, gen_ids: list[str], evaluation_ids: list[str]) -> dict[str, Judgment]:
    with store.session() as s:
        rows = s.exec(select(Judgment).join(Generation, Generation.id == Judgment.generation_id)
                      .where(Generation.evaluation_id.in_(evaluation_ids), Judgment.judge_id == judge_id,
                             Judgment.superseded_by.is_(None))).all()
    return {j.generation_id: j for j in rows}


def _reusable(store, judge_id: str, keys: list[str]) -> dict[str, Judgment]:
    """Scored current judgments of this judge by cache key (from any evaluation)."""
    out: dict[str, Judgment] = {}
    with store.session() as s:
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            for j in s.exec(select(Judgment).where(Judgment.judge_id == judge_id, Judgment.cache_key.in_(chunk),
                                                   Judgment.status == "scored",
                                                   Judgment.superseded_by.is_(None))).all():
                out.setdefault(j.cache_key, j)
    return out


def _row(spec: JudgeSpec, w: _Work, o: Outcome, cost: float | None) -> Judgment:
    v = o.verdict
    return Judgment(judge_id=spec.id, generation_id=w.gen.id, cache_key=w.cache_key, status=v.status,
                    reason=v.reason, score=v.score if v.status == "scored" else None,
                    label=v.label if v.status == "scored" else None, raw=o.raw, resolved_model=o.resolved_model,
                    prompt_tokens=o.prompt_tokens, completion_tokens=o.completion_tokens, latency_s=o.latency_s,
                    cost_usd=cost, attempts=o.attempts)


def _copy(old: Judgment, **changes: Any) -> Judgment:
    fields = {k: getattr(old, k) for k in ("judge_id", "generation_id", "cache_key", "status", "reason", "score",
                                           "label", "raw", "resolved_model", "prompt_tokens", "completion_tokens",
                                           "latency_s", "cost_usd", "attempts")}
    fields.update(changes)
    return Judgment(**fields)


# --------------------------------------------------------------------------- the run


class _Runner:
    def __init__(self, store, *, base_url, api_key, timeout, max_connections, policy, prices, cost_limit,
                 progress: ProgressFactory):
        self.store = store
        self.base_url = base_url
        self.api_key = api_key
        self.timeout = timeout
        self.max_connections = max_connections
        self.policy = policy
        self.prices = prices
        self.cost_limit = cost_limit
        self.progress = progress
        self.total_cost = 0.0
        self.stopped: str | None = None  # cost_limit | fatal
        self.fatal: str | None = None

    def _rate(self, stats: _Stats, done: int, t0: float) -> str:
        el = max(1e-9, time.perf_counter() - t0)
        tok = stats.prompt_tokens + stats.completion_tokens
        return f"{done / el:.1f}/s  {tok:,} tok  ${self.total_cost:.4f}"

    def _limit_reached(self) -> bool:
        return self.cost_limit is not None and self.total_cost >= self.cost_limit

    def _record(self, spec: JudgeSpec, stats: _Stats, writer: _JudgmentWriter, w: _Work, o: Outcome) -> None:
        price = price_for(self.prices, spec.model, o.resolved_model) if spec.backend == "openai" else None
        cost = cost_usd(price, o.prompt_tokens, o.completion_tokens)
        if spec.backend != "openai":
            cost = 0.0
        elif price is None:
            stats.unpriced = True
        stats.judged += 1
        stats.prompt_tokens += o.prompt_tokens or 0
        stats.completion_tokens += o.completion_tokens or 0
        if cost:
            stats.cost_usd += cost
            self.total_cost += cost
        if o.verdict.status != "scored":
            stats.new_unscored[o.verdict.reason or "unknown"] += 1
        writer.add_judgment(_row(spec, w, o, cost), w.supersedes)

    def run(self, spec: JudgeSpec, todo: list[_Work], stats: _Stats, writer: _JudgmentWriter) -> None:
        if not todo:
            return
        with self.progress(f"judge {spec.name}", len(todo)) as advance:
            if spec.backend == "keyword":
                t0 = time.perf_counter()
                for i, w in enumerate(todo, 1):
                    self._record(spec, stats, writer, w, keyword_outcome(spec, w.gen.response))
                    advance(1, rate=self._rate(stats, i, t0))
            elif spec.backend == "hf":
                self._run_hf(spec, todo, stats, writer, advance)
            else:
                _run_coroutine(self._run_openai(spec, todo, stats, writer, advance))

    def _run_hf(self, spec, todo, stats, writer, advance) -> None:
        judge = HFJudge(spec)
        t0 = time.perf_counter()
        done = 0
        for i in range(0, len(todo), judge.batch_size):
            batch = todo[i:i + judge.batch_size]
            outcomes = judge.judge_batch([(w.gen.prompt, w.gen.response) for w in batch])
            for w, o in zip(batch, outcomes, strict=True):
                self._record(spec, stats, writer, w, o)
            done += len(batch)
            stats.calls += len(batch)
            advance(len(batch), rate=self._rate(stats, done, t0))

    async def _run_openai(self, spec, todo, stats, writer, advance) -> None:
        stop = asyncio.Event()  # no new calls (cost limit or fatal)
        abort = asyncio.Event()  # fatal: in-flight retries give up too
        judge = OpenAIJudge(spec, base_url=self.base_url, api_key=self.api_key, timeout=self.timeout,
                            policy=self.policy, abort=abort)
        queue = iter(todo)
        t0 = time.perf_counter()
        done = 0

        async def worker() -> None:
            nonlocal done
            for w in queue:  # a shared iterator: each item goes to exactly one worker
                if stop.is_set():
                    return
                if self._limit_reached():
                    self.stopped = self.stopped or "cost_limit"
                    stop.set()
                    return
                o = await judge.judge(spec.rubric.render(w.gen.prompt, w.gen.response))
                if o.fatal:
                    if self.fatal is None and o.fatal != "aborted":
                        self.fatal = o.fatal
                    self.stopped = "fatal"
                    stop.set()
                    abort.set()
                    return
                self._record(spec, stats, writer, w, o)
                done += 1
                advance(1, rate=self._rate(stats, done, t0))

        try:
            await asyncio.gather(*(worker() for _ in range(min(self.max_connections, len(todo)))))
        finally:
            stats.calls += judge.calls
            stats.retries += judge.retries
            await judge.close()


def _run_coroutine(coro) -> Any:
    """asyncio.run, also from inside a running loop (notebooks): then in a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coro)
        except BaseException as e:  # re-raised in the caller's thread
            result["error"] = e

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")


def _api_key(base_url: str | None, api_key_env: str | None) -> str:
    if api_key_env:
        key = os.environ.get(api_key_env)
        if not key:
            raise SptError(f"environment variable {api_key_env} (named by --api-key-env) is not set or empty")
        return key
    if base_url is None:
        key = os.environ.get("OPENAI_API_KEY")
        if not key:
            raise SptError("OPENAI_API_KEY is not set: export it for the OpenAI API, or pass --base-url for another "
                           "endpoint (with --api-key-env VAR if it needs a key)")
        return key
    return "EMPTY"  # a custom endpoint gets no key unless one is named explicitly


def _retry_base() -> float:
    try:
        return float(os.environ.get("SPT_JUDGE_RETRY_BASE_S", "1.0"))
    except ValueError:
        return 1.0


def judge_evaluations(
    store,
    evaluation_ids: list[str],
    judges: list[str] | None = None,
    rubric: str = "refusal",
    base_url: str | None = None,
    api_key_env: str | None = None,
    max_connections: int = 16,
    max_retries: int = 4,
    timeout: float = 60.0,
    only_unscored: bool = False,
    rejudge: bool = False,
    fix: bool = False,
    price_table: str | os.PathLike | dict | None = None,
    cost_limit: float | None = None,
    progress: ProgressFactory | None = None,
    retry_base_s: float | None = None,
) -> dict[str, Any]:
    """Judge every generation of `evaluation_ids` with each judge spec; returns a summary per judge.

    Specs: "keyword", "keyword:PRESET", "openai:MODEL", "hf:PATH". Raises SptError on bad input
    before anything is written; raises SptError after storing completed judgments (and metrics) when
    the endpoint becomes unusable (unreachable, rejected key, unknown model).
    """
    judges = list(judges or ["keyword"])
    if not evaluation_ids:
        raise SptError("nothing to judge: pass EVAL_ID, --run RUN_ID or --all-pending")
    if max_connections < 1:
        raise SptError(f"--max-connections must be at least 1 (got {max_connections})")
    if max_retries < 0:
        raise SptError(f"--max-retries must be 0 or more (got {max_retries})")
    if not timeout or timeout <= 0:
        raise SptError(f"--timeout must be a positive number of seconds (got {timeout})")
    if cost_limit is not None and cost_limit < 0:
        raise SptError(f"--cost-limit must be 0 or more USD (got {cost_limit})")
    if sum([only_unscored, rejudge, fix]) > 1:
        raise SptError("--only-unscored, --rejudge and --fix exclude each other; pass one")
    specs = [parse_judge_spec(j, rubric) for j in judges]
    seen_ids: set[str] = set()
    specs = [s for s in specs if not (s.id in seen_ids or seen_ids.add(s.id))]
    resolve_evaluations(store, evaluation_ids)  # every id must exist
    prices = price_table if isinstance(price_table, dict) else load_price_table(price_table)
    api_key = ""
    if any(s.backend == "openai" for s in specs) and not fix:
        api_key = _api_key(base_url, api_key_env)
        if cost_limit is not None:
            for s in specs:
                if s.backend == "openai" and price_for(prices, s.model) is None:
                    raise SptError(f"--cost-limit needs a price for {s.model}: add it to --price-table "
                                   "(model: {input: $/1M tokens, output: $/1M tokens})")

    gens = _load_generations(store, evaluation_ids)
    runner = _Runner(store, base_url=base_url, api_key=api_key, timeout=float(timeout),
                     max_connections=max_connections,
                     policy=RetryPolicy(max_retries=max_retries,
                                        base_s=_retry_base() if retry_base_s is None else retry_base_s),
                     prices=prices, cost_limit=cost_limit, progress=progress or _no_progress)
    summary: dict[str, Any] = {"evaluations": list(evaluation_ids), "generations": len(gens), "judges": [],
                               "stopped": None, "error": None}
    for spec in specs:
        _ensure_judge(store, spec)
        stats = _Stats()
        current = _current(store, spec.id, [g.id for g in gens], evaluation_ids)
        writer = _JudgmentWriter(store)
        todo: list[_Work] = []
        keys = {g.id: _cache_key(spec, g) for g in gens}
        reusable = {} if (fix or rejudge) else _reusable(store, spec.id, [k for g, k in keys.items()
                                                                            if g not in current])
        with writer:
            for g in gens:
                key = keys[g.id]
                old = current.get(g.id)
                if fix:
                    if old is None:
                        stats.not_judged += 1
                    elif _fix_one(spec, g, old, writer):
                        stats.fixed += 1
                    else:
                        stats.cached += 1
                    continue
                if old is not None:
                    if rejudge or (only_unscored and old.status != "scored"):
                        todo.append(_Work(g, key, supersedes=old.id))
                    else:
                        stats.cached += 1
                    continue
                if only_unscored:
                    stats.not_judged += 1
                    continue
                if key in reusable:
                    writer.add_judgment(_copy(reusable[key], generation_id=g.id, cost_usd=0.0, attempts=0,
                                              latency_s=0.0))
                    stats.cached += 1
                    continue
                todo.append(_Work(g, key))
            if runner.stopped is None:
                runner.run(spec, todo, stats, writer)
            stats.not_judged += len(todo) - stats.judged
        summary["judges"].append(_judge_summary(store, spec, stats, gens, evaluation_ids))
    summary["stopped"] = runner.stopped
    summary["cost_usd"] = runner.total_cost
    if runner.fatal:
        summary["error"] = runner.fatal
        kept = sum(j["judged"] for j in summary["judges"])
        raise JudgeRunError(f"{runner.fatal}; {kept} judgments completed before that are kept", summary)
    return summary


class JudgeRunError(SptError):
    """The endpoint became unusable mid-run; completed judgments are stored. `.summary` has the counts."""

    def __init__(self, message: str, summary: dict[str, Any]):
        super().__init__(message)
        self.summary = summary


def _fix_one(spec: JudgeSpec, g: _Gen, old: Judgment, writer: _JudgmentWriter) -> bool:
    """Re-derive the verdict of `old` without a call; store a superseding judgment if it changed."""
    if spec.backend == "keyword":
        v = keyword_outcome(spec, g.response).verdict
    elif old.raw is None or old.reason in TRANSPORT_REASONS:
        return False
    elif spec.backend == "hf" and spec.hf_mode == "classifier":
        from spt.judge.backends import classifier_verdict

        v = classifier_verdict(old.raw)
    elif old.reason == "judge_refused" and old.raw == "":
        return False
    else:
        assert spec.rubric is not None
        v = spec.rubric.parse(old.raw)
    new = Verdict(v.status, v.reason, v.score if v.status == "scored" else None,
                  v.label if v.status == "scored" else None)
    if (new.status, new.reason, new.score, new.label) == (old.status, old.reason, old.score, old.label):
        return False
    writer.add_judgment(_copy(old, status=new.status, reason=new.reason, score=new.score, label=new.label),
                        supersedes=old.id)
    return True


def _judge_summary(store, spec: JudgeSpec, stats: _Stats, gens: list[_Gen], evaluation_ids: list[str]):
    current = _current(store, spec.id, [g.id for g in gens], evaluation_ids)
    unscored = Counter(j.reason or "unknown" for j in current.values() if j.status != "scored")
    metrics = []
    for eid in evaluation_ids:
        for m in compute_judge_metrics(store, eid, spec.id):
            if m["category"] == "all":
                metrics.append({k: m[k] for k in ("evaluation_id", "name", "value", "ci_low", "ci_high", "n",
                                                  "n_unscored")})
    return {
        "judge_id": spec.id, "name": spec.name, "backend": spec.backend, "model": spec.model,
        "rubric": spec.rubric_name, "rubric_version": spec.rubric_version, "generations": len(gens),
        "judged": stats.judged, "cached": stats.cached, "fixed": stats.fixed, "not_judged": stats.not_judged,
        "scored": sum(1 for j in current.values() if j.status == "scored"), "unscored": dict(unscored),
        "new_unscored": dict(stats.new_unscored), "calls": stats.calls, "retries": stats.retries,
        "prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.completion_tokens,
        "cost_usd": stats.cost_usd, "priced": not stats.unpriced, "metrics": metrics,
    }
