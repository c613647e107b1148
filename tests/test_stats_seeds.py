"""Seed-aware statistics, checked by simulation: false positives, power, coverage, pooled widths.

The simulated world is HarmOR's: prompts cluster by sensitive word (a word effect on the logit of
refusing), each fine-tuning seed shifts the whole model (a seed effect), and each reply is a Bernoulli
draw. Every test fixes its RNG seed, so it is deterministic; the thresholds leave room for the
binomial noise of the number of simulated experiments (1,000 at 5% has a standard deviation of 0.7%).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from spt import stats
from spt.compare import seed_difference
from spt.metrics import RATE, estimate, pool_seeds

N_WORDS, PER_WORD = 10, 4  # 40 harmful prompts in 10 word clusters
WORD_SD, BASE_LOGIT = 1.0, 0.0
ALPHA = 0.05


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _experiment(rng, k: int, seed_sd: float, effect: float = 0.0):
    """Per-run refusal rates of A and B (k seeds each) on one shared prompt set."""
    words = np.repeat(rng.normal(0.0, WORD_SD, N_WORDS), PER_WORD)
    item = BASE_LOGIT + words + rng.normal(0.0, 0.5, N_WORDS * PER_WORD)
    out = []
    for shift in (0.0, effect):
        seeds = rng.normal(0.0, seed_sd, k)
        p = _sigmoid(item[None, :] + shift + seeds[:, None])
        out.append((rng.random(p.shape) < p).astype(float))
    return out  # two arrays of shape (k, items)


def _rejects(a, b, paired: bool) -> bool:
    _, lo, hi, p, _, _ = seed_difference(list(a.mean(1)), list(b.mean(1)), paired=paired)
    if lo is None:
        return False
    assert (p < ALPHA) == (lo > 0 or hi < 0)  # the p-value and the interval agree
    return p < ALPHA


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("seed_sd", [0.0, 0.3, 0.6])
def test_null_simulation_false_positive_rate_and_power(k, seed_sd, capsys):
    rng = np.random.default_rng(1000 * k + int(seed_sd * 10))
    n = 1000
    fp_welch = fp_paired = 0
    for _ in range(n):
        a, b = _experiment(rng, k, seed_sd)
        fp_welch += _rejects(a, b, paired=False)
        fp_paired += _rejects(a, b, paired=True)
    power = sum(_rejects(*_experiment(rng, k, seed_sd, effect=1.0), paired=False) for _ in range(300)) / 300
    with capsys.disabled():
        print(f"\n  {k} seeds, seed SD {seed_sd} logit: false positives Welch {fp_welch / n:.3f}, paired "
              f"{fp_paired / n:.3f} over {n} null experiments; power at +1 logit {power:.2f}")
    assert fp_welch / n <= 0.07 and fp_paired / n <= 0.07
    # not blind (well above alpha), though with 3 seeds and a seed SD of 0.6 logit a one-logit shift is
    # found in only about a fifth of experiments: such claims need more seeds, and the output says n_seeds
    assert power > 0.15


def test_item_level_pooling_over_seeds_is_what_fails():
    """The method this replaces (average each item over seeds, then a paired item bootstrap) rejects a true
    null far too often once seeds vary: the simulation above can tell a wrong method from a right one."""
    rng = np.random.default_rng(7)
    n, fp = 200, 0
    for _ in range(n):
        a, b = _experiment(rng, 3, 0.6)
        clusters = np.repeat(np.arange(N_WORDS), PER_WORD)
        _, lo, hi = stats.paired_bootstrap_diff(a.mean(0), b.mean(0), clusters, n_boot=400)
        fp += lo > 0 or hi < 0
    assert fp / n > 0.15


def test_clustered_rate_intervals_cover(capsys):
    """Word-clustered prompts: the interval of a refusal rate covers the population rate >= 93% of the time
    at nominal 95%, where the exact binomial interval (items as independent) falls short."""
    rng = np.random.default_rng(3)
    n_words, per_word, word_sd = 20, 8, 1.0
    w = rng.normal(0.0, word_sd, 400_000)
    truth = float(_sigmoid(w + rng.normal(0.0, 0.3, w.size)).mean())
    clusters = np.repeat(np.arange(n_words), per_word)
    hit = hit_cp = 0
    reps = 600
    for _ in range(reps):
        logits = np.repeat(rng.normal(0.0, word_sd, n_words), per_word) + rng.normal(0.0, 0.3, clusters.size)
        vals = (rng.random(clusters.size) < _sigmoid(logits)).astype(float)
        est = estimate(list(vals), RATE, list(clusters))
        assert est.method == "cluster-robust-t+clopper-pearson" and est.n_clusters == n_words
        hit += est.ci_low <= truth <= est.ci_high
        lo, hi = stats.clopper_pearson_interval(int(vals.sum()), vals.size)
        hit_cp += lo <= truth <= hi
    with capsys.disabled():
        print(f"\n  clustered rate intervals: coverage {hit / reps:.3f} (exact binomial alone {hit_cp / reps:.3f}) "
              f"over {reps} simulated evaluations of {n_words} words x {per_word} prompts")
    assert hit / reps >= 0.93, hit / reps
    assert hit_cp / reps < 0.88  # why the clustered interval exists


def test_unclustered_rates_keep_the_exact_interval():
    vals = [1.0] * 3 + [0.0] * 17
    for clusters in (None, [f"i{i}" for i in range(20)], ["w"] * 20):
        est = estimate(vals, RATE, clusters)
        assert est.method == "clopper-pearson"
        assert (est.ci_low, est.ci_high) == pytest.approx(stats.clopper_pearson_interval(3, 20))
    zero = estimate([0.0] * 20, RATE, [f"w{i // 4}" for i in range(20)])
    assert zero.ci_low == 0 and zero.ci_high == pytest.approx(1 - 0.025 ** (1 / 20))  # never zero-width at 0/n


def test_pooled_interval_is_never_narrower_than_the_widest_seed():
    rng = np.random.default_rng(11)
    for _ in range(300):
        k = int(rng.integers(1, 6))
        bounded = bool(rng.integers(0, 2))
        ns = [int(rng.integers(5, 60))] * k
        vals = [float(rng.integers(0, m + 1)) / m for m in ns] if bounded else list(rng.normal(1.0, 0.2, k))
        ivs = []
        for v in vals:
            half = float(rng.uniform(0.0, 0.3))
            ivs.append((max(0.0, v - half), min(1.0, v + half)) if bounded else (v - half, v + half))
        est = pool_seeds(vals, ns=ns if bounded else None, bounded=bounded, run_intervals=ivs)
        widest = max(h - lo for lo, h in ivs)
        assert est.ci_high - est.ci_low >= widest - 1e-12
        assert all(est.ci_low <= lo + 1e-12 and h <= est.ci_high + 1e-12 for lo, h in ivs)
        assert est.n_seeds == k and est.n == (max(ns) if bounded else k)
        if bounded:
            assert 0.0 <= est.ci_low <= est.value <= est.ci_high <= 1.0


def test_seed_difference_by_hand():
    # paired: differences (0.1, 0.2, 0.3): mean 0.2, sd 0.1, df 2
    d, lo, hi, p, df, method = seed_difference([0.1, 0.2, 0.3], [0.2, 0.4, 0.6], paired=True)
    half = 4.302653 * 0.1 / math.sqrt(3)
    assert (d, df) == (pytest.approx(0.2), 2) and (lo, hi) == (pytest.approx(0.2 - half), pytest.approx(0.2 + half))
    t = 0.2 / (0.1 / math.sqrt(3))
    assert p == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-6)  # Student t with 2 df in closed form
    assert method == "t-over-seeds (paired by seed)"
    # a fixed side (a base model: no training seed) against 3 seeds: a one-sample t on B's spread only
    d, lo, hi, p, df, method = seed_difference([0.5], [0.6, 0.7, 0.8], paired=False, a_fixed=True)
    assert (d, df, method) == (pytest.approx(0.2), 2, "t-over-seeds (one side fixed)")
    assert hi - lo == pytest.approx(2 * half)
    # seeds that all agree have no spread: no t interval (compare falls back to the items' interval)
    assert seed_difference([0.5, 0.5], [0.5, 0.5], paired=True)[1] is None
