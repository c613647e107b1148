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
