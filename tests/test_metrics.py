"""The bootstrap interval behind every metric's CI."""

from __future__ import annotations

import random

from spt.metrics import bootstrap_ci


def test_bootstrap_ci_empty_single_and_constant():
    assert bootstrap_ci([]) == (None, None, None)
    assert bootstrap_ci([0.7]) == (0.7, 0.7, 0.7)
    assert bootstrap_ci([1.0] * 50) == (1.0, 1.0, 1.0)


def test_bootstrap_ci_brackets_the_mean_and_matches_the_normal_approximation():
    rng = random.Random(1)
    xs = [1.0 if rng.random() < 0.3 else 0.0 for _ in range(400)]
    mean, lo, hi = bootstrap_ci(xs)
    p = sum(xs) / len(xs)
    assert mean == p and lo < p < hi
    half = 1.96 * (p * (1 - p) / len(xs)) ** 0.5  # the interval of a proportion
    assert abs((hi - lo) / 2 - half) < 0.25 * half


def test_bootstrap_ci_is_deterministic_for_a_seed_and_handles_large_n():
    xs = [float(i % 7) for i in range(20_000)]
    assert bootstrap_ci(xs, seed=3) == bootstrap_ci(xs, seed=3)
    mean, lo, hi = bootstrap_ci(xs, n_boot=200)
    assert lo <= mean <= hi and hi - lo < 0.1
