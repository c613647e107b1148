"""What every evaluation kind implements.

`run` evaluates one target (a run id or prefix, a checkpoint id, or a model reference) with the kind's
own typed configuration and returns a typed result with `to_dict()` (the `--json` shape). It must follow
the rules every evaluation follows: everything checkable is checked before anything is written; the
evaluation has an identity (a content hash of what changes its numbers) so a re-run resumes and makes no
repeated work; per-item rows are committed as they are produced; each metric row carries n, n_unscored,
an interval and its method (`spt.metrics.estimate`).

An evaluation row records its kind in `config["kind"]` (rows written before kinds existed have none and
are `refusal`). `unit_values` is how `spt compare` pairs two evaluations of the same kind: per metric, the
value of each unit (an item, a pair, a benchmark document, an agentic case) that both sides share, plus
each unit's cluster (the sensitive word, a case, a document) so intervals resample clusters, not units.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from spt.progress import ProgressFn
from spt.store.engine import Store

DEFAULT_KIND = "refusal"


@dataclass
class UnitValues:
    """Per-unit values of one evaluation, for paired comparisons.

    `values[metric][unit]` is the unit's value (None: the unit has no verdict there, e.g. a degenerate
    reply or an unscored judgment; it is counted, never compared as a number). `kinds[metric]` is `rate`
    (0/1 values) or `mean` (`spt.metrics.RATE` / `MEAN`). `clusters[unit]` groups correlated units.
    """

    values: dict[str, dict[str, float | None]] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    clusters: dict[str, str] = field(default_factory=dict)


def kind_of(evaluation: Any) -> str:
    """The kind an evaluation row was made by."""
    return ((getattr(evaluation, "config", None) or {}).get("kind")) or DEFAULT_KIND


@runtime_checkable
class EvaluationKind(Protocol):
    name: str  # refusal | benchmark | agentic | ...
    summary: str

    def run(self, store: Store, target: str, config: Any, progress: ProgressFn | None = None) -> Any:
        """Evaluate `target` under `config` (the kind's own config dataclass); resumable."""
        ...

    def unit_values(self, store: Store, evaluation_id: str, **options: Any) -> UnitValues:
        """Per-unit values of a finished evaluation of this kind (see module doc)."""
        ...
