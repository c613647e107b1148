"""The frontier: runs as points on two metrics, the non-dominated set and hypervolume per group."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from spt.errors import SptError
from spt.frontier.pareto import hypervolume_2d, non_dominated
from spt.frontier.registry import MetricInfo, metric_info
from spt.store.engine import Store
from spt.store.selection import (
    MetricValue,
    latest_metrics,
    metric_judges,
    metric_presets,
    parse_where,
    recorded_categories,
    recorded_metrics,
    resolve_judge,
    select_runs,
)

DEFAULT_X = "task_loss"
DEFAULT_Y = "alignment_loss"
OR_BENCH = ("over_refusal_rate", "refusal_rate")
GROUP_BY = ("defense", "poison", "model", "stage")
HV_BOOT_CELLS = 200_000  # points x replicates the hypervolume bootstrap may cost
HV_BOOT_MIN = 100  # fewer replicates than this give no interval


@dataclass
class Point:
    """One run on the two axes."""

    run_id: str
    kind: str
    defense: str | None
    lam: float | None
    poison_ratio: float | None
    model: str | None
    task: str | None
    seed: int | None
    status: str
    group: str
    x: MetricValue
    y: MetricValue
    on_frontier: bool = False  # non-dominated among all points
    on_group_frontier: bool = False  # non-dominated within its group
    configuration: str = ""  # runs that differ only in seed share it
    runs: list[str] = field(default_factory=list)  # the runs pooled into this point (one unless by configuration)
    seeds: list[int | None] = field(default_factory=list)
    aligned_by: str | None = None  # the alignment variant of the run's parent (none, vaccine, booster, dpo)

    @property
    def xy(self) -> tuple[float, float]:
        return (float(self.x.value), float(self.y.value))  # type: ignore[arg-type]


@dataclass
class GroupSummary:
    name: str
    n_points: int
    n_frontier: int
    hypervolume: float | None  # None: no fixed reference point (`FrontierResult.ref_source` says why)
    rank: int | None = 0
    hv_low: float | None = None  # bootstrap interval of the hypervolume
    hv_high: float | None = None
    distinct_from_next: bool | None = None  # hypervolume differs from the next rank's (interval excludes 0)


@dataclass
class FrontierResult:
    x: MetricInfo
    y: MetricInfo
    category: str
    group_by: str
    points: list[Point]  # every run with both metrics, sorted by x from best to worst
    groups: list[GroupSummary]  # ranked by hypervolume, best first
    ref: tuple[float, float] | None  # hypervolume reference point (None when there are no points)
    ref_source: str  # "worst observed" | "--ref"
    n_runs: int  # runs matching the filters
    excluded: dict[str, int]  # reason -> number of runs left out
    judge: dict[str, str] | None = None  # {"id", "name"} when --judge was given
    where: dict[str, list[str]] = field(default_factory=dict)
    setting: str | None = None  # the evaluation setting key all points share
    setting_description: str | None = None
    per_seed: bool = False  # points are runs (True) or configurations pooled across seeds (False)

    @property
    def directions(self) -> tuple[str, str]:
        return (self.x.direction, self.y.direction)

    @property
    def frontier(self) -> list[Point]:
        return [p for p in self.points if p.on_frontier]

    @property
    def n_excluded(self) -> int:
        return sum(self.excluded.values())

    def rows(self, all_points: bool = False) -> list[Point]:
        return self.points if all_points else self.frontier


def group_key(run: dict[str, Any], group_by: str) -> str:
    if group_by == "defense":
        # base and aligned models are references, not defended fine-tunes: keep them apart from `none`
        if run["kind"] in ("base", "align", "external"):
            return f"({run['kind']})"
        return run["defense"] or "none"
    if group_by == "poison":
        p = run["poison_ratio"]
        return "poison=unset" if p is None else f"poison={p:g}"
    if group_by == "model":
        return run["base_model"] or run["model_ref"] or "unknown"
    if group_by == "stage":
        return run["kind"]
    raise SptError(f"`group_by` {group_by!r} is not valid; choose one of: {', '.join(GROUP_BY)}")


def _check_axis(store: Store, info: MetricInfo, category: str, recorded: list[str]) -> None:
    if info.name not in recorded:
        have = ", ".join(recorded) if recorded else "none yet (record some with `spt evaluate` / `spt judge`)"
        raise SptError(f"no run has metric {info.name!r}; metrics in the store: {have}")
    cats = recorded_categories(store, info.name)
    if category not in cats:
        raise SptError(f"metric {info.name!r} has no category {category!r}; its categories: {', '.join(cats)}")


def _axis_judges(store: Store, info: MetricInfo, category: str, judge: tuple[str, str] | None) -> list[str] | None:
    """Judge ids to keep for this axis' metric rows (None: no restriction)."""
    judges = metric_judges(store, info.name, category)
    if not judges:
        return None
    if judge is not None:
        if judge[0] not in {j[0] for j in judges}:
            names = ", ".join(sorted({j[1] or j[0] for j in judges}))
            raise SptError(f"judge {judge[1]!r} recorded no {info.name!r}; judges that did: {names}")
        return [judge[0]]
    if len(judges) > 1:
        names = ", ".join(f"{n} ({i.removeprefix('sha256:')[:8]})" for i, n in judges)
        raise SptError(f"metric {info.name!r} was recorded by {len(judges)} judges: {names}; pick one with `judge`")
    return None


