"""One progress protocol for every long operation: training, generation, losses, judging, sweeps, imports.

A long library call takes `progress: ProgressFn | None` and reports `Progress` values to it: what is
being counted (`task`), how far it is (`done` of `total`, in `unit`s) and optional numbers (`info`:
losses, new tokens so far, cost). An operation that runs others (a sweep runs finetune, evaluate and
judge; the demo runs sweeps) passes them `within(progress, label)`, so their reports arrive with
`scope` naming where they come from. A display therefore needs no knowledge of who reports: the CLI
draws every report with `spt.commands._common.ProgressDisplay`, a benchmark or a notebook can log them.

Reports are cheap and frequent (one per training step, generation batch or judgment); a callback that
raises stops the operation, which is how tests interrupt a run at a chosen step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Progress:
    """One report: `done` of `total` `unit`s of `task`, within the operations named by `scope`."""

    task: str  # what is counted: "train", "generate", "alignment loss", "judge openai:gpt-4o-mini", "sweep" ...
    done: int
    total: int | None = None  # None while unknown
    unit: str = "items"  # steps, items, judgments, configurations, rows, stages
    info: dict[str, Any] = field(default_factory=dict)  # numbers so far (loss, new_tokens, cost_usd) or a label
    scope: tuple[str, ...] = ()  # the enclosing operations, outermost first

    @property
    def key(self) -> tuple[str, ...]:
        """Identifies one counter across reports (a display keeps one bar per key)."""
        return (*self.scope, self.task)


ProgressFn = Callable[[Progress], None]


def within(progress: ProgressFn | None, *scope: str) -> ProgressFn | None:
    """The reports of an inner operation, passed on to `progress` with `scope` prepended."""
    if progress is None:
        return None

    def inner(p: Progress) -> None:
        progress(replace(p, scope=(*scope, *p.scope)))

    return inner


def report(progress: ProgressFn | None, task: str, done: int, total: int | None = None, unit: str = "items",
           **info: Any) -> None:
    """Send one report if anyone listens (the common call site of the producers)."""
    if progress is not None:
        progress(Progress(task, done, total, unit, info))
