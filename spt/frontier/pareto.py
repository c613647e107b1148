"""Pareto non-dominance, exact 2-D hypervolume and the frontier staircase, with a direction per axis.

Directions are "lower" (minimise) or "higher" (maximise). Internally points are mapped to
minimisation space by negating maximised axes, which preserves every comparison.

Dominance: a dominates b when a is at least as good on both axes and strictly better on one. Equal
points therefore do not dominate each other (all copies stay on the frontier), while a point that
ties on one axis and is worse on the other is dominated.
"""

from __future__ import annotations

from collections.abc import Sequence

from spt.errors import SptError

Point2 = tuple[float, float]


def _check_directions(directions: Sequence[str]) -> tuple[float, float]:
    if len(directions) != 2:
        raise SptError("two directions are needed, one per axis")
    signs = []
    for d in directions:
        if d not in ("lower", "higher"):
            raise SptError(f"direction must be 'lower' or 'higher', got {d!r}")
        signs.append(1.0 if d == "lower" else -1.0)
    return signs[0], signs[1]


def _to_min(points: Sequence[Point2], directions: Sequence[str]) -> list[Point2]:
    sx, sy = _check_directions(directions)
    return [(sx * float(x), sy * float(y)) for x, y in points]


def dominates(a: Point2, b: Point2, directions: Sequence[str] = ("lower", "lower")) -> bool:
    """True when `a` is at least as good as `b` on both axes and strictly better on one."""
    (ax, ay), (bx, by) = _to_min([a, b], directions)
    return ax <= bx and ay <= by and (ax < bx or ay < by)


def non_dominated(points: Sequence[Point2], directions: Sequence[str] = ("lower", "lower")) -> list[bool]:
    """A mask over `points`: True for every point no other point dominates. O(n log n).

    Sort by x (minimisation space); among points sharing an x only those with the group's best y
    can survive, and they survive when no point with a strictly smaller x has a y as good or better.
    """
    pts = _to_min(points, directions)
    order = sorted(range(len(pts)), key=lambda i: pts[i])
    mask = [False] * len(pts)
    best_y_before = float("inf")  # best y among points with strictly smaller x
    i = 0
    while i < len(order):
        j = i
        x = pts[order[i]][0]
        while j < len(order) and pts[order[j]][0] == x:
            j += 1
        group_best = pts[order[i]][1]  # sorted by (x, y): the first has the smallest y
        if group_best < best_y_before:
            for k in range(i, j):
                if pts[order[k]][1] == group_best:
                    mask[order[k]] = True
            best_y_before = group_best
        i = j
    return mask


def _front_sorted(pts_min: list[Point2]) -> list[Point2]:
    """Distinct non-dominated points in minimisation space, x ascending (so y descending)."""
    out: list[Point2] = []
    best_y = float("inf")
    for x, y in sorted(set(pts_min)):
        if y < best_y:  # the first point of each x has its smallest y
            out.append((x, y))
            best_y = y
    return out


def hypervolume_2d(
    points: Sequence[Point2], ref: Point2, directions: Sequence[str] = ("lower", "lower")
) -> float:
    """The area dominated by `points` and bounded by the reference point `ref` (exact).

    Points that are not strictly better than `ref` on both axes contribute nothing.
    """
    sx, sy = _check_directions(directions)
    rx, ry = sx * float(ref[0]), sy * float(ref[1])
    pts = [(x, y) for x, y in _to_min(points, directions) if x < rx and y < ry]
    front = _front_sorted(pts)
    area = 0.0
    for k, (x, y) in enumerate(front):
        next_x = front[k + 1][0] if k + 1 < len(front) else rx
        area += (next_x - x) * (ry - y)
    return area


def worst_point(points: Sequence[Point2], directions: Sequence[str] = ("lower", "lower")) -> Point2:
    """The worst observed value on each axis (the default hypervolume reference)."""
    if not points:
        raise SptError("no points to take a reference from")
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    return (max(xs) if directions[0] == "lower" else min(xs), max(ys) if directions[1] == "lower" else min(ys))


def staircase(points: Sequence[Point2], directions: Sequence[str] = ("lower", "lower")) -> list[Point2]:
    """Vertices of the frontier's step line through the non-dominated `points`, in data space.

    From each frontier point the line keeps its y until the next point's x, then moves to that
    point: the boundary of the region the frontier dominates.
    """
    sx, sy = _check_directions(directions)
    front = _front_sorted(_to_min(points, directions))
    verts: list[Point2] = []
    for k, (x, y) in enumerate(front):
        if k:
            verts.append((x, front[k - 1][1]))
        verts.append((x, y))
    return [(sx * x, sy * y) for x, y in verts]