def compute_frontier(
    store: Store,
    x: str | None = None,
    y: str | None = None,
    *,
    category: str = "all",
    judge: str | None = None,
    preset: str | None = None,
    where: Iterable[str] | dict[str, list[str]] | None = None,
    group_by: str = "defense",
    ref: Sequence[float] | None = None,
    setting: str | None = None,
    per_seed: bool = False,
    n_boot: int = 400,
) -> FrontierResult:
    """Configurations (or runs) as points (x, y), their non-dominated set, and hypervolume per group.

    Per run and metric the value is taken from the most recent evaluation that recorded it, within one
    evaluation setting (`setting`, a key prefix; required when the runs were evaluated under several).
    Runs that differ only in seed are pooled into one point unless `per_seed`. The rules that make the
    ranking a valid comparison are in `spt.frontier.comparable`. Runs without an evaluation, without one
    of the metrics, or whose metric has no value (all unscored) are left out and counted in `excluded`.
    """
    from spt.frontier import comparable as cmp
    from spt.store.selection import evaluation_settings

    x_info = metric_info(x or DEFAULT_X, store)
    y_info = metric_info(y or DEFAULT_Y, store)
    if x_info.name == y_info.name:
        raise SptError(f"`x` and `y` are both {x_info.name!r}; pick two different metrics")
    if group_by not in GROUP_BY:
        raise SptError(f"`group_by` {group_by!r} is not valid; choose one of: {', '.join(GROUP_BY)}")
    if ref is not None:
        if len(ref) != 2:
            raise SptError("`ref` needs two numbers, X,Y")
        ref = (float(ref[0]), float(ref[1]))
    where_d = parse_where(where)
    recorded = recorded_metrics(store)
    if not recorded:
        raise SptError(f"no metrics in {store.path} yet, so there is no frontier; evaluate runs first "
                       "(`spt evaluate`, or `spt demo` for an example)")
    for info in (x_info, y_info):
        _check_axis(store, info, category, recorded)
    judge_row = resolve_judge(store, judge)[0] if judge else None
    jx = _axis_judges(store, x_info, category, judge_row)
    jy = _axis_judges(store, y_info, category, judge_row)
    judge_ids = sorted(set((jx or []) + (jy or []))) or None

    presets: dict[str, str] | None = None
    if preset is not None:  # applies to the axes recorded under it (losses may have no preset)
        presets = {i.name: preset for i in (x_info, y_info) if preset in metric_presets(store, i.name, category)}
        if not presets:
            have = sorted({str(p) for i in (x_info, y_info) for p in metric_presets(store, i.name, category)})
            raise SptError(f"`preset` {preset!r}: neither {x_info.name} nor {y_info.name} was recorded under it; "
                           f"presets: {', '.join(have)}")

    settings = evaluation_settings(store)
    eval_filter: list[str] | None = None
    if setting is not None:
        eval_filter = [e for e, (k, _d) in settings.items() if k.startswith(setting)]
        if not eval_filter:
            have = ", ".join(sorted({f"{k} ({d})" for k, d in settings.values()})) or "none"
            raise SptError(f"`setting` {setting!r} matches no evaluation setting; settings: {have}")

    runs = select_runs(store, where_d)
    names = [x_info.name, y_info.name]
    metrics = latest_metrics(store, names, categories=[category], judge_ids=judge_ids, judge_mode="any",
                             preset=presets, where=where_d, evaluation_ids=eval_filter)

    excluded: Counter[str] = Counter()
    points: list[Point] = []
    for run in runs:
        mx = metrics.get((run["id"], x_info.name, category, None))
        my = metrics.get((run["id"], y_info.name, category, None))
        if not run["has_evaluation"] and mx is None and my is None:
            excluded["no evaluation"] += 1
            continue
        if mx is None or my is None:
            missing = [n for n, m in ((x_info.name, mx), (y_info.name, my)) if m is None]
            excluded[f"no {' or '.join(missing)}"] += 1
            continue
        if mx.value is None or my.value is None:
            excluded["unscored (metric has no value)"] += 1
            continue
        points.append(Point(
            run_id=run["id"], kind=run["kind"], defense=run["defense"], lam=run["lam"],
            poison_ratio=run["poison_ratio"], model=run["base_model"] or run["model_ref"], task=run["task"],
            seed=run["seed"], status=run["status"], group=group_key(run, group_by), x=mx, y=my,
            configuration=run["configuration"], runs=[run["id"]], seeds=[run["seed"]],
            aligned_by=run.get("aligned_by"),
        ))
    setting_key = cmp.check_one_setting(points, settings)
    for info in (x_info, y_info):
        used = {getattr(p, "x" if info is x_info else "y").preset for p in points}
        if len(used) > 1:
            raise SptError(f"{info.name} comes from {len(used)} refusal presets or rubrics "
                           f"({', '.join(sorted(str(u) for u in used))}); pick one with `preset`")
    in_points = {p.run_id for p in points}
    cmp.check_like_runs([r for r in runs if r["id"] in in_points], group_by)
    if not per_seed:
        points = cmp.aggregate_configurations(points, (cmp.is_bounded(x_info.name), cmp.is_bounded(y_info.name)))

    directions = (x_info.direction, y_info.direction)
    mask = non_dominated([p.xy for p in points], directions)
    for p, m in zip(points, mask, strict=True):
        p.on_frontier = m
    by_group: dict[str, list[Point]] = {}
    for p in points:
        by_group.setdefault(p.group, []).append(p)
    if ref is not None:
        ref_pt: tuple[float, float] | None = ref
        ref_source = "--ref"
    elif points:
        base_values = _base_values(store, names, category, settings, setting_key, presets)
        ref_pt, ref_source = cmp.reference_point(x_info.name, y_info.name, directions, base_values)
    else:
        ref_pt, ref_source = None, "no points"
    groups = []
    for name, pts in by_group.items():
        gmask = non_dominated([p.xy for p in pts], directions)
        for p, m in zip(pts, gmask, strict=True):
            p.on_group_frontier = m
        hv = hypervolume_2d([p.xy for p in pts], ref_pt, directions) if ref_pt else None
        groups.append(GroupSummary(name, len(pts), sum(gmask), hv))
    groups.sort(key=lambda g: (-(g.hypervolume or 0.0), g.name))
    for i, g in enumerate(groups, 1):
        g.rank = i if ref_pt is not None else None
    # The bootstrap recomputes every group's hypervolume per replicate; bound the work so a frontier over
    # thousands of runs stays interactive (intervals are then left out rather than computed from few draws).
    n_boot_eff = min(n_boot, HV_BOOT_CELLS // max(1, len(points)))
    if ref_pt is not None and groups and n_boot_eff >= HV_BOOT_MIN:
        boot = cmp.hypervolume_intervals(by_group, ref_pt, directions,
                                         (cmp.is_bounded(x_info.name), cmp.is_bounded(y_info.name)),
                                         n_boot=n_boot_eff)
        for i, g in enumerate(groups):
            g.hv_low, g.hv_high, _ = boot[g.name]
            if i + 1 < len(groups):
                g.distinct_from_next = cmp.distinguishable(boot[g.name][2], boot[groups[i + 1].name][2])

    sx = 1.0 if x_info.direction == "lower" else -1.0
    sy = 1.0 if y_info.direction == "lower" else -1.0
    points.sort(key=lambda p: (sx * p.xy[0], sy * p.xy[1], p.run_id))
    return FrontierResult(
        x=x_info, y=y_info, category=category, group_by=group_by, points=points, groups=groups, ref=ref_pt,
        ref_source=ref_source, n_runs=len(runs), excluded=dict(excluded),
        judge={"id": judge_row[0], "name": judge_row[1]} if judge_row else None, where=where_d,
        setting=setting_key, setting_description=next((d for k, d in settings.values() if k == setting_key), None),
        per_seed=per_seed,
    )


def _base_values(store: Store, names: list[str], category: str, settings: dict[str, tuple[str, str]],
                 setting_key: str | None, presets: dict[str, str] | None) -> dict[str, list[tuple[str, float]]]:
    """Values of base-model runs (kind base) per metric, in the frontier's evaluation setting."""
    evals = [e for e, (k, _d) in settings.items() if k == setting_key]
    if not evals:
        return {}
    base = latest_metrics(store, names, categories=[category], judge_mode="none", preset=presets,
                          where={"kind": ["base"]}, evaluation_ids=evals)
    out: dict[str, list[tuple[str, float]]] = {}
    for (run_id, name, _c, _j), m in sorted(base.items()):
        if m.value is not None:
            out.setdefault(name, []).append((run_id, float(m.value)))
    return out
