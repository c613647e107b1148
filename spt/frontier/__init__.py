"""The frontier: which runs are Pareto-optimal on two metrics, hypervolume per group, exports, plots.

    from spt.frontier import compute_frontier
    result = compute_frontier(store, "task_loss", "alignment_loss", group_by="defense")
    result.frontier            # non-dominated Points, best x first
    result.groups              # GroupSummary per group, ranked by hypervolume

Light to import: matplotlib is only imported by `plot_frontier` when it runs.
"""

from spt.frontier.compute import (
    DEFAULT_X,
    DEFAULT_Y,
    GROUP_BY,
    OR_BENCH,
    FrontierResult,
    GroupSummary,
    Point,
    compute_frontier,
)
from spt.frontier.export import FORMATS, render, to_dict, write_export
from spt.frontier.pareto import dominates, hypervolume_2d, non_dominated, staircase, worst_point
from spt.frontier.plot import plot_frontier
from spt.frontier.registry import METRICS, MetricInfo, metric_info
from spt.store.selection import MetricValue, latest_metrics, parse_where

__all__ = [
    "DEFAULT_X", "DEFAULT_Y", "FORMATS", "GROUP_BY", "METRICS", "OR_BENCH", "FrontierResult", "GroupSummary",
    "MetricInfo", "MetricValue", "Point", "compute_frontier", "dominates", "hypervolume_2d", "latest_metrics",
    "metric_info", "non_dominated", "parse_where", "plot_frontier", "render", "staircase", "to_dict",
    "worst_point", "write_export",
]
