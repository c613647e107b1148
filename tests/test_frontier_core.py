"""Pareto non-dominance and hypervolume against brute force (property-based)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spt.errors import SptError
from spt.frontier.pareto import dominates, hypervolume_2d, non_dominated, staircase, worst_point
from spt.frontier.registry import METRICS, metric_info

DIRS = st.tuples(st.sampled_from(["lower", "higher"]), st.sampled_from(["lower", "higher"]))
# small integer grids force many ties (equal x, equal y, identical points)
SMALL = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=0, max_size=40)
WIDE = st.lists(st.tuples(st.integers(-50, 50), st.integers(-50, 50)), min_size=0, max_size=120)
FLOATS = st.lists(st.tuples(st.floats(-1e3, 1e3, allow_nan=False), st.floats(-1e3, 1e3, allow_nan=False)),
                  max_size=60)


def brute_dominates(a, b, dirs) -> bool:
    def better_eq(u, v, d):
        return u <= v if d == "lower" else u >= v

    def better(u, v, d):
        return u < v if d == "lower" else u > v

    return (better_eq(a[0], b[0], dirs[0]) and better_eq(a[1], b[1], dirs[1])
            and (better(a[0], b[0], dirs[0]) or better(a[1], b[1], dirs[1])))


def brute_front(points, dirs) -> list[bool]:
    return [not any(brute_dominates(q, p, dirs) for j, q in enumerate(points) if j != i)
            for i, p in enumerate(points)]


@settings(max_examples=300, deadline=None)
@given(points=st.one_of(SMALL, WIDE, FLOATS), dirs=DIRS)
def test_non_dominated_equals_brute_force(points, dirs):
    assert non_dominated(points, dirs) == brute_front(points, dirs)


@settings(max_examples=100, deadline=None)
@given(points=SMALL, dirs=DIRS)
def test_dominates_matches_brute(points, dirs):
    for a, b in itertools.product(points[:8], repeat=2):
        assert dominates(a, b, dirs) == brute_dominates(a, b, dirs)


def test_ties():
    pts = [(1, 1), (1, 1), (1, 2), (2, 1), (0, 3), (0, 3)]
    # equal points are all non-dominated; (1,2) ties x with (1,1) and is worse on y: dominated
    assert non_dominated(pts, ("lower", "lower")) == [True, True, False, False, True, True]
    assert non_dominated([], ("lower", "lower")) == []
    assert non_dominated([(3, 3)], ("higher", "lower")) == [True]


def grid_hypervolume(points, ref, dirs) -> int:
    """Count unit cells of the integer grid dominated by some point and bounded by ref."""
    sx = 1 if dirs[0] == "lower" else -1
    sy = 1 if dirs[1] == "lower" else -1
    pts = [(sx * x, sy * y) for x, y in points]
    rx, ry = sx * ref[0], sy * ref[1]
    xs = range(min([p[0] for p in pts] + [rx]), rx)
    ys = range(min([p[1] for p in pts] + [ry]), ry)
    return sum(1 for cx in xs for cy in ys if any(px <= cx and py <= cy for px, py in pts))


@settings(max_examples=200, deadline=None)
@given(points=st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12)), min_size=1, max_size=25), dirs=DIRS,
       ref=st.one_of(st.none(), st.tuples(st.integers(-2, 14), st.integers(-2, 14))))
def test_hypervolume_equals_grid_count(points, dirs, ref):
    if ref is None:
        ref = worst_point(points, dirs)
    hv = hypervolume_2d(points, ref, dirs)
    assert hv == pytest.approx(grid_hypervolume(points, ref, dirs))
    # only the frontier matters
    front = [p for p, m in zip(points, non_dominated(points, dirs), strict=True) if m]
    assert hypervolume_2d(front, ref, dirs) == pytest.approx(hv)


def test_hypervolume_examples():
    assert hypervolume_2d([(1, 3), (2, 2), (3, 1)], (4, 4)) == pytest.approx(6.0)
    # maximise y: points (0,1) and (1,2), ref (2,0) -> [0,2]x[0,1] + [1,2]x[1,2] = 2 + 1
    assert hypervolume_2d([(0, 1), (1, 2)], (2, 0), ("lower", "higher")) == pytest.approx(3.0)
    assert hypervolume_2d([(5, 5)], (4, 4)) == 0.0  # worse than the reference: nothing
    assert hypervolume_2d([], (1, 1)) == 0.0


def test_staircase_vertices():
    verts = staircase([(1, 3), (2, 2), (3, 1)], ("lower", "lower"))
    assert verts == [(1, 3), (2, 3), (2, 2), (3, 2), (3, 1)]
    up = staircase([(0.1, 0.5), (0.2, 0.8)], ("lower", "higher"))
    assert up == [(0.1, 0.5), (0.2, 0.5), (0.2, 0.8)]


def test_registry():
    assert METRICS["refusal_rate"].direction == "higher"
    assert METRICS["task_loss"].direction == "lower"
    assert "↓ better" in METRICS["task_loss"].axis_label()
    assert "↑ better" in METRICS["task_accuracy"].axis_label()
    for name in ("asr", "over_refusal_rate", "pair_score", "alignment_loss_harmful", "alignment_loss_benign",
                 "harmfulness_mean", "harmful_rate", "xstest_full_refusal_rate", "xstest_partial_refusal_rate",
                 "strongreject_mean", "judge_refusal_rate", "judge_over_refusal_rate"):
        info = METRICS[name]
        assert info.direction in ("higher", "lower") and info.label and info.unit
    assert metric_info("my_metric:higher").direction == "higher"
    assert metric_info("task_loss:higher").direction == "higher"
    with pytest.raises(SptError, match="no direction"):
        metric_info("my_metric")
    with pytest.raises(SptError, match="direction must be"):
        metric_info("task_loss:sideways")
