"""One place that turns per-item values into a reported number: value, interval and interval method.

Every metric spt stores goes through `estimate`, so a rate always gets an exact (Clopper-Pearson)
interval, never zero-width at 0/n or n/n, widened by a cluster bootstrap where items share a cluster,
and a mean (a loss, a judge score) always gets a bootstrap
that resamples clusters (the sensitive word, or the pair), not items. The statistics live in
`spt.stats`; this module only chooses between them.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

RATE = "rate"
MEAN = "mean"
CLUSTERED_RATE_METHOD = "cluster-robust-t+clopper-pearson"

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
    n_seeds: int | None = None  # pooled over seeds (`pool_seeds`); None for one evaluation's estimate


def estimate(values: Sequence[float], kind: str, clusters: Sequence[Hashable] | None = None, *,
             seed: int = 0) -> Estimate:
    """The value of a metric over `values` with its interval.

    kind `rate`: values are 0/1. Without clusters (or when every item is its own cluster) the interval is
    `spt.stats.DEFAULT_RATE_METHOD` on k/n. When items share clusters (HarmOR's sensitive word: the
    harmful prompts of one word are refused together or not at all far more often than independent
    items would be) an exact binomial interval assumes independence it does not have and under-covers;
    the interval is then the envelope of the exact interval and a cluster-robust t interval
    (`spt.stats.cluster_robust_rate_interval`; `tests/test_stats_seeds.py` measures its coverage),
    clipped to [0, 1], method `cluster-robust-t+clopper-pearson`. The exact part keeps the 0/n and n/n
    cases honest (all-zero clusters have zero variance).
    kind `mean`: a cluster bootstrap over `clusters` (each item its own cluster when None).
    Empty values give value None (nothing to report) with n = 0.
    """
    from spt import stats

    n = len(values)
    if kind not in (RATE, MEAN):
        raise ValueError(f"unknown metric kind {kind!r}")
    if n == 0:
        return Estimate(None, None, None, 0, None)
    n_clusters = len(set(clusters)) if clusters is not None else n
    if kind == RATE:
        k = int(round(sum(values)))
        lo, hi = stats.rate_interval(k, n)
        if clusters is None or n_clusters in (1, n):
            return Estimate(k / n, lo, hi, n, stats.DEFAULT_RATE_METHOD, n_clusters)
        clo, chi = stats.cluster_robust_rate_interval(values, clusters)
        return Estimate(k / n, max(0.0, min(lo, clo)), min(1.0, max(hi, chi)), n, CLUSTERED_RATE_METHOD, n_clusters)
    value, lo, hi = stats.cluster_bootstrap_mean(values, clusters, seed=seed)
    return Estimate(value, lo, hi, n, stats.CLUSTER_BOOTSTRAP, n_clusters)


def pool_seeds(values: Sequence[float], *, ns: Sequence[int] | None = None, bounded: bool = False,
               run_intervals: Sequence[tuple[float | None, float | None]] | None = None) -> Estimate:
    """A configuration's number from its seeds' numbers: the mean over seeds, with an interval that
    accounts for seed and item variance.

    The Student-t interval across seeds is the seed-to-seed spread (each seed's mean already carries its
    own item noise), but all seeds answer the same prompts, so it says nothing of how the number would
    move on other prompts of the same kind, and it is zero-width when the seeds agree. Each seed's own
    interval is exactly that item-level uncertainty. The pooled interval is the envelope of the t
    interval and every seed's interval, so it is never narrower than the widest seed's (a pooled count
    interval over seeds x items would be: the items are the same ones each time), clipped to [0, 1]
    for a rate (`bounded`). `n` is the number of distinct items (the largest seed's n: seeds share their
    prompts), `n_seeds` the number of seeds. One seed: its own interval.
    """
    from spt import stats

    k = len(values)
    if k == 0:
        return Estimate(None, None, None, 0, None, n_seeds=0)
    mean, lo, hi = stats.seed_interval(values)
    n_items = int(max(ns)) if ns else k
    bounds: list[tuple[float, float]] = []
    if lo is not None and hi is not None:
        bounds.append((lo, hi))
    bounds += [(rl, rh) for rl, rh in run_intervals or [] if rl is not None and rh is not None]
    if bounded and ns:  # a seed's own exact interval, also where its stored interval is not at hand
        for v, m in zip(values, ns, strict=True):
            if m > 0:
                bounds.append(stats.rate_interval(min(max(int(round(v * m)), 0), int(m)), int(m)))
    if not bounds:
        return Estimate(mean, None, None, n_items, None, n_seeds=k)
    lo2, hi2 = min(b[0] for b in bounds), max(b[1] for b in bounds)
    if bounded:
        lo2, hi2 = max(0.0, lo2), min(1.0, hi2)
    method = f"{stats.T_ACROSS_SEEDS}+per-seed" if k > 1 else "per-run"
    return Estimate(mean, lo2, hi2, n_items, method, n_seeds=k)
