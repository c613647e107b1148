"""Interval estimates and paired tests behind every reported number (DESIGN §7).

Pure functions, no store access, numpy only (no scipy: it is not a dependency), deterministic for a seed
so a metric recomputed from the same rows gets the same interval.

- Rates (refusal, over-refusal, ASR, pair score): `wilson_interval` or `clopper_pearson_interval`
  through `rate_interval`; neither is ever zero-width at 0/n or n/n.
- Means over items that share a sensitive word or a pair: `cluster_bootstrap_mean`, which resamples
  whole clusters, because items in one cluster are correlated and an item bootstrap would be too narrow.
- Two systems on the same items: `paired_bootstrap_diff` (means) and `mcnemar_exact` (rates).
- Runs that differ only in seed: `seed_interval` (Student t across seeds).

Each result is stored with its method name; the string constants below (WILSON ... T_ACROSS_SEEDS) are
the names to store.
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from statistics import NormalDist

import numpy as np

WILSON = "wilson"
CLOPPER_PEARSON = "clopper-pearson"
CLUSTER_BOOTSTRAP = "cluster-bootstrap"
PAIRED_BOOTSTRAP = "paired-bootstrap"
T_ACROSS_SEEDS = "t-across-seeds"

RATE_METHODS: tuple[str, ...] = (WILSON, CLOPPER_PEARSON)
# Default: exact. At n = 30 both methods cover >= 95% at p in {0.02, 0.2, 0.5} (tests/test_stats.py),
# but Wilson's coverage falls to about 84% just below p = 0.18/n (p = 0.0057 at n = 30, 0.0017 at n = 100),
# and rates near 0 or 1 (ASR of an aligned model, refusal of a base model) are common here.
# Clopper-Pearson never covers less than 95%; its cost is a somewhat wider interval.
DEFAULT_RATE_METHOD = CLOPPER_PEARSON

_CHUNK_CELLS = 500_000  # resample cells drawn per chunk: bounded memory, and small enough to stay in cache
_THREAD_MIN_CELLS = 20_000_000  # below this many cells in all, threads cost more than they save

Interval = tuple[float, float]
Estimate = tuple[float | None, float | None, float | None]


# --------------------------------------------------------------------------------------------------
# Special functions (no scipy): regularized incomplete beta, its inverse, the Student t quantile.
# --------------------------------------------------------------------------------------------------


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return alpha


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta (modified Lentz, Numerical Recipes `betacf`).

    Converges in O(sqrt(max(a, b))) terms when x < (a + 1) / (a + b + 2), so the term cap scales with
    the parameters: n in the hundreds of thousands still converges in about a thousand terms.
    """
    tiny = 1e-300
    eps = 1e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000 + int(20 * math.sqrt(max(a, b)))):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) = P(Beta(a, b) <= x), for a, b > 0.

    The exact binomial interval, the binomial tail and the Student t distribution are all this
    function, so one careful implementation serves all three. It evaluates whichever of I_x(a, b) and
    1 - I_{1-x}(b, a) has the fast-converging continued fraction, which also keeps small tail
    probabilities accurate in relative terms.
    """
    if a <= 0 or b <= 0:
        raise ValueError(f"betainc needs a, b > 0, got a={a}, b={b}")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def beta_ppf(q: float, a: float, b: float) -> float:
    """Quantile of Beta(a, b): the x with I_x(a, b) = q, by bisection.

    Bisection is slow but cannot fail: I_x is monotone in x, so each step halves a bracket that is
    known to hold the answer. It stops at a relative width of 1e-14 (about 50-90 steps), which is far
    below anything a reported interval shows.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"beta_ppf needs q in [0, 1], got {q}")
    if q == 0.0:
        return 0.0
    if q == 1.0:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(2000):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi or hi - lo <= 1e-14 * hi:
            break
        if betainc(a, b, mid) < q:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def t_ppf(p: float, df: float) -> float:
    """Quantile of Student's t with `df` degrees of freedom (e.g. t_ppf(0.975, 2) = 4.3027).

    Uses P(|T| > t) = I_{df/(df+t^2)}(df/2, 1/2): the two-sided tail is a beta probability, so the
    quantile is a beta quantile mapped back to t.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"t_ppf needs p in (0, 1), got {p}")
    if df <= 0:
        raise ValueError(f"t_ppf needs df > 0, got {df}")
    if p == 0.5:
        return 0.0
    tail = 2.0 * min(p, 1.0 - p)  # two-sided tail mass beyond |t|
    x = beta_ppf(tail, df / 2.0, 0.5)
    t = math.sqrt(df * (1.0 - x) / x)
    return t if p > 0.5 else -t


# --------------------------------------------------------------------------------------------------
# Rates
# --------------------------------------------------------------------------------------------------


def _check_counts(k: int, n: int) -> tuple[int, int]:
    k, n = operator.index(k), operator.index(n)
    if n <= 0:
        raise ValueError(f"a rate needs n > 0 trials, got n={n}")
    if not 0 <= k <= n:
        raise ValueError(f"a rate needs 0 <= k <= n, got k={k}, n={n}")
    return k, n


def wilson_interval(k: int, n: int, alpha: float = 0.05) -> Interval:
    """Wilson score interval for k successes in n trials.

    Unlike the Wald interval it is never zero-width: at k = 0 the upper bound is z^2 / (n + z^2) > 0
    and at k = n the lower bound is below 1, so 0/30 refusals is not reported as "exactly 0%".
    n = 0 raises ValueError: no trials, no rate.
    """
    k, n = _check_counts(k, n)
    z = NormalDist().inv_cdf(1.0 - _check_alpha(alpha) / 2.0)
    p = k / n
    z2n = z * z / n
    denom = 1.0 + z2n
    centre = (p + z2n / 2.0) / denom
    half = (z / denom) * math.sqrt(p * (1.0 - p) / n + z2n / (4.0 * n))
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def clopper_pearson_interval(k: int, n: int, alpha: float = 0.05) -> Interval:
    """Exact (Clopper-Pearson) interval: the p whose binomial tails at k are alpha/2 each.

    Coverage is at least 1 - alpha for every p and n (it inverts two exact one-sided tests), at the
    cost of being wider than Wilson. The bounds are beta quantiles, lower = B(alpha/2; k, n-k+1) and
    upper = B(1-alpha/2; k+1, n-k); the upper one is computed as 1 - B(alpha/2; n-k, k+1) so both
    searches target a small tail. k = 0 and k = n have the closed forms 1 - (alpha/2)^(1/n) and
    (alpha/2)^(1/n), so neither end is zero-width.
    """
    k, n = _check_counts(k, n)
    half_alpha = _check_alpha(alpha) / 2.0
    edge = half_alpha ** (1.0 / n)
    if k == 0:
        lo = 0.0
    elif k == n:
        lo = edge
    else:
        lo = beta_ppf(half_alpha, k, n - k + 1)
    if k == n:
        hi = 1.0
    elif k == 0:
        hi = 1.0 - edge
    else:
        hi = 1.0 - beta_ppf(half_alpha, n - k, k + 1)
    return lo, hi


def rate_interval(k: int, n: int, method: str = DEFAULT_RATE_METHOD, alpha: float = 0.05) -> Interval:
    """Interval for a rate k/n by a named method (one of RATE_METHODS); store `method` with it."""
    if method == WILSON:
        return wilson_interval(k, n, alpha)
    if method == CLOPPER_PEARSON:
        return clopper_pearson_interval(k, n, alpha)
    raise ValueError(f"unknown rate interval method {method!r}; use one of {', '.join(RATE_METHODS)}")


# --------------------------------------------------------------------------------------------------
# Bootstraps
# --------------------------------------------------------------------------------------------------


def _as_finite(values: Sequence[float], what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} must be finite numbers (drop unscored items before the bootstrap)")
    return arr


def _cluster_codes(clusters: Sequence[Hashable] | None, n: int) -> tuple[np.ndarray, int]:
    """Map cluster labels (any hashable: words, pair ids, ints) to 0..G-1 in order of first appearance."""
    if clusters is None:
        return np.arange(n), n
    if len(clusters) != n:
        raise ValueError(f"clusters has {len(clusters)} labels for {n} values")
    seen: dict[Hashable, int] = {}
    codes = np.fromiter((seen.setdefault(c, len(seen)) for c in clusters), dtype=np.int64, count=n)
    return codes, len(seen)


def _bootstrap_ratio(
    sums: np.ndarray, counts: np.ndarray, n_boot: int, alpha: float, seed: int
) -> tuple[float, float]:
    """Percentile interval of sum(sums[I]) / sum(counts[I]) over I = G cluster indices drawn with replacement.

    Resampling G clusters only matters through how many times each distinct (sum, count) pair is
    drawn, and those multiplicities are Multinomial(G, share of clusters of that type). When there are
    few distinct types (0/1 or 1-5 scores without clusters, the common case) drawing the multinomial is
    exact and far cheaper than drawing G indices per replicate. Otherwise indices are drawn in chunks
    small enough to stay in cache, spread over threads (numpy releases the GIL while it draws, gathers
    and sums). Chunk i always uses the i-th child of SeedSequence(seed), so the result depends on the
    seed and the data only, never on the number of threads.
    """
    g = len(sums)
    types, inverse = np.unique(np.stack([sums, counts], axis=1), axis=0, return_inverse=True)
    few_types = len(types) * 16 <= g
    cells = len(types) if few_types else g
    per_chunk = max(1, _CHUNK_CELLS // cells)
    starts = range(0, n_boot, per_chunk)
    children = np.random.SeedSequence(seed).spawn(len(starts))
    stats = np.empty(n_boot, dtype=np.float64)
    if few_types:
        share = np.bincount(inverse.reshape(-1), minlength=len(types)) / g
    equal_counts = bool(np.all(counts == counts[0]))
    idx_type = np.int32 if g < 2**31 else np.int64

    def run_chunk(i: int) -> None:
        rng = np.random.default_rng(children[i])
        start = starts[i]
        m = min(per_chunk, n_boot - start)
        if few_types:
            draws = rng.multinomial(g, share, size=m).astype(np.float64)
            stats[start:start + m] = (draws @ types[:, 0]) / (draws @ types[:, 1])
            return
        idx = rng.integers(0, g, size=(m, g), dtype=idx_type)
        num = sums[idx].sum(axis=1)
        den = counts[0] * g if equal_counts else counts[idx].sum(axis=1)
        stats[start:start + m] = num / den

    workers = min(_max_threads(), len(starts)) if cells * n_boot >= _THREAD_MIN_CELLS else 1
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(run_chunk, range(len(starts))))
    else:
        for i in range(len(starts)):
            run_chunk(i)
    lo, hi = np.quantile(stats, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


def _max_threads() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def cluster_bootstrap_mean(values: Sequence[float], clusters: Sequence[Hashable] | None = None, *,
                           n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> Estimate:
    """Item-level mean of `values` with a percentile bootstrap interval that resamples clusters.

    Items sharing a sensitive word (or the two prompts of a pair) are correlated, so resampling items
    would understate the uncertainty; resampling whole clusters keeps each cluster's correlation
    inside every replicate. Each replicate's statistic is the ratio estimator sum(values) / count(items)
    over the resampled clusters, i.e. the same item-level mean as the point estimate. clusters=None
    makes each item its own cluster (the ordinary bootstrap).

    Returns (mean, lo, hi), the interval widened if needed to contain mean; (None, None, None) when
    `values` is empty. With a single cluster there is nothing to resample (every replicate is that
    cluster), so the result is (mean, mean, mean): the data hold no information on between-cluster
    spread, and callers should show n and the cluster count beside such an interval rather than read
    it as certainty.
    """
    alpha = _check_alpha(alpha)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    vals = _as_finite(values, "values")
    n = len(vals)
    if n == 0:
        return None, None, None
    codes, g = _cluster_codes(clusters, n)
    mean = float(vals.mean())
    if g == 1:
        return mean, mean, mean
    sums = np.bincount(codes, weights=vals, minlength=g)
    counts = np.bincount(codes, minlength=g).astype(np.float64)
    lo, hi = _bootstrap_ratio(sums, counts, n_boot, alpha, seed)
    # Widen to include the point estimate: replicates of a constant come back a rounding error away
    # from it, and a skewed ratio can put it just outside the percentile range; a reported interval
    # that excludes its own estimate would only confuse, and widening can only add coverage.
    return mean, min(lo, mean), max(hi, mean)


def cluster_robust_rate_interval(values: Sequence[float], clusters: Sequence[Hashable], *,
                                 alpha: float = 0.05) -> Interval:
    """A t interval for the item-level mean of clustered 0/1 (or any) values, from the cluster-robust variance.

    The variance of the ratio estimator p = sum(y_g) / sum(m_g) over clusters g (y_g the cluster's sum,
    m_g its size) is G / (G - 1) * sum((y_g - p m_g)^2) / (sum m_g)^2 (the CR1 sandwich); the quantile is
    Student t with G - 1 degrees of freedom, which is what keeps coverage near nominal with the 10-80
    clusters of a safety set, where a percentile bootstrap over clusters is too narrow (see
    tests/test_stats_seeds.py). Deterministic and O(n). Not clipped; fewer than 2 clusters give (p, p).
    """
    alpha = _check_alpha(alpha)
    vals = _as_finite(values, "values")
    codes, g = _cluster_codes(clusters, len(vals))
    if len(vals) == 0:
        raise ValueError("no values")
    p = float(vals.mean())
    if g < 2:
        return p, p
    y = np.bincount(codes, weights=vals, minlength=g)
    m = np.bincount(codes, minlength=g).astype(np.float64)
    se = math.sqrt(g / (g - 1) * float(((y - p * m) ** 2).sum())) / float(m.sum())
    half = t_ppf(1.0 - alpha / 2.0, g - 1) * se
    return p - half, p + half


def paired_bootstrap_diff(a: Sequence[float], b: Sequence[float], clusters: Sequence[Hashable] | None = None, *,
                          n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> Estimate:
    """mean(b) - mean(a) over the same items, with a bootstrap interval that keeps the pairing.

    a[i] and b[i] are two systems on item i. Resampling items (or their clusters) jointly means the
    item-to-item variation, which both systems share, cancels; only the per-item difference varies,
    so a small consistent improvement is detectable where two independent intervals would overlap.
    Because both means have the same denominator, this is the cluster bootstrap of b[i] - a[i].
    Items unscored on either side must be dropped by the caller (values must be finite).
    Raises ValueError when a and b differ in length.
    """
    if len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    diff = _as_finite(b, "b") - _as_finite(a, "a")
    return cluster_bootstrap_mean(diff, clusters, n_boot=n_boot, alpha=alpha, seed=seed)


# --------------------------------------------------------------------------------------------------
# Paired test for rates, and intervals across seeds
# --------------------------------------------------------------------------------------------------


def _binom_half_cdf(m: int, n: int) -> float:
    """P(X <= m) for X ~ Binomial(n, 1/2): exact integer arithmetic up to n = 20000, else betainc."""
    if m >= n:
        return 1.0
    if n <= 20_000:
        term, total = 1, 1
        for i in range(m):
            term = term * (n - i) // (i + 1)
            total += term
        return total / (1 << n)  # int / int is correctly rounded in Python
    return betainc(n - m, m + 1, 0.5)


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts b and c.

    Under the null that both systems have the same rate, each of the n = b + c discordant pairs is
    equally likely to go either way, so min(b, c) is a Binomial(n, 1/2) tail:
    p = min(1, 2 P(X <= min(b, c))). Concordant pairs carry no information. n = 0 gives 1.0.
    """
    b, c = operator.index(b), operator.index(c)
    if b < 0 or c < 0:
        raise ValueError(f"McNemar counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2.0 * _binom_half_cdf(min(b, c), n))


def mcnemar_from_pairs(x: Sequence[bool], y: Sequence[bool]) -> tuple[int, int, float]:
    """(b, c, p) for paired binary outcomes: b = #(x and not y), c = #(not x and y), p = mcnemar_exact(b, c)."""
    if len(x) != len(y):
        raise ValueError(f"paired outcomes need equal lengths, got {len(x)} and {len(y)}")
    xa = np.asarray(x, dtype=bool).reshape(-1)
    ya = np.asarray(y, dtype=bool).reshape(-1)
    b = int(np.count_nonzero(xa & ~ya))
    c = int(np.count_nonzero(~xa & ya))
    return b, c, mcnemar_exact(b, c)


def seed_interval(values: Sequence[float], alpha: float = 0.05) -> Estimate:
    """Mean over seeds of one configuration with a Student t interval (n - 1 degrees of freedom).

    Seeds are few (often 3-5), so the normal quantile would be far too narrow; t accounts for the
    variance being estimated from the same few runs. One value gives (v, None, None): a single seed
    says nothing about seed-to-seed spread, so no interval is claimed. Empty gives (None, None, None).
    """
    alpha = _check_alpha(alpha)
    vals = _as_finite(values, "seed values")
    n = len(vals)
    if n == 0:
        return None, None, None
    mean = float(vals.mean())
    if n == 1:
        return mean, None, None
    half = t_ppf(1.0 - alpha / 2.0, n - 1) * float(vals.std(ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half
