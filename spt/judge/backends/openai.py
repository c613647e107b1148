"""`openai:MODEL`: any OpenAI-compatible chat endpoint (OpenAI, vLLM, TGI, transformers serve, ...).

Calls run concurrently on one AsyncOpenAI client (at most `max_connections` in flight), with bounded
retries (exponential backoff with jitter, honouring Retry-After) on 408/409/425/429, 5xx, timeouts and
connection errors. A 401/403/404, or an endpoint still unreachable after the retries, is fatal: the
run stops, keeping what was judged. The API key lives only in the client; replies and errors are
scrubbed of it before they are stored or printed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from spt.engines._openai_common import RETRY_STATUS, RetryPolicy, run_coroutine, scrub
from spt.engines._openai_common import retry_after as _retry_after
from spt.judge.backends.base import BaseBackend, BatchReport, Emit, JudgeContext, Outcome
from spt.judge.prices import cost_usd, price_for
from spt.judge.rubrics import Verdict
from spt.judge.specs import JudgeSpec, rubric_judge_spec

FATAL_STATUS = {401: "the endpoint rejected the credentials (HTTP 401); name the variable that holds the key "
                     "with --api-key-env VAR",
                403: "the endpoint refused access (HTTP 403); check the key named by --api-key-env and its "
                     "permissions",
                404: "the endpoint has no such model or route (HTTP 404); check the model name in "
                     "--judge openai:MODEL and that --base-url ends in /v1"}
ABORTED = "aborted"  # a call given up because another call proved the endpoint unusable


def _retry_base() -> float:
    from spt.env import env_float

    return env_float("SPT_JUDGE_RETRY_BASE_S", 1.0)


class OpenAIJudge:
    """One AsyncOpenAI client shared by the workers of a judge run. The key lives only here."""

    def __init__(self, spec: JudgeSpec, *, base_url: str | None, api_key: str, timeout: float,
                 policy: RetryPolicy, abort: asyncio.Event):
        import openai

        self.spec = spec
        self.policy = policy
        self.abort = abort  # set when the endpoint proved unusable: stop retrying, record nothing more
        self.base_url = base_url
        self._key = api_key
        kwargs: dict[str, Any] = {"api_key": api_key, "max_retries": 0, "timeout": timeout}
        if base_url is not None:
            kwargs["base_url"] = base_url
        self.client = openai.AsyncOpenAI(**kwargs)
        self.calls = 0
        self.retries = 0

    def scrub(self, text: str, limit: int | None = 500) -> str:
        """Replies and errors are stored and printed: make sure the key never is."""
        return scrub(text, self._key, limit)

    async def close(self) -> None:
        try:
            await self.client.close()
        except Exception:
            pass

    async def judge(self, judge_prompt: str) -> tuple[Outcome, str | None]:
        """(outcome, fatal): `fatal` set means the whole run must stop and this outcome is not recorded."""
        import openai

        spec = self.spec
        attempts = 0
        t0 = time.perf_counter()
        while True:
            attempts += 1
            self.calls += 1
            failure: str | None = None
            retryable = False
            retry_after = None
            try:
                resp = await self.client.chat.completions.create(
                    model=spec.model,
                    messages=[{"role": "user", "content": judge_prompt}],
                    temperature=spec.config.get("temperature", 0.0),
                    max_tokens=spec.max_tokens,
                )
                return self._outcome(resp, attempts, time.perf_counter() - t0), None
            except openai.APITimeoutError:
                failure, retryable = "timeout", True
                detail = "timeout"
            except openai.APIConnectionError as e:
                failure, retryable = "connection", True
                detail = f"connection error: {e.__cause__ or e}"
            except openai.APIStatusError as e:
                status = e.status_code
                if status in FATAL_STATUS:
                    return Outcome(Verdict.unscored("api_error"), attempts=attempts), FATAL_STATUS[status]
                retryable = status in RETRY_STATUS or status >= 500
                failure = "status"
                detail = f"HTTP {status}: {getattr(e, 'message', '') or e}"
                retry_after = _retry_after(e)
            except openai.OpenAIError as e:  # malformed body and the like
                failure, retryable = "status", False
                detail = f"{type(e).__name__}: {e}"
            if self.abort.is_set():
                return Outcome(Verdict.unscored("api_error"), attempts=attempts), ABORTED
            if not retryable or attempts > self.policy.max_retries:
                latency = time.perf_counter() - t0
                if failure == "connection":
                    where = self.base_url or "the OpenAI API"
                    return (Outcome(Verdict.unscored("api_error"), attempts=attempts, latency_s=latency),
                            self.scrub(f"cannot reach {where} after {attempts} attempts ({detail}); check "
                                       "--base-url and that the server runs"))
                reason = "timeout" if failure == "timeout" else "api_error"
                return Outcome(Verdict.unscored(reason), raw=self.scrub(f"[{reason}] {detail}"), attempts=attempts,
                               latency_s=latency), None
            self.retries += 1
            await asyncio.sleep(self.policy.delay(attempts, retry_after))

    def _outcome(self, resp: Any, attempts: int, latency: float) -> Outcome:
        usage = getattr(resp, "usage", None)
        pt = getattr(usage, "prompt_tokens", None) if usage else None
        ct = getattr(usage, "completion_tokens", None) if usage else None
        choices = getattr(resp, "choices", None) or []
        base = {"resolved_model": getattr(resp, "model", None), "prompt_tokens": pt, "completion_tokens": ct,
                "latency_s": latency, "attempts": attempts}
        if not choices:
            return Outcome(Verdict.unscored("parse_failure"), raw="", **base)
        choice = choices[0]
        msg = choice.message
        content = msg.content if msg is not None else None
        refusal = getattr(msg, "refusal", None) if msg is not None else None
        if refusal or choice.finish_reason == "content_filter":
            return Outcome(Verdict.unscored("judge_refused"), raw=self.scrub(refusal or content or "", None), **base)
        raw = self.scrub(content or "", None)
        assert self.spec.rubric is not None
        return Outcome(self.spec.rubric.parse(raw), raw=raw, **base)


class OpenAIBackend(BaseBackend):
    name = "openai"
    usage = "openai:MODEL"

    def parse(self, spec: str, arg: str, rubric: str) -> JudgeSpec:
        return rubric_judge_spec(spec, self.name, arg, rubric)

    def check_credentials(self, spec: JudgeSpec, options: Any) -> str:
        """The API key: from --api-key-env, else OPENAI_API_KEY for the OpenAI API, else none ("EMPTY")."""
        from spt.engines.openai import api_key

        return api_key({"api_key_env": options.api_key_env, "base_url": options.base_url})

    def unpriced(self, spec: JudgeSpec, prices: dict[str, dict[str, float]]) -> bool:
        return price_for(prices, spec.model) is None

    def cost(self, spec: JudgeSpec, outcome: Outcome, prices: dict[str, dict[str, float]]) -> float | None:
        price = price_for(prices, spec.model, outcome.resolved_model)
        return cost_usd(price, outcome.prompt_tokens, outcome.completion_tokens)

    def judge_batch(self, spec: JudgeSpec, pairs: Sequence[tuple[str, str]], ctx: JudgeContext,
                    emit: Emit) -> BatchReport:
        return run_coroutine(self._run(spec, pairs, ctx, emit))

    async def _run(self, spec: JudgeSpec, pairs: Sequence[tuple[str, str]], ctx: JudgeContext,
                   emit: Emit) -> BatchReport:
        opts = ctx.options
        report = BatchReport()
        if not pairs:
            return report
        stop = asyncio.Event()  # no new calls (cost limit or fatal)
        abort = asyncio.Event()  # fatal: in-flight retries give up too
        policy = RetryPolicy(max_retries=opts.max_retries,
                             base_s=_retry_base() if opts.retry_base_s is None else opts.retry_base_s)
        judge = OpenAIJudge(spec, base_url=opts.base_url, api_key=ctx.credentials or "EMPTY",
                            timeout=float(opts.timeout), policy=policy, abort=abort)
        queue = iter(enumerate(pairs))
        assert spec.rubric is not None

        async def worker() -> None:
            for i, (prompt, response) in queue:  # a shared iterator: each pair goes to exactly one worker
                if stop.is_set():
                    return
                if ctx.should_stop():
                    report.stopped = report.stopped or ctx.stop_reason()
                    stop.set()
                    return
                outcome, fatal = await judge.judge(spec.rubric.render(prompt, response))
                if fatal:
                    if report.fatal is None and fatal != ABORTED:
                        report.fatal = fatal
                    report.stopped = "fatal"
                    stop.set()
                    abort.set()
                    return
                emit(i, outcome)

        try:
            await asyncio.gather(*(worker() for _ in range(min(opts.max_connections, len(pairs)))))
        finally:
            report.calls += judge.calls
            report.retries += judge.retries
            await judge.close()
        return report


BACKEND = OpenAIBackend()
