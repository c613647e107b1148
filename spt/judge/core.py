"""Judging evaluations: plan (cache, re-judge, fix), call the backend, store judgments, compute metrics.

Cache: a judgment's `cache_key` is content_id(judge id, rubric hash, prompt hash, response hash). For
each generation the current judgment of a judge is the one not superseded; it is reused (no call) on
a re-run whatever its status, unless `rejudge` (everything) or `only_unscored` (the unscored) asks
for a new one. A new judgment supersedes the old one (`superseded_by`), which stays as history. A
scored judgment of the same judge on the same prompt and response in another evaluation is copied
(no call, cost 0, attempts 0). `fix` re-parses stored raw replies with the current parser, without
calls, and records a changed verdict as a new judgment that supersedes the old one.

One current judgment per (judge, generation), also with several processes judging the same
evaluation at once: judgments are written in batches inside one write transaction (the store's
write lock), where a new judgment is inserted only if its generation still has no current judgment
of that judge (insert-or-ignore), and a re-judgment first marks its predecessor superseded, only if
that one is still current, and only then is inserted. The loser of a race drops its judgment
(counted in `dropped`). Batches are committed as they fill, so a killed run keeps what it judged and
a re-run judges only the rest. SIGTERM/SIGINT stop new calls, store the replies in flight and raise
`JudgeInterrupted` (exit 143/130), so a preempted judge job loses no paid call.

Backends are reached only through `spt.judge.backends` (the `Backend` protocol): this module never
looks at a backend's name.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, update
from sqlmodel import select

from spt.engines.base import FAILED_FINISH
from spt.errors import SptError
from spt.judge.backends import JudgeContext, Outcome
from spt.judge.metrics import compute_judge_metrics
from spt.judge.options import JudgeOptions
from spt.judge.prices import load_price_table
from spt.judge.result import JudgeMetric, JudgeResult, JudgeSummary
from spt.judge.specs import JudgeSpec, parse_judge_spec
from spt.progress import ProgressFn, report
from spt.store import content_id, text_hash
from spt.store.models import Evaluation, Generation, Item, Judge, Judgment, Run


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


class _JudgmentWriter:
    """Commits judgments in batches, keeping one current judgment per (judge, generation).

    Each flush is one write transaction (BEGIN IMMEDIATE: no other writer runs meanwhile). In it a
    judgment that supersedes another is inserted only after the UPDATE that marks its predecessor
    superseded succeeded on a still-current row, so a partial unique index on current judgments is
    never violated; a fresh judgment is inserted only when its generation has no current judgment of
    that judge. Anything else lost a race with another process and is dropped (`dropped`).
    """

    def __init__(self, store, batch_size: int = 64, interval_s: float = 2.0):
        self.store = store
        self.batch_size = batch_size
        self.interval_s = interval_s
        self._pending: list[tuple[Judgment, str | None]] = []
        self._last_flush = time.monotonic()
        self.written = 0
        self.dropped = 0

    def add_judgment(self, row: Judgment, supersedes: str | None = None) -> None:
        self._pending.append((row, supersedes))
        if len(self._pending) >= self.batch_size or time.monotonic() - self._last_flush >= self.interval_s:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            with self.store.write() as s:
                taken = self._current_pairs(s, [r for r, sup in self._pending if sup is None])
                keep: list[Judgment] = []
                for row, supersedes in self._pending:
                    key = (row.judge_id, row.generation_id)
                    if supersedes is not None:
                        res = s.execute(update(Judgment)
                                        .where(Judgment.id == supersedes, Judgment.superseded_by.is_(None))
                                        .values(superseded_by=row.id)
                                        .execution_options(synchronize_session=False))
                        if res.rowcount != 1:  # another process superseded it first
                            self.dropped += 1
                            continue
                    elif key in taken:
                        self.dropped += 1
                        continue
                    taken.add(key)
                    keep.append(row)
                # inserted only now, after every predecessor of this batch stopped being current
                s.add_all(keep)
                self.written += len(keep)
            self._pending = []
        self._last_flush = time.monotonic()

    @staticmethod
    def _current_pairs(s, rows: list[Judgment]) -> set[tuple[str, str]]:
        """(judge, generation) pairs among `rows` that already have a current judgment in the store."""
        out: set[tuple[str, str]] = set()
        by_judge: dict[str, list[str]] = {}
        for r in rows:
            by_judge.setdefault(r.judge_id, []).append(r.generation_id)
        for jid, gids in by_judge.items():
            for i in range(0, len(gids), 500):
                q = select(Judgment.generation_id).where(Judgment.judge_id == jid,
                                                         Judgment.generation_id.in_(gids[i:i + 500]),
                                                         Judgment.superseded_by.is_(None))
                out.update((jid, g) for g in s.exec(q).all())
        return out

    def __enter__(self) -> _JudgmentWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.flush()


# --------------------------------------------------------------------------- selecting evaluations


def resolve_evaluations(store, evaluation_ids: list[str] | None = None, run_ids: list[str] | None = None,
                        all_pending: bool = False, judge_ids: list[str] | None = None,
                        on: str = "response") -> list[str]:
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
        out.extend(pending_evaluations(store, judge_ids, on))
    seen: set[str] = set()
    return [e for e in out if not (e in seen or seen.add(e))]


def pending_evaluations(store, judge_ids: list[str] | None = None, on: str = "response") -> list[str]:
    """Finished evaluations with generations that lack a current judgment (by any of `judge_ids`, or
    by any judge at all when None), oldest first; with `on="thinking"` only generations with a thinking part
    count."""
    with store.session() as s:
        evs = s.exec(select(Evaluation.id).where(Evaluation.status == "done").order_by(Evaluation.created_at)).all()
        pending = []
        for eid in evs:
            if on == "thinking":
                gens = {gid for gid, meta in s.exec(select(Generation.id, Generation.meta)
                                                    .where(Generation.evaluation_id == eid)).all()
                        if (meta or {}).get("thinking")}
            else:
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


def _load_generations(store, evaluation_ids: list[str], on: str = "response") -> list[_Gen]:
    """The generations to judge; with `on="thinking"` their thinking as the text, and only those with one."""
    with store.session() as s:
        rows = s.exec(
            select(Generation.id, Generation.evaluation_id, Generation.prompt, Generation.response, Item.label,
                   Item.category, Generation.meta)
            .join(Item, Item.id == Generation.item_id)
            .where(Generation.evaluation_id.in_(evaluation_ids))
            # a generation the engine could not produce has no reply to judge (it is counted as failed)
            .where(or_(Generation.finish_reason.is_(None), Generation.finish_reason != FAILED_FINISH))
            .order_by(Generation.evaluation_id, Generation.id)
        ).all()
    if on == "thinking":
        return [_Gen(*r[:3], (r[6] or {})["thinking"], *r[4:6]) for r in rows if (r[6] or {}).get("thinking")]
    return [_Gen(*r[:6]) for r in rows]


def _cache_key(spec: JudgeSpec, g: _Gen) -> str:
    return content_id({"judge": spec.id, "rubric": spec.rubric_hash, "prompt": text_hash(g.prompt or ""),
                       "response": text_hash(g.response or "")})


def _ensure_judge(store, spec: JudgeSpec) -> None:
    with store.write() as s:
        if s.get(Judge, spec.id) is None:
            s.add(Judge(id=spec.id, name=spec.name, backend=spec.backend, model=spec.model, rubric=spec.rubric_name,
                        rubric_version=spec.rubric_version, rubric_hash=spec.rubric_hash or None,
                        config=spec.config))


def _current(store, judge_id: str, evaluation_ids: list[str]) -> dict[str, Judgment]:
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
    """Calls each judge's backend on its work list, recording outcomes (and their cost) as they arrive."""

    def __init__(self, options: JudgeOptions, prices: dict[str, dict[str, float]], progress: ProgressFn | None,
                 signalled: Callable[[], int | None] = lambda: None):
        self.options = options
        self.prices = prices
        self.progress = progress
        self.signalled = signalled  # the signal (SIGTERM/SIGINT) that asked this run to stop, if any
        self.total_cost = 0.0
        self.stopped: str | None = None  # cost_limit | interrupted | fatal
        self.fatal: str | None = None

    def _stop_reason(self) -> str | None:
        """Why no further call may start: a signal arrived, or the cost limit is reached."""
        if self.signalled():
            return "interrupted"
        limit = self.options.cost_limit
        return "cost_limit" if limit is not None and self.total_cost >= limit else None

    def _record(self, spec: JudgeSpec, stats: JudgeSummary, writer: _JudgmentWriter, w: _Work, o: Outcome) -> None:
        cost = spec.impl.cost(spec, o, self.prices)
        if cost is None:
            stats.priced = False  # a paid judge whose model has no price in the table
        stats.judged += 1
        stats.prompt_tokens += o.prompt_tokens or 0
        stats.completion_tokens += o.completion_tokens or 0
        if cost:
            stats.cost_usd += cost
            self.total_cost += cost
        if o.verdict.status != "scored":
            reason = o.verdict.reason or "unknown"
            stats.new_unscored[reason] = stats.new_unscored.get(reason, 0) + 1
        writer.add_judgment(_row(spec, w, o, cost), w.supersedes)

    def run(self, spec: JudgeSpec, todo: list[_Work], stats: JudgeSummary, writer: _JudgmentWriter,
            credentials: Any) -> None:
        if not todo:
            return
        ctx = JudgeContext(self.options, credentials, stop_reason=self._stop_reason)
        task, total, done = f"judge {spec.name}", len(todo), 0
        report(self.progress, task, done, total, "judgments")

        def emit(i: int, outcome: Outcome) -> None:
            nonlocal done
            self._record(spec, stats, writer, todo[i], outcome)
            done += 1
            report(self.progress, task, done, total, "judgments", cost_usd=self.total_cost,
                   tokens_total=stats.prompt_tokens + stats.completion_tokens)

        batch = spec.impl.judge_batch(spec, [(w.gen.prompt, w.gen.response) for w in todo], ctx, emit)
        stats.calls += batch.calls
        stats.retries += batch.retries
        if batch.fatal and self.fatal is None:
            self.fatal = batch.fatal
        if batch.stopped:
            self.stopped = batch.stopped


