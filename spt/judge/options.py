"""`JudgeOptions`: everything a judge run can be told, in one value validated before anything is written."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from typing import Any

from spt.errors import SptError


@dataclass
class JudgeOptions:
    """How to judge: which judges and rubric, how to reach endpoints, what to (re)judge, what it may cost.

    judges: `BACKEND[:ARG]` specs (`keyword`, `keyword:PRESET`, `keyword-any:A+B`, `openai:MODEL`, `hf:PATH`).
    rubric: the rubric of model judges (keyword and classifier judges implement the refusal axis).
    base_url / api_key_env: the OpenAI-compatible endpoint and the variable holding its key.
    max_connections / max_retries / timeout / retry_base_s: concurrency and retry policy of calls.
    only_unscored / rejudge / fix: re-judge the unscored, everything, or re-parse stored replies (one of).
    price_table / cost_limit: USD per 1M tokens (a YAML path or a dict) and a spending cap.
    batch_size / device: local (hf) judges.
    on: what is judged: the reply's answer (`response`) or a reasoning model's thinking (`thinking`).
    """

    judges: list[str] = field(default_factory=lambda: ["keyword"])
    rubric: str = "refusal"
    base_url: str | None = None
    api_key_env: str | None = None
    max_connections: int = 16
    max_retries: int = 4
    timeout: float = 60.0
    retry_base_s: float | None = None
    only_unscored: bool = False
    rejudge: bool = False
    fix: bool = False
    price_table: str | os.PathLike | dict | None = None
    cost_limit: float | None = None
    batch_size: int = 8
    device: str | None = None
    on: str = "response"

    @classmethod
    def of(cls, options: JudgeOptions | None = None, **changes: Any) -> JudgeOptions:
        """`options` (or the defaults) with `changes`; unknown names are a one-line error."""
        known = {f.name for f in fields(cls)}
        bad = sorted(set(changes) - known)
        if bad:
            raise SptError(f"unknown judge option {bad[0]!r}; known: {', '.join(sorted(known))}")
        base = options if options is not None else cls()
        values = {f.name: getattr(base, f.name) for f in fields(cls)}
        values.update(changes)
        if values["judges"] is None:
            values["judges"] = ["keyword"]
        return cls(**values)

    def validate(self) -> None:
        """Raise SptError on a bad value (before anything is written or called)."""
        if not self.judges:
            raise SptError("no judge given; pass one or more judges, e.g. keyword or openai:MODEL")
        if not isinstance(self.max_connections, int) or self.max_connections < 1:
            raise SptError(f"`max_connections` must be at least 1 (got {self.max_connections})")
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise SptError(f"`max_retries` must be 0 or more (got {self.max_retries})")
        if not _positive(self.timeout):
            raise SptError(f"`timeout` must be a positive number of seconds (got {self.timeout})")
        if self.cost_limit is not None and not (_finite(self.cost_limit) and self.cost_limit >= 0):
            raise SptError(f"`cost_limit` must be 0 or more USD (got {self.cost_limit})")
        if sum([bool(self.only_unscored), bool(self.rejudge), bool(self.fix)]) > 1:
            raise SptError("`only_unscored`, `rejudge` and `fix` exclude each other; pass one")
        if self.on not in ("response", "thinking"):
            raise SptError(f"`on` must be response or thinking (got {self.on!r})")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise SptError(f"the local judge batch size must be at least 1 (got {self.batch_size})")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _positive(v: Any) -> bool:
    return _finite(v) and v > 0
