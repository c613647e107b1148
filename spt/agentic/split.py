"""The seeded train/test halves of the cases.

Preference data for training may only come from the train half; persistence and the reported numbers
of trained models are measured on the test half. The split follows the published pipeline
(`compute_test_indices` in bplaut/safety-persists-llm-agents): the case indices 0..n-1 shuffled by
Python's `random` seeded with the split seed, the second half (n - n//2 cases) is test. The same seed
gives the same halves on every machine and Python version (`random.shuffle` with an integer seed is
stable), so a model trained with seed s is reported on exactly the cases its data never held.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from spt.errors import SptError


@dataclass(frozen=True)
class CaseSplit:
    """The two halves of a seeded split, as sets of `case_idx`."""

    seed: int
    n_cases: int
    train: frozenset[int]
    test: frozenset[int]


def case_split(seed: int, n_cases: int) -> CaseSplit:
    """The train and test halves of `n_cases` cases for `seed` (see module doc)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise SptError(f"the split seed must be a non-negative integer (got {seed!r})")
    if n_cases < 2:
        raise SptError(f"a train/test split needs at least 2 cases (got {n_cases})")
    order = list(range(n_cases))
    random.Random(seed).shuffle(order)
    return CaseSplit(seed, n_cases, frozenset(order[:n_cases // 2]), frozenset(order[n_cases // 2:]))
