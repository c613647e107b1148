"""What every generation engine implements, and the values that cross the engine boundary.

An engine turns a list of `GenerationRequest`s into `GenerationResult`s, one per request, in request
order. A request that could not be answered (an endpoint that kept failing, a prompt too long for the
model) is a result with `status="failed"` and a `reason`, never an empty response: callers store it as
failed and leave it out of every metric, counted. Engines are one file each in `spt/engines/` (see
`spt.engines` for the registry); evaluation, the generative judges, the agentic loop and GRPO use them
through this protocol only, so a new engine needs no change anywhere else.

`identity()` is what enters the identity of an evaluation made with the engine: anything that can
change the text generated for the same request (the engine name, the served model, how the chat
template is applied), and nothing that cannot (batch sizes, connection counts, keys, hosts of a
load-balanced endpoint are recorded in `describe()` instead).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

OK = "ok"
FAILED = "failed"
# finish_reason a stored generation gets when the engine produced no reply (evaluation, recompute, judging)
FAILED_FINISH = "error"


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to answer: a user turn (`prompt`, the chat template is the engine's job) or whole `messages`.

    `key` is the caller's handle (an item id); engines pass it through untouched. `stop` strings end the
    reply early (the agent loop stops at "Observation:"); the stop string itself is not part of `response`.
    """

    prompt: str | None = None
    messages: tuple[dict[str, str], ...] | None = None
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    key: str | None = None

    def as_messages(self) -> list[dict[str, str]]:
        """The chat this request stands for."""
        if self.messages is not None:
            return [dict(m) for m in self.messages]
        return [{"role": "user", "content": self.prompt or ""}]


@dataclass
class GenerationResult:
    """The engine's answer to request `index`: the text, or why there is none, and what it cost."""

    index: int
    key: str | None
    response: str | None
    status: str = OK  # ok | failed
    reason: str | None = None  # failed: api_error | timeout | too_long | ... with `error` the detail
    error: str | None = None
    finish_reason: str | None = None  # eos | length | stop | error
    n_prompt_tokens: int | None = None
    n_new_tokens: int | None = None
    latency_s: float | None = None
    attempts: int = 1
    resolved_model: str | None = None  # what the endpoint says answered
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == OK


# on_result(results): called as soon as a group of results is ready (a batch, or one endpoint reply), so
# callers commit rows as they go and a killed process loses only what was in flight.
OnResults = Callable[[list[GenerationResult]], None]


@runtime_checkable
class Engine(Protocol):
    """A loaded generation engine (a model in memory, or a client of an endpoint)."""

    name: str

    def identity(self) -> dict[str, Any]:
        """What enters an evaluation identity (see module doc)."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the run and evaluation record about the engine: identity plus host, versions, sizes. No keys."""
        ...

    def generate(self, requests: Sequence[GenerationRequest], *, on_results: OnResults | None = None
                 ) -> list[GenerationResult]:
        """One result per request, in request order (see module doc)."""
        ...

    def close(self) -> None:
        """Free the model or the client. Calling it twice is harmless."""
        ...


@dataclass
class EngineSpec:
    """How to open an engine: which one, on what, with which options (already validated by its module).

    `target` is a local model directory or adapter directory for local engines, the served model name for
    endpoints. `options` are the engine's own (dtype, device, base_url, api_key_env, max_connections ...).
    """

    engine: str
    target: str
    options: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class EngineFactory(Protocol):
    """One module of `spt/engines/`: its name, how it is spelled, and how it opens."""

    name: str
    summary: str
    local: bool  # True: runs weights on this machine (needs a model directory); False: an endpoint

    def available(self) -> str | None:
        """None when the engine can run here; else one line saying what to install."""
        ...

    def validate(self, spec: EngineSpec) -> None:
        """SptError on options it does not accept, before anything loads."""
        ...

    def open(self, spec: EngineSpec) -> Engine:
        """Load the model or connect; SptError with the fix when it cannot."""
        ...
