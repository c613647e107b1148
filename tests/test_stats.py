"""Intervals and paired tests in spt.stats, checked against hand computations, published values,
independent exact sums and coverage simulations (never against the module's own output)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from spt import stats
from spt.stats import (
    CLOPPER_PEARSON,
    CLUSTER_BOOTSTRAP,
    DEFAULT_RATE_METHOD,
    PAIRED_BOOTSTRAP,
    RATE_METHODS,
    T_ACROSS_SEEDS,
    WILSON,
    beta_ppf,
    betainc,
    clopper_pearson_interval,
    cluster_bootstrap_mean,
    mcnemar_exact,
    mcnemar_from_pairs,
    paired_bootstrap_diff,
    rate_interval,
    seed_interval,
    t_ppf,
    wilson_interval,
)


def _binom_sf(k: int, n: int, p: float) -> float:
    """P(X >= k), X ~ Binomial(n, p), by a direct sum of exact binomial coefficients (log space)."""

    def log_pmf(i: int) -> float:
        log_comb = math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
        return log_comb + i * math.log(p) + (n - i) * math.log1p(-p)

    return sum(math.exp(log_pmf(i)) for i in range(k, n + 1))


def _exact_coverage(interval, n: int, p: float) -> float:
    total = 0.0
    for k in range(n + 1):
        lo, hi = interval(k, n)
        if lo <= p <= hi:
            total += math.comb(n, k) * p**k * (1 - p) ** (n - k)
    return total


# ------------------------------------------------------------------ method names


def test_method_names_are_the_stored_strings():
    assert (WILSON, CLOPPER_PEARSON, CLUSTER_BOOTSTRAP, PAIRED_BOOTSTRAP, T_ACROSS_SEEDS) == (
        "wilson", "clopper-pearson", "cluster-bootstrap", "paired-bootstrap", "t-across-seeds"
    )
    assert set(RATE_METHODS) == {"wilson", "clopper-pearson"}
    assert DEFAULT_RATE_METHOD in RATE_METHODS


# ------------------------------------------------------------------ special functions


def test_betainc_closed_forms_and_symmetry():
    for x in (1e-6, 0.1, 0.37, 0.5, 0.9, 1 - 1e-6):
        assert betainc(1, 1, x) == pytest.approx(x, rel=1e-12)
        assert betainc(3.5, 1, x) == pytest.approx(x**3.5, rel=1e-10)
        assert betainc(1, 4, x) == pytest.approx(1 - (1 - x) ** 4, rel=1e-10)
        assert betainc(2.5, 7.0, x) == pytest.approx(1 - betainc(7.0, 2.5, 1 - x), abs=1e-13)
    # I_{1/2}(1/2, 1/2) = 1/2 and I_x(1/2, 1/2) = (2/pi) asin(sqrt(x)) (the arcsine law)
    assert betainc(0.5, 0.5, 0.5) == pytest.approx(0.5, abs=1e-13)
    assert betainc(0.5, 0.5, 0.2) == pytest.approx(2 / math.pi * math.asin(math.sqrt(0.2)), abs=1e-12)
    assert betainc(2, 3, 0.0) == 0.0 and betainc(2, 3, 1.0) == 1.0
    with pytest.raises(ValueError):
        betainc(0, 1, 0.5)


def test_betainc_is_the_binomial_tail():
    # I_p(k, n - k + 1) = P(Binomial(n, p) >= k), checked by summing exact binomial terms.
    for k, n, p in [(1, 10, 0.3), (5, 20, 0.25), (7, 50, 0.05), (40, 60, 0.7), (3, 1000, 0.001)]:
        assert betainc(k, n - k + 1, p) == pytest.approx(_binom_sf(k, n, p), rel=1e-9)


def test_beta_ppf_inverts_betainc():
    for q, a, b in [(0.025, 5, 16), (0.975, 6, 15), (0.5, 0.5, 0.5), (1e-6, 2, 3), (0.3, 1000, 2000)]:
        assert betainc(a, b, beta_ppf(q, a, b)) == pytest.approx(q, rel=1e-9)
    assert beta_ppf(0.3, 1, 1) == pytest.approx(0.3, abs=1e-13)
    assert beta_ppf(0.0, 2, 2) == 0.0 and beta_ppf(1.0, 2, 2) == 1.0


def test_t_ppf_matches_published_table():
    # Standard t table values (e.g. NIST/SEMATECH e-Handbook, Table 1.3.6.7.2).
    table = {(0.975, 1): 12.7062, (0.975, 2): 4.3027, (0.975, 4): 2.7764, (0.975, 10): 2.2281,
             (0.975, 30): 2.0423, (0.995, 4): 4.6041, (0.95, 5): 2.0150, (0.99, 20): 2.5280}
    for (p, df), value in table.items():
        assert t_ppf(p, df) == pytest.approx(value, abs=1e-4)
        assert t_ppf(1 - p, df) == pytest.approx(-value, abs=1e-4)
    assert t_ppf(0.975, 100_000) == pytest.approx(1.95996, abs=1e-4)  # tends to the normal quantile
    # t with 2 df has the closed form t = (2p - 1) / sqrt(2 p (1 - p)).
    p = 0.9
    assert t_ppf(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-10)
    assert t_ppf(0.5, 3) == 0.0


# ------------------------------------------------------------------ rates


def test_published_values_for_5_of_20():
    lo, hi = clopper_pearson_interval(5, 20)
    assert lo == pytest.approx(0.0866, abs=1e-4) and hi == pytest.approx(0.4910, abs=1e-4)
    lo, hi = wilson_interval(5, 20)
    assert lo == pytest.approx(0.1119, abs=1e-4) and hi == pytest.approx(0.4687, abs=1e-4)


def test_zero_of_30_is_never_zero_width():
    lo, hi = clopper_pearson_interval(0, 30)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 30), abs=1e-12)
    assert hi == pytest.approx(0.1157, abs=1e-4)
    lo, hi = wilson_interval(0, 30)
    z2 = 1.959963984540054**2
    assert lo == 0.0 and hi == pytest.approx(z2 / (30 + z2), rel=1e-12)  # Wilson's upper bound at k = 0
    assert hi == pytest.approx(0.1135, abs=1e-4)


def test_n_of_n_mirrors_zero_of_n_and_no_interval_is_zero_width():
    for method in RATE_METHODS:
        for n in (1, 2, 7, 30, 1000):
            for k in sorted({0, 1, n // 2, n - 1, n}):
                lo, hi = rate_interval(k, n, method)
                assert 0.0 <= lo < hi <= 1.0
                assert lo <= k / n <= hi
                mlo, mhi = rate_interval(n - k, n, method)
                assert lo == pytest.approx(1 - mhi, abs=1e-10) and hi == pytest.approx(1 - mlo, abs=1e-10)
    assert clopper_pearson_interval(30, 30)[0] == pytest.approx(1 - 0.1157, abs=1e-4)
    assert wilson_interval(30, 30)[0] == pytest.approx(1 - 0.1135, abs=1e-4)


def test_clopper_pearson_bounds_solve_the_binomial_tail_equations():
    # Definition: P(X >= k | p_lo) = alpha/2 and P(X <= k | p_hi) = alpha/2, by exact sums.
    for k, n, alpha in [(7, 50, 0.05), (1, 12, 0.05), (33, 40, 0.10), (3, 1000, 0.01)]:
        lo, hi = clopper_pearson_interval(k, n, alpha)
        assert _binom_sf(k, n, lo) == pytest.approx(alpha / 2, rel=1e-7)
        assert 1 - _binom_sf(k + 1, n, hi) == pytest.approx(alpha / 2, rel=1e-7)


def test_clopper_pearson_at_large_n():
    # One event in 300k trials: the exact Poisson 95% limits for one count are 0.0253 and 5.5716.
    lo, hi = clopper_pearson_interval(1, 300_000)
    assert lo * 300_000 == pytest.approx(-math.log(0.975), rel=1e-3)
    assert hi * 300_000 == pytest.approx(5.5716, rel=1e-3)
    # Half of 200k: the normal approximation is accurate to well under 1e-4.
    lo, hi = clopper_pearson_interval(100_000, 200_000)
    half = 1.959964 * math.sqrt(0.25 / 200_000)
    assert lo == pytest.approx(0.5 - half, abs=2e-5) and hi == pytest.approx(0.5 + half, abs=2e-5)


@pytest.mark.parametrize("p", [0.02, 0.2, 0.5])
def test_rate_intervals_cover_by_simulation_at_n_30(p):
    n = 30
    ks = np.random.default_rng(20240601).binomial(n, p, size=4000)
    for method in RATE_METHODS:
        bounds = {k: rate_interval(k, n, method) for k in range(n + 1)}
        covered = np.mean([bounds[k][0] <= p <= bounds[k][1] for k in ks])
        assert covered >= 0.93, (method, p, covered)


def test_wilson_undercovers_near_zero_which_is_why_exact_is_the_default():
    # At n = 30 Wilson's k = 1 interval starts at 0.00591 (by hand: centre 0.08631, half-width 0.08040),
    # so at p = 0.0055 only k = 0 covers p: coverage = 0.9945^30 = 0.848. Clopper-Pearson keeps >= 95%.
    assert wilson_interval(1, 30)[0] == pytest.approx(0.00591, abs=1e-5)
    assert _exact_coverage(wilson_interval, 30, 0.0055) == pytest.approx(0.9945**30, abs=1e-12)
    assert _exact_coverage(wilson_interval, 30, 0.0055) < 0.85
    for p in (0.001, 0.0055, 0.02, 0.1, 0.2, 0.37, 0.5):
        assert _exact_coverage(clopper_pearson_interval, 30, p) >= 0.95
    assert DEFAULT_RATE_METHOD == CLOPPER_PEARSON
    assert rate_interval(5, 20) == clopper_pearson_interval(5, 20)


def test_rate_input_errors():
    for bad in [(0, 0), (-1, 5), (6, 5)]:
        for method in RATE_METHODS:
            with pytest.raises(ValueError):
                rate_interval(*bad, method=method)
    with pytest.raises(ValueError):
        rate_interval(1, 5, method="wald")
    with pytest.raises(ValueError):
        wilson_interval(1, 5, alpha=0.0)
    with pytest.raises(TypeError):
        clopper_pearson_interval(1.5, 5)


def test_alpha_changes_width():
    w90 = clopper_pearson_interval(5, 20, 0.10)
    w95 = clopper_pearson_interval(5, 20, 0.05)
    assert w95[0] < w90[0] < 0.25 < w90[1] < w95[1]


# ------------------------------------------------------------------ cluster bootstrap


def test_cluster_bootstrap_empty_single_cluster_and_errors():
    assert cluster_bootstrap_mean([]) == (None, None, None)
    assert cluster_bootstrap_mean([0.25]) == (0.25, 0.25, 0.25)
    assert cluster_bootstrap_mean([1.0, 0.0, 0.0, 1.0], ["w"] * 4) == (0.5, 0.5, 0.5)
    assert cluster_bootstrap_mean([2.0] * 10) == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError):
        cluster_bootstrap_mean([1.0, 2.0], ["a"])
    with pytest.raises(ValueError):
        cluster_bootstrap_mean([1.0, float("nan")])
    with pytest.raises(ValueError):
        cluster_bootstrap_mean([1.0, 2.0], n_boot=0)


def test_cluster_bootstrap_uses_the_item_level_ratio_estimator():
    # Cluster a: nine 1s; cluster b: one 0. Item mean 0.9 (the mean of cluster means would be 0.5).
    # Two clusters resampled: {a,a} -> 1 (prob 1/4), {b,b} -> 0 (1/4), {a,b} -> 9/10 (1/2).
    # The 40% and 60% quantiles both fall in the {a,b} atom, which is 0.9 only for the ratio estimator.
    values = [1.0] * 9 + [0.0]
    clusters = ["a"] * 9 + ["b"]
    mean, lo, hi = cluster_bootstrap_mean(values, clusters, n_boot=4000, alpha=0.8)
    assert mean == pytest.approx(0.9)
    assert lo == pytest.approx(0.9) and hi == pytest.approx(0.9)
    mean, lo, hi = cluster_bootstrap_mean(values, clusters, n_boot=4000, alpha=0.2)
    assert (lo, hi) == (0.0, 1.0)


def test_ratio_estimator_with_many_clusters_of_few_kinds():
    # 40 clusters of nine 1s and 40 clusters of one 0 (two kinds: the multinomial path). With A the
    # number of nine-item clusters drawn, A ~ Binomial(80, 1/2) and the replicate is 9A / (9A + 80 - A).
    # Binomial(80, 1/2): P(A <= 29) = 0.009 and P(A <= 32) = 0.046 (exact sums), so even with Monte
    # Carlo error the 2.5% point lies in ratio(29..32) = 0.837..0.857 and, by symmetry, the 97.5% point
    # in ratio(48..51) = 0.931..0.941. Averaging cluster means instead would centre on 0.5.
    def ratio(a: int) -> float:
        return 9 * a / (9 * a + 80 - a)

    values, clusters = [], []
    for c in range(40):
        values += [1.0] * 9 + [0.0]
        clusters += [f"ones{c}"] * 9 + [f"zero{c}"]
    mean, lo, hi = cluster_bootstrap_mean(values, clusters, n_boot=4000)
    assert mean == pytest.approx(0.9)
    assert ratio(29) <= lo <= ratio(32)
    assert ratio(48) <= hi <= ratio(51)


def test_item_bootstrap_of_a_proportion_matches_the_normal_approximation():
    # 0/1 values without clusters take the multinomial shortcut; its spread must be the binomial one.
    rng = np.random.default_rng(5)
    for n, p in [(400, 0.3), (5000, 0.05)]:
        xs = (rng.random(n) < p).astype(float)
        mean, lo, hi = cluster_bootstrap_mean(xs, n_boot=4000)
        half = 1.959964 * math.sqrt(mean * (1 - mean) / n)
        assert lo < mean < hi
        assert (hi - lo) / 2 == pytest.approx(half, rel=0.08)


def test_multinomial_shortcut_agrees_with_index_resampling():
    # Same data twice: 1-5 scores (few distinct values -> multinomial path) and the same scores with
    # a negligible distinct jitter (every value unique -> index path). The intervals must agree.
    rng = np.random.default_rng(11)
    scores = rng.choice([1.0, 2.0, 3.0, 4.0, 5.0], p=[0.5, 0.2, 0.1, 0.1, 0.1], size=3000)
    jittered = scores + np.arange(3000) * 1e-12
    m1, lo1, hi1 = cluster_bootstrap_mean(scores, n_boot=4000, seed=1)
    m2, lo2, hi2 = cluster_bootstrap_mean(jittered, n_boot=4000, seed=2)
    se = scores.std() / math.sqrt(3000)
    assert m1 == pytest.approx(m2, abs=1e-8)
    assert lo1 == pytest.approx(lo2, abs=0.15 * se) and hi1 == pytest.approx(hi2, abs=0.15 * se)


def test_cluster_bootstrap_covers_a_clustered_mean_where_the_item_bootstrap_does_not():
    # 30 clusters of 4 items; cluster effect sd 1 and item noise sd 1 (intra-cluster correlation 0.5,
    # design effect 1 + 3 * 0.5 = 2.5). The item bootstrap's interval is ~1/sqrt(2.5) too narrow.
    rng = np.random.default_rng(7)
    true_mean, n_clusters, size, reps = 0.3, 30, 4, 400
    labels = np.repeat(np.arange(n_clusters), size).tolist()
    hit_cluster = hit_item = 0
    for r in range(reps):
        u = np.repeat(rng.normal(0, 1, n_clusters), size)
        y = true_mean + u + rng.normal(0, 1, n_clusters * size)
        _, lo, hi = cluster_bootstrap_mean(y, labels, n_boot=500, seed=r)
        hit_cluster += lo <= true_mean <= hi
        _, lo, hi = cluster_bootstrap_mean(y, None, n_boot=500, seed=r)
        hit_item += lo <= true_mean <= hi
    cover_cluster, cover_item = hit_cluster / reps, hit_item / reps
    assert cover_cluster >= 0.88, cover_cluster
    assert cover_item < 0.85, cover_item
    assert cover_cluster - cover_item >= 0.08, (cover_cluster, cover_item)


def test_cluster_labels_can_be_any_hashable_in_any_order():
    y = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.5]
    by_str = cluster_bootstrap_mean(y, ["x", "y", "x", "z", "y", "w", "z", "w"], seed=4)
    by_int = cluster_bootstrap_mean(y, [10, 20, 10, 30, 20, 40, 30, 40], seed=4)
    assert by_str == by_int


def test_bootstrap_is_deterministic_and_thread_count_independent(monkeypatch):
    rng = np.random.default_rng(3)
    x = rng.normal(size=20_000)
    first = cluster_bootstrap_mean(x, n_boot=1000, seed=9)  # 20M cells: large enough to use threads
    assert cluster_bootstrap_mean(x, n_boot=1000, seed=9) == first
    assert cluster_bootstrap_mean(x, n_boot=1000, seed=10) != first
    monkeypatch.setattr(stats, "_max_threads", lambda: 1)
    assert cluster_bootstrap_mean(x, n_boot=1000, seed=9) == first


def test_bootstrap_of_100k_items_is_fast():
    rng = np.random.default_rng(0)
    continuous = rng.normal(size=100_000)  # every value distinct: the slow path
    binary = (rng.random(100_000) < 0.2).astype(float)
    words = [f"w{i % 3000}" for i in range(100_000)]

    def best_of_two(fn) -> float:  # a second try absorbs a transient load spike on a shared runner
        times = []
        for _ in range(2):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
            if times[-1] < 2.0:
                break
        return min(times)

    mean, lo, hi = cluster_bootstrap_mean(continuous)
    assert lo < mean < hi and hi - lo == pytest.approx(2 * 1.96 / math.sqrt(100_000), rel=0.1)
    assert best_of_two(lambda: cluster_bootstrap_mean(continuous)) < 2.0  # ~1.1 s on 2 cores
    assert best_of_two(lambda: (cluster_bootstrap_mean(binary), cluster_bootstrap_mean(continuous, words))) < 2.0


# ------------------------------------------------------------------ paired bootstrap


def test_paired_bootstrap_identical_and_shifted():
    a = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]
    diff, lo, hi = paired_bootstrap_diff(a, a)
    assert diff == 0.0 and lo <= 0.0 <= hi
    diff, lo, hi = paired_bootstrap_diff(a, [v + 1 for v in a])
    assert diff == 1.0 and lo == 1.0 and hi == 1.0
    assert paired_bootstrap_diff([], []) == (None, None, None)
    with pytest.raises(ValueError):
        paired_bootstrap_diff([1.0, 2.0], [1.0])


def test_pairing_detects_a_small_consistent_improvement():
    # Items vary a lot (sd 10); system b is better by 0.5 on every item, up to small noise.
    rng = np.random.default_rng(2)
    a = rng.normal(0, 10, 200)
    b = a + 0.5 + rng.normal(0, 0.2, 200)
    diff, lo, hi = paired_bootstrap_diff(a, b)
    assert diff == pytest.approx(float(np.mean(b) - np.mean(a)))
    assert 0.0 < lo < diff < hi
    # Unpaired, the two systems' intervals overlap heavily: nothing could be claimed.
    _, alo, ahi = cluster_bootstrap_mean(a)
    _, blo, bhi = cluster_bootstrap_mean(b, seed=1)
    assert blo < ahi and alo < bhi


def test_paired_bootstrap_resamples_clusters_jointly():
    # Pairs of items share a cluster; b - a is +1 on cluster p and -1 on cluster q, so with the pairs
    # kept intact every replicate mean lies in [-1, 1] and the point estimate is the item-level mean.
    a = [0.0, 0.0, 5.0, 5.0, 2.0]
    b = [1.0, 1.0, 4.0, 4.0, 2.0]
    diff, lo, hi = paired_bootstrap_diff(a, b, ["p", "p", "q", "q", "r"], n_boot=3000)
    assert diff == pytest.approx(0.0)
    assert -1.0 <= lo < 0.0 < hi <= 1.0


# ------------------------------------------------------------------ McNemar


def test_mcnemar_hand_values():
    assert mcnemar_exact(1, 9) == 2 * (1 + 10) / 1024 == 0.021484375
    assert mcnemar_exact(9, 1) == 0.021484375
    assert mcnemar_exact(0, 5) == 2 / 32 == 0.0625
    assert mcnemar_exact(7, 7) == 1.0
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 1) == 1.0  # 2 * 1/2
    assert mcnemar_exact(2, 10) == pytest.approx(2 * (1 + 12 + 66) / 4096)
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)


def test_mcnemar_large_counts_match_the_normal_approximation():
    # Beyond the exact-integer range the binomial tail comes from betainc; compare with the
    # continuity-corrected normal tail, and check both sides of the switch agree.
    for b, c in [(99_000, 100_000), (9_900, 10_100), (10_050, 9_960)]:
        n = b + c
        z = (min(b, c) + 0.5 - n / 2) / math.sqrt(n / 4)
        assert mcnemar_exact(b, c) == pytest.approx(min(1.0, 2 * 0.5 * math.erfc(-z / math.sqrt(2))), rel=2e-3)
    assert mcnemar_exact(9_850, 10_150) == pytest.approx(mcnemar_exact(9_851, 10_150), rel=0.05)


def test_mcnemar_from_pairs_counts_discordant_pairs():
    x = [True, True, False, False, True, False, True, True]
    y = [True, False, True, False, False, False, True, False]
    b, c, p = mcnemar_from_pairs(x, y)
    assert (b, c) == (3, 1)
    assert p == 2 * (1 + 4) / 16  # min(b, c) = 1 of n = 4 discordant pairs
    assert mcnemar_from_pairs([], []) == (0, 0, 1.0)
    with pytest.raises(ValueError):
        mcnemar_from_pairs([True], [True, False])


# ------------------------------------------------------------------ seeds


def test_seed_interval_hand_value():
    mean, lo, hi = seed_interval([1.0, 2.0, 3.0])
    # sd = 1, t_{0.975, 2} = 4.3027, half-width = 4.3027 / sqrt(3) = 2.4841
    assert mean == 2.0
    assert lo == pytest.approx(-0.4841, abs=1e-4) and hi == pytest.approx(4.4841, abs=1e-4)


def test_seed_interval_edge_cases():
    assert seed_interval([]) == (None, None, None)
    assert seed_interval([0.42]) == (0.42, None, None)
    assert seed_interval([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)
    # Two seeds: t_{0.975, 1} = 12.7062, sd = |x1 - x2| / sqrt(2), half = 12.7062 * 0.1 / 2.
    mean, lo, hi = seed_interval([0.4, 0.6])
    assert mean == pytest.approx(0.5) and hi - mean == pytest.approx(12.7062 * 0.1, abs=1e-4)
    with pytest.raises(ValueError):
        seed_interval([1.0, float("inf")])
