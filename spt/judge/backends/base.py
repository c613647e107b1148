"""What every judge backend implements, and the values that cross the backend boundary.

A backend turns a `--judge BACKEND:ARG` value into a `JudgeSpec` (its identity), and a batch of
(prompt, response) pairs into `Outcome`s: a verdict (scored, or unscored with a reason) plus the raw
reply and what the call cost. Failures are outcomes, never scores. The judging loop in
`spt.judge.core` knows nothing about any backend beyond this protocol, so a new backend is one module
in this package (see `keyword_any.py` for a small example).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from spt.judge.rubrics import Verdict

if TYPE_CHECKING:
    from spt.judge.options import JudgeOptions
    from spt.judge.specs import JudgeSpec

# Reasons that say the call failed (the reply carries no verdict to re-parse).
TRANSPORT_REASONS = ("api_error", "timeout")


@dataclass
class Outcome:
    """One judge verdict plus what producing it took."""

    verdict: Verdict
    raw: str | None = None
    resolved_model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    attempts: int = 0


@dataclass
class BatchReport:
    """How a `judge_batch` call went, beyond the outcomes it emitted.

    `fatal` is set when the backend cannot serve any request (unreachable endpoint, rejected key,
    unknown model): the run stops and the error is raised after the completed judgments are stored.
    `stopped` is `ctx.stop_reason()` when the backend stopped early because `ctx.should_stop()`.
    """

    calls: int = 0
    retries: int = 0
    fatal: str | None = None
    stopped: str | None = None


@dataclass
class JudgeContext:
    """What a backend may use while judging: the options, resolved credentials, and a stop signal.

    `credentials` is what `check_credentials` returned (a key lives only here and in the backend's
    client, never in a spec, a row or the output). `stop_reason()` turns to "cost_limit" when the cost
    limit is reached or "interrupted" after SIGTERM/SIGINT; a backend checks `should_stop()` before
    each call (or batch) and lets the calls in flight finish, so every paid reply is stored.
    """

    options: JudgeOptions
    credentials: Any = None
    stop_reason: Callable[[], str | None] = field(default=lambda: None)

    def should_stop(self) -> bool:
        return self.stop_reason() is not None


# emit(index into the batch, outcome): called as soon as an outcome is ready, so it is stored early.
Emit = Callable[[int, Outcome], None]


@runtime_checkable
class Backend(Protocol):
    """A judge backend. Instances are registered by `name` (the part of `--judge` before the colon)."""

    name: str
    usage: str  # how to spell it in --judge, for error messages ("openai:MODEL")

    def parse(self, spec: str, arg: str, rubric: str) -> JudgeSpec:
        """Resolve `--judge spec` (`arg` is the text after the colon, maybe empty); SptError on bad input."""
        ...

    def check_credentials(self, spec: JudgeSpec, options: JudgeOptions) -> Any:
        """Find what calls will need (an API key) before anything is written; SptError if missing."""
        ...

    def unpriced(self, spec: JudgeSpec, prices: dict[str, dict[str, float]]) -> bool:
        """True when calls cost money and `prices` has no price for this judge (a cost limit needs one)."""
        ...

    def cost(self, spec: JudgeSpec, outcome: Outcome, prices: dict[str, dict[str, float]]) -> float | None:
        """USD one outcome cost; 0.0 when free, None when it cost something the price table does not know."""
        ...

    def judge_batch(self, spec: JudgeSpec, pairs: Sequence[tuple[str, str]], ctx: JudgeContext,
                    emit: Emit) -> BatchReport:
        """Judge every (prompt, response) pair, calling `emit(i, outcome)` for each as it completes."""
        ...

    def reparse(self, spec: JudgeSpec, raw: str | None, reason: str | None, response: str) -> Verdict | None:
        """The verdict a stored judgment would get from the current parser, without a call; None: leave it."""
        ...


class BaseBackend:
    """Defaults for backends that are free, need no credentials and judge one pair at a time."""

    name = ""
    usage = ""

    def check_credentials(self, spec: JudgeSpec, options: JudgeOptions) -> Any:
        return None

    def unpriced(self, spec: JudgeSpec, prices: dict[str, dict[str, float]]) -> bool:
        return False

    def cost(self, spec: JudgeSpec, outcome: Outcome, prices: dict[str, dict[str, float]]) -> float | None:
        return 0.0

    def judge_one(self, spec: JudgeSpec, prompt: str, response: str) -> Outcome:
        raise NotImplementedError

    def judge_batch(self, spec: JudgeSpec, pairs: Sequence[tuple[str, str]], ctx: JudgeContext,
                    emit: Emit) -> BatchReport:
        for i, (prompt, response) in enumerate(pairs):
            if ctx.should_stop():
                return BatchReport(stopped=ctx.stop_reason())
            emit(i, self.judge_one(spec, prompt, response))
        return BatchReport()

    def reparse(self, spec: JudgeSpec, raw: str | None, reason: str | None, response: str) -> Verdict | None:
        """Rubric judges re-parse the stored reply; transport failures and empty refusals have none."""
        if raw is None or reason in TRANSPORT_REASONS or (reason == "judge_refused" and raw == ""):
            return None
        if spec.rubric is None:
            return None
        return spec.rubric.parse(raw)
