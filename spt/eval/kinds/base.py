"""What every evaluation kind implements.

`run` evaluates one target (a run id or prefix, a checkpoint id, or a model reference) with the kind's
own typed configuration and returns a typed result with `to_dict()` (the `--json` shape). It must follow
the rules every evaluation follows: everything checkable is checked before anything is written; the
evaluation has an identity (a content hash of what changes its numbers) so a re-run resumes and makes no
repeated work; per-item rows are committed as they are produced; each metric row carries n, n_unscored,
an interval and its method (`spt.metrics.estimate`).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from spt.progress import ProgressFn
from spt.store.engine import Store


@runtime_checkable
class EvaluationKind(Protocol):
    name: str  # refusal | benchmark | agentic | ...
    summary: str

    def run(self, store: Store, target: str, config: Any, progress: ProgressFn | None = None) -> Any:
        """Evaluate `target` under `config` (the kind's own config dataclass); resumable."""
        ...
