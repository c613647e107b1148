"""One place that turns per-item values into a reported number: value, interval and interval method.

Every metric spt stores goes through `estimate`, so a rate always gets an exact (Clopper-Pearson)
interval, never zero-width at 0/n or n/n, and a mean (a loss, a judge score) always gets a bootstrap
that resamples clusters (the sensitive word, or the pair), not items. The statistics live in
`spt.stats`; this module only chooses between them.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

RATE = "rate"
MEAN = "mean"

# The overall numbers a run is summarised by (runs tables, sweep summaries, the viewer), in display order.
KEY_METRICS = ("refusal_rate", "over_refusal_rate", "alignment_loss", "task_loss", "task_accuracy")
# ... and with the pair score, which the demo and comparisons report too.
SUMMARY_METRICS = ("refusal_rate", "over_refusal_rate", "pair_score", "alignment_loss", "task_loss", "task_accuracy")


@dataclass(frozen=True)
class Estimate:
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    method: str | None
    n_clusters: int | None = None


def estimate(values: Sequence[float], kind: str, clusters: Sequence[Hashable] | None = None, *,
             seed: int = 0) -> Estimate:
    """The value of a metric over `values` with its interval.

    kind `rate`: values are 0/1, the interval is `spt.stats.DEFAULT_RATE_METHOD` on k/n.
    kind `mean`: a cluster bootstrap over `clusters` (each item its own cluster when None).
    Empty values give value None (nothing to report) with n = 0.
    """
    from spt import stats

    n = len(values)
    if kind == RATE:
        if n == 0:
            return Estimate(None, None, None, 0, None)
        k = int(round(sum(values)))
        lo, hi = stats.rate_interval(k, n)
        return Estimate(k / n, lo, hi, n, stats.DEFAULT_RATE_METHOD)
    if kind != MEAN:
        raise ValueError(f"unknown metric kind {kind!r}")
    if n == 0:
        return Estimate(None, None, None, 0, None)
    value, lo, hi = stats.cluster_bootstrap_mean(values, clusters, seed=seed)
    n_clusters = len(set(clusters)) if clusters is not None else n
    return Estimate(value, lo, hi, n, stats.CLUSTER_BOOTSTRAP, n_clusters)


def pool_seeds(values: Sequence[float], *, ns: Sequence[int] | None = None, bounded: bool = False,
               run_intervals: Sequence[tuple[float | None, float | None]] | None = None) -> Estimate:
    """A configuration's number from its seeds' numbers: the mean, with an interval that is never narrower
    than what one seed's own data already say.

    The Student-t interval across seeds captures seed-to-seed spread but is zero-width when the seeds
    agree (three runs at 0/30 refusals) and can leave [0, 1]. So for a rate (`bounded`, with each seed's
    `ns`) the interval is the envelope of the t interval and the exact interval of the pooled counts,
    clipped to [0, 1]; for a mean it is the envelope of the t interval and the seeds' own intervals
    (`run_intervals`). One seed: its own interval.
    """
    from spt import stats

    n = len(values)
    if n == 0:
        return Estimate(None, None, None, 0, None)
    mean, lo, hi = stats.seed_interval(values)
    total = int(sum(ns)) if ns else 0
    bounds: list[tuple[float, float]] = []
    if lo is not None and hi is not None:
        bounds.append((lo, hi))
    if bounded and ns and total > 0:
        k = int(round(sum(v * m for v, m in zip(values, ns, strict=True))))
        bounds.append(stats.rate_interval(min(max(k, 0), total), total))
    for rl, rh in run_intervals or []:
        if rl is not None and rh is not None and (n == 1 or lo is None or lo == hi):
            bounds.append((rl, rh))
    if not bounds:
        return Estimate(mean, None, None, total or n, None)
    lo2, hi2 = min(b[0] for b in bounds), max(b[1] for b in bounds)
    if bounded:
        lo2, hi2 = max(0.0, lo2), min(1.0, hi2)
    method = stats.T_ACROSS_SEEDS if n > 1 else None
    if bounded and ns and n > 1:
        method = f"{stats.T_ACROSS_SEEDS}+{stats.DEFAULT_RATE_METHOD}"
    return Estimate(mean, lo2, hi2, total or n, method or "per-run")
