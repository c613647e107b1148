"""Typed results of a judge run: `JudgeResult` with one `JudgeSummary` per judge.

`to_dict()` is the `spt judge --json` shape. `keys()` / `[key]` read that same shape, so a caller
that treats the result as a mapping (`dict(result)`, as the sweep runner does) keeps working.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class JudgeMetric:
    """One judge metric over all categories of one evaluation (every category is in the Metric table)."""

    evaluation_id: str
    name: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    n_unscored: int


@dataclass
class JudgeSummary:
    """What one judge did in a run, and where its current judgments of these evaluations stand.

    judged: new judgments from calls; cached: reused (no call); fixed: re-parsed to a new verdict;
    not_judged: left without a judgment (cost limit, fatal error, --only-unscored); dropped: judged here
    but not stored because another process stored a current judgment of that generation first.
    scored / unscored (by reason): the current judgments after the run.
    """

    judge_id: str
    name: str
    backend: str
    model: str | None
    rubric: str
    rubric_version: str
    generations: int
    judged: int = 0
    cached: int = 0
    fixed: int = 0
    not_judged: int = 0
    dropped: int = 0
    scored: int = 0
    unscored: dict[str, int] = field(default_factory=dict)
    new_unscored: dict[str, int] = field(default_factory=dict)
    calls: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    priced: bool = True
    metrics: list[JudgeMetric] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class JudgeResult:
    """A judge run: the evaluations and generations covered, each judge's summary, and how it ended.

    stopped: None, "cost_limit" (calls stopped at --cost-limit) or "fatal" (the endpoint became
    unusable; `error` says why, and `JudgeRunError` carries this result).
    """

    evaluations: list[str]
    generations: int
    judges: list[JudgeSummary] = field(default_factory=list)
    stopped: str | None = None
    error: str | None = None
    cost_usd: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