def judge_evaluations(store, evaluation_ids: list[str], options: JudgeOptions | None = None, *,
                      progress: ProgressFn | None = None, **option_fields: Any) -> JudgeResult:
    """Judge every generation of `evaluation_ids` with each judge of `options`; a summary per judge.

    `option_fields` are JudgeOptions fields (`judges=[...], rubric=..., ...`) applied on top
    of `options`. Raises SptError on bad input before anything is written; raises JudgeRunError
    (carrying the result) after storing completed judgments (and metrics) when an endpoint becomes
    unusable (unreachable, rejected key, unknown model), and JudgeInterrupted after SIGTERM/SIGINT
    once the calls in flight are stored.
    """
    opts = JudgeOptions.of(options, **option_fields)
    if not evaluation_ids:
        raise SptError("nothing to judge: pass EVAL_ID, `run` RUN_ID or `all_pending`")
    opts.validate()
    specs = [parse_judge_spec(j, opts.rubric, opts.on) for j in opts.judges]
    seen_ids: set[str] = set()
    specs = [s for s in specs if not (s.id in seen_ids or seen_ids.add(s.id))]
    resolve_evaluations(store, evaluation_ids)  # every id must exist
    pt = opts.price_table
    prices = pt if isinstance(pt, dict) else load_price_table(pt)
    credentials: dict[str, Any] = {}
    if not opts.fix:  # --fix makes no calls: it needs no key and spends nothing
        for s in specs:
            credentials[s.id] = s.impl.check_credentials(s, opts)
            if opts.cost_limit is not None and s.impl.unpriced(s, prices):
                raise SptError(f"`cost_limit` needs a price for {s.model}: add it to `price_table` "
                               "(model: {input: $/1M tokens, output: $/1M tokens})")

    from spt.signals import StopOnSignal, signal_name

    gens = _load_generations(store, evaluation_ids, opts.on)
    if opts.on == "thinking" and not gens:
        raise SptError("no generation of these evaluations has a thinking part to judge; evaluate a reasoning "
                       "model with `spt evaluate --reasoning think` (or tags:OPEN,ANSWER) first")
    result = JudgeResult(evaluations=list(evaluation_ids), generations=len(gens))
    with StopOnSignal() as signals:  # SIGTERM/SIGINT: no new calls; what is in flight is stored
        runner = _Runner(opts, prices, progress, lambda: signals.signum)
        for spec in specs:
            _ensure_judge(store, spec)
            stats = JudgeSummary(judge_id=spec.id, name=spec.name, backend=spec.backend, model=spec.model,
                                 rubric=spec.rubric_name, rubric_version=spec.rubric_version, generations=len(gens))
            writer = _JudgmentWriter(store)
            with writer:
                todo = _plan(store, spec, gens, evaluation_ids, opts, stats, writer)
                if runner.stopped is None:
                    runner.run(spec, todo, stats, writer, credentials.get(spec.id))
                stats.not_judged += len(todo) - stats.judged
            result.judges.append(_finish_summary(store, stats, writer.dropped, evaluation_ids))
        signum = signals.signum
    result.stopped = runner.stopped
    result.cost_usd = runner.total_cost
    kept = sum(j.judged - j.dropped for j in result.judges)  # stored by this run
    if runner.fatal:
        result.error = runner.fatal
        raise JudgeRunError(f"{runner.fatal}; {kept} judgments completed before that are kept", result)
    if signum:
        left = sum(j.not_judged for j in result.judges)
        result.stopped = "interrupted"
        result.error = f"interrupted by {signal_name(signum)}"
        raise JudgeInterrupted(f"interrupted by {signal_name(signum)}: {kept} judgments stored, {left} generations "
                               "not judged; run the same command again to judge only those", result, signum)
    return result


