"""`openai`: any OpenAI-compatible chat-completions endpoint (vLLM, TGI, SGLang, `transformers serve`, APIs).

`target` is the served model name. Requests run concurrently on one AsyncOpenAI client (at most
`max_connections` in flight) with bounded retries (exponential backoff with jitter, honouring
Retry-After) on 408/409/425/429, 5xx, timeouts and connection errors. A request that still fails is a
`failed` result with its reason (callers store it and leave it out of every metric). A 401/403/404, or an
endpoint unreachable after the retries, proves the endpoint unusable: `generate` stops making calls,
returns what was answered, and sets `fatal` (callers then raise a one-line error).

The key is read from the variable named by `api_key_env` (else OPENAI_API_KEY for the OpenAI API, else no
key) and lives only in the client: `describe()` records the host, never the key, and error texts are
scrubbed of it. Greedy decoding is requested as temperature 0; the request `seed` is sent (servers that
honour it make sampling reproducible).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

from spt.engines._openai_common import RETRY_STATUS, RetryPolicy, retry_after, run_coroutine, scrub
from spt.engines.base import FAILED, Engine, EngineSpec, GenerationRequest, GenerationResult, OnResults
from spt.errors import SptError

OPTIONS = ("base_url", "api_key_env", "max_connections", "max_retries", "timeout", "retry_base_s")
FATAL_STATUS = {401: "the endpoint rejected the credentials (HTTP 401); name the variable that holds the key "
                     "with --api-key-env VAR",
                403: "the endpoint refused access (HTTP 403); check the key named by --api-key-env",
                404: "the endpoint has no such model or route (HTTP 404); check the model name after 'openai:' "
                     "and that --base-url ends in /v1"}
_FINISH = {"stop": "eos", "length": "length", "content_filter": "content_filter"}


def check_base_url(url: str | None) -> None:
    """SptError unless `url` (when given) is an http(s) URL with a host: one rule for engines and judges."""
    if url is None:
        return
    p = urlparse(str(url))
    if p.scheme not in ("http", "https") or not p.netloc:
        shown = url if len(str(url)) <= 80 else str(url)[:77] + "..."
        raise SptError(f"--base-url {shown!r} is not an http(s) URL; pass e.g. http://127.0.0.1:8000/v1")


def endpoint_host(base_url: str | None) -> str:
    """The host:port an evaluation records (the OpenAI API when no base URL is given)."""
    return urlparse(base_url).netloc if base_url else "api.openai.com"


def api_key(options: dict[str, Any]) -> str:
    """The key from `api_key_env`, else OPENAI_API_KEY for the OpenAI API, else "EMPTY" (no key)."""
    var = options.get("api_key_env")
    if var:
        key = os.environ.get(var)
        if not key:
            raise SptError(f"environment variable {var} (named by `api_key_env`) is not set or empty")
        return key
    if not options.get("base_url"):
        key = os.environ.get("OPENAI_API_KEY")
        if not key:
            raise SptError("the OpenAI API needs OPENAI_API_KEY, which is not set: export it, or pass `base_url` "
                           "for another endpoint (with `api_key_env` VAR if it needs a key)")
        return key
    return "EMPTY"


class OpenAIEngine:
    name = "openai"

    def __init__(self, spec: EngineSpec, key: str):
        self.spec = spec
        self.model = spec.target
        o = spec.options
        self.base_url = o.get("base_url")
        self.max_connections = int(o.get("max_connections") or 16)
        self.timeout = float(o.get("timeout") or 60.0)
        base = o.get("retry_base_s")
        if base is None:
            from spt.env import env_float

            base = env_float("SPT_JUDGE_RETRY_BASE_S", 1.0)
        self.policy = RetryPolicy(max_retries=int(o.get("max_retries", 4)), base_s=float(base))
        self._key = key
        self.fatal: str | None = None  # set when the endpoint proved unusable (see module doc)
        self.calls = 0
        self.retries = 0

    def identity(self) -> dict[str, Any]:
        # the served model; the host is part of the target's weights id (`served:HOST/MODEL`)
        return {"engine": self.name, "model": self.model}

    def describe(self) -> dict[str, Any]:
        return {**self.identity(), "host": endpoint_host(self.base_url), "max_connections": self.max_connections,
                "max_retries": self.policy.max_retries, "timeout": self.timeout}

    def scrub(self, text: str, limit: int | None = 500) -> str:
        return scrub(text, self._key, limit)

    def generate(self, requests: Sequence[GenerationRequest], *, on_results: OnResults | None = None
                 ) -> list[GenerationResult]:
        if not requests:
            return []
        self.fatal = None
        return run_coroutine(self._run(list(requests), on_results))

    async def _run(self, requests: list[GenerationRequest], on_results: OnResults | None) -> list[GenerationResult]:
        import openai

        kwargs: dict[str, Any] = {"api_key": self._key, "max_retries": 0, "timeout": self.timeout}
        if self.base_url:
            kwargs["base_url"] = self.base_url
        client = openai.AsyncOpenAI(**kwargs)
        out: list[GenerationResult] = []
        abort = asyncio.Event()
        queue = iter(enumerate(requests))

        async def worker() -> None:
            for i, req in queue:  # a shared iterator: each request goes to exactly one worker
                if abort.is_set():
                    return
                res, fatal = await self._one(client, i, req, abort)
                if fatal:
                    if self.fatal is None:
                        self.fatal = self.scrub(fatal)
                    abort.set()
                    return
                out.append(res)
                if on_results is not None:
                    on_results([res])

        try:
            await asyncio.gather(*(worker() for _ in range(min(self.max_connections, len(requests)))))
        finally:
            try:
                await client.close()
            except Exception:  # noqa: BLE001 - closing a broken client must not hide the result
                pass
        return sorted(out, key=lambda r: r.index)

    async def _one(self, client: Any, i: int, req: GenerationRequest, abort: asyncio.Event
                   ) -> tuple[GenerationResult, str | None]:
        import openai

        attempts = 0
        t0 = time.perf_counter()
        body: dict[str, Any] = {"model": self.model, "messages": req.as_messages(), "max_tokens": req.max_new_tokens,
                                "temperature": req.temperature}
        if req.temperature > 0:
            body.update(top_p=req.top_p, seed=req.seed)
        if req.stop:
            body["stop"] = list(req.stop)
        while True:
            attempts += 1
            self.calls += 1
            after = None
            try:
                resp = await client.chat.completions.create(**body)
                return self._result(i, req, resp, attempts, time.perf_counter() - t0), None
            except openai.APITimeoutError:
                kind, retryable, detail = "timeout", True, "timeout"
            except openai.APIConnectionError as e:
                kind, retryable, detail = "connection", True, f"connection error: {e.__cause__ or e}"
            except openai.APIStatusError as e:
                if e.status_code in FATAL_STATUS:
                    return self._failed(i, req, "api_error", f"HTTP {e.status_code}", attempts, t0), \
                        FATAL_STATUS[e.status_code]
                kind, retryable = "api_error", e.status_code in RETRY_STATUS or e.status_code >= 500
                detail = f"HTTP {e.status_code}: {getattr(e, 'message', '') or e}"
                after = retry_after(e)
            except openai.OpenAIError as e:  # a malformed body and the like
                kind, retryable, detail = "api_error", False, f"{type(e).__name__}: {e}"
            if abort.is_set():
                return self._failed(i, req, kind, detail, attempts, t0), "aborted"
            if not retryable or attempts > self.policy.max_retries:
                if kind == "connection":
                    where = self.base_url or "the OpenAI API"
                    return (self._failed(i, req, kind, detail, attempts, t0),
                            f"cannot reach {where} after {attempts} attempts ({detail}); check --base-url and that "
                            "the server runs")
                return self._failed(i, req, kind, detail, attempts, t0), None
            self.retries += 1
            await asyncio.sleep(self.policy.delay(attempts, after))

    def _failed(self, i: int, req: GenerationRequest, reason: str, detail: str, attempts: int, t0: float
                ) -> GenerationResult:
        return GenerationResult(index=i, key=req.key, response=None, status=FAILED, reason=reason,
                                error=self.scrub(str(detail)), finish_reason="error", attempts=attempts,
                                latency_s=time.perf_counter() - t0)

    def _result(self, i: int, req: GenerationRequest, resp: Any, attempts: int, latency: float) -> GenerationResult:
        usage = getattr(resp, "usage", None)
        choices = getattr(resp, "choices", None) or []
        if not choices or choices[0].message is None:
            return GenerationResult(index=i, key=req.key, response=None, status=FAILED, reason="empty_reply",
                                    error="the endpoint returned no choices", finish_reason="error",
                                    attempts=attempts, latency_s=latency)
        c = choices[0]
        text = c.message.content
        refusal = getattr(c.message, "refusal", None)
        if text is None and refusal:  # an API-level refusal is the model's answer
            text = refusal
        finish = _FINISH.get(c.finish_reason or "", c.finish_reason)
        return GenerationResult(
            index=i, key=req.key, response=text or "", finish_reason=finish,
            n_prompt_tokens=getattr(usage, "prompt_tokens", None) if usage else None,
            n_new_tokens=getattr(usage, "completion_tokens", None) if usage else None,
            latency_s=latency, attempts=attempts, resolved_model=getattr(resp, "model", None))

    def close(self) -> None:
        pass


class OpenAIFactory:
    name = "openai"
    summary = "an OpenAI-compatible endpoint: openai:MODEL with --base-url (vLLM, TGI, transformers serve, APIs)"
    local = False

    def available(self) -> str | None:
        try:
            import openai  # noqa: F401
        except ImportError:
            return "engine openai needs the openai package: pip install openai"
        return None

    def validate(self, spec: EngineSpec) -> None:
        o = spec.options
        unknown = sorted(k for k in o if k not in OPTIONS and o[k] is not None)
        if unknown:
            raise SptError(f"engine openai has no option {unknown[0]!r}; it takes {', '.join(OPTIONS)}")
        if not spec.target or not spec.target.strip():
            raise SptError("the openai engine needs the served model's name: pass openai:MODEL")
        check_base_url(o.get("base_url"))
        for name, lo in (("max_connections", 1), ("max_retries", 0)):
            v = o.get(name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < lo):
                raise SptError(f"`{name}` must be a whole number of at least {lo} (got {v!r})")
        t = o.get("timeout")
        if t is not None and not (isinstance(t, (int, float)) and t > 0 and t < float("inf")):
            raise SptError(f"`timeout` must be a positive number of seconds (got {t!r})")
        api_key(o)  # a missing key variable is an error before anything is written

    def open(self, spec: EngineSpec) -> Engine:
        return OpenAIEngine(spec, api_key(spec.options))


FACTORY = OpenAIFactory()
