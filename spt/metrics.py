"""Shared statistics for metrics: proportions and means with bootstrap confidence intervals."""

from __future__ import annotations

import random
from collections.abc import Sequence


def bootstrap_ci(
    values: Sequence[float], *, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float | None, float | None, float | None]:
    """Mean of `values` with a percentile bootstrap (1 - alpha) interval; Nones when empty.

    Deterministic for a seed so a metric recomputed from the same rows has the same interval.
    """
    n = len(values)
    if n == 0:
        return None, None, None
    mean = sum(values) / n
    if n == 1:
        return mean, mean, mean
    rng = random.Random(seed)
    vals = list(values)
    means = []
    for _ in range(n_boot):
        s = 0.0
        for _ in range(n):
            s += vals[rng.randrange(n)]
        means.append(s / n)
    means.sort()
    lo = means[int((alpha / 2) * n_boot)]
    hi = means[min(n_boot - 1, int((1 - alpha / 2) * n_boot))]
    return mean, lo, hi