def _plan(store, spec: JudgeSpec, gens: list[_Gen], evaluation_ids: list[str], opts: JudgeOptions, stats: JudgeSummary,
          writer: _JudgmentWriter) -> list[_Work]:
    """The generations to send to the judge; cached ones are counted, copies and fixes written."""
    current = _current(store, spec.id, evaluation_ids)
    keys = {g.id: _cache_key(spec, g) for g in gens}
    fresh = opts.fix or opts.rejudge
    reusable = {} if fresh else _reusable(store, spec.id, [k for g, k in keys.items() if g not in current])
    todo: list[_Work] = []
    for g in gens:
        key = keys[g.id]
        old = current.get(g.id)
        if opts.fix:
            if old is None:
                stats.not_judged += 1
            elif _fix_one(spec, g, old, writer):
                stats.fixed += 1
            else:
                stats.cached += 1
            continue
        if old is not None:
            if opts.rejudge or (opts.only_unscored and old.status != "scored"):
                todo.append(_Work(g, key, supersedes=old.id))
            else:
                stats.cached += 1
            continue
        if opts.only_unscored:
            stats.not_judged += 1
            continue
        if key in reusable:
            writer.add_judgment(_copy(reusable[key], generation_id=g.id, cost_usd=0.0, attempts=0, latency_s=0.0))
            stats.cached += 1
            continue
        todo.append(_Work(g, key))
    return todo


class JudgeRunError(SptError):
    """An endpoint became unusable mid-run; completed judgments are stored. `.result` has the counts."""

    def __init__(self, message: str, result: JudgeResult):
        super().__init__(message)
        self.result = result


class JudgeInterrupted(JudgeRunError):
    """SIGTERM/SIGINT stopped the run after the calls in flight; every judgment made is stored.

    Exits 128 + the signal number (143 for SIGTERM, 130 for SIGINT), like an interrupted finetune.
    """

    def __init__(self, message: str, result: JudgeResult, signum: int):
        super().__init__(message, result)
        self.signum = signum
        self.exit_code = 128 + int(signum)


def _fix_one(spec: JudgeSpec, g: _Gen, old: Judgment, writer: _JudgmentWriter) -> bool:
    """Re-derive the verdict of `old` without a call; store a superseding judgment if it changed."""
    v = spec.impl.reparse(spec, old.raw, old.reason, g.response)
    if v is None:
        return False
    new = (v.status, v.reason, v.score if v.status == "scored" else None, v.label if v.status == "scored" else None)
    if new == (old.status, old.reason, old.score, old.label):
        return False
    writer.add_judgment(_copy(old, status=new[0], reason=new[1], score=new[2], label=new[3]), supersedes=old.id)
    return True


def _finish_summary(store, summary: JudgeSummary, dropped: int, evaluation_ids: list[str]) -> JudgeSummary:
    """What the store holds for this judge after the run: current verdicts by status and its metrics."""
    current = _current(store, summary.judge_id, evaluation_ids)
    summary.dropped = dropped
    summary.scored = sum(1 for j in current.values() if j.status == "scored")
    summary.unscored = dict(Counter(j.reason or "unknown" for j in current.values() if j.status != "scored"))
    summary.metrics = [JudgeMetric(**{k: m[k] for k in ("evaluation_id", "name", "value", "ci_low", "ci_high", "n",
                                                        "n_unscored")})
                       for eid in evaluation_ids for m in compute_judge_metrics(store, eid, summary.judge_id)
                       if m["category"] == "all"]
    return summary
