"""What makes a frontier a valid comparison: one evaluation setting, like runs in one ranking, a fixed
reference point, seeds pooled into configurations, and hypervolume intervals.

- *Setting*: every point's numbers come from evaluations with one setting (dataset version, split,
  --limit sample, decoding, task); mixing is an error that lists the settings (`check_one_setting`).
- *Like runs*: hypervolume ranks groups within one (model, task, poison ratio); a mix is an error unless
  `--group-by` groups by the mixed dimension (`check_like_runs`).
- *Reference point*: fixed, not the worst observed point (which moves when a run is added and always
  scores the least safe group 0). Per axis: a rate's worst possible value (0 for "higher is better",
  1 for "lower is better"); for any other metric, the starting model's value: the base-model run
  evaluated in the same setting (`reference_point`).
- *Configurations*: runs that differ only in seed are one point, the mean across seeds with a Student-t
  interval (`aggregate_configurations`).
- *Hypervolume interval*: a parametric bootstrap over each point's interval; neighbours in the ranking
  are "distinguishable" when the bootstrap interval of their difference excludes 0.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from spt.errors import SptError

BOUNDED = ("_rate", "pair_score", "task_accuracy")  # metrics in [0, 1]


def is_bounded(name: str) -> bool:
    return name.endswith(BOUNDED) or name in BOUNDED


def check_one_setting(points: list[Any], settings: dict[str, tuple[str, str]]) -> str | None:
    """The one evaluation setting all points use; SptError listing them when they differ."""
    used: dict[str, set[str]] = defaultdict(set)
    for p in points:
        for m in (p.x, p.y):
            key, _desc = settings.get(m.evaluation_id or "", ("unknown", "no evaluation"))
            used[key].add(p.run_id)
    if len(used) <= 1:
        return next(iter(used), None)
    desc = {k: d for k, d in settings.values()}
    listing = "; ".join(f"{k} ({desc.get(k, '?')}): {len(r)} run(s)" for k, r in sorted(used.items(),
                                                                                        key=lambda kv: -len(kv[1])))
    raise SptError(f"the runs were evaluated under {len(used)} different settings, which are not comparable on "
                   f"one frontier: {listing}; pick one with `setting` KEY")


def check_like_runs(runs: list[dict[str, Any]], group_by: str) -> None:
    """Fine-tuned runs in one ranking share model, task and poison ratio, unless --group-by splits them."""
    tuned = [r for r in runs if r["kind"] not in ("base", "align", "external")]
    dims = {"model": {r["base_model"] or r["model_ref"] for r in tuned},
            "task": {r["task"] for r in tuned},
            "poison": {r["poison_ratio"] for r in tuned}}
    mixed = [d for d, vals in dims.items() if len(vals) > 1]
    allowed = {"poison": {"poison"}, "model": {"model"}}.get(group_by, set())
    bad = [d for d in mixed if d not in allowed]
    if bad:
        what = "; ".join(f"{d}: {', '.join(sorted(str(v) for v in dims[d]))}" for d in bad)
        hint = " or `group_by` poison" if bad == ["poison"] else (" or `group_by` model" if bad == ["model"] else "")
        raise SptError(f"hypervolume ranks defenses within one model, task and poison ratio, but these runs mix "
                       f"{what}; select one with `where` (e.g. `where` poison_ratio=0.1){hint}")


def reference_point(x_name: str, y_name: str, directions: tuple[str, str],
                    base_values: dict[str, list[tuple[str, float]]]) -> tuple[tuple[float, float] | None, str]:
    """The fixed reference point and a sentence saying where each coordinate comes from.

    `base_values[metric]`: (run id, value) of base-model runs evaluated in the frontier's setting. When an
    unbounded axis has no single base value there is no fixed reference: (None, the reason and the fix).
    Only hypervolume needs one; the Pareto set, tables, exports and plots do not.
    """
    coords: list[float] = []
    said: list[str] = []
    for name, direction in zip((x_name, y_name), directions, strict=True):
        if is_bounded(name):
            v = 0.0 if direction == "higher" else 1.0
            coords.append(v)
            said.append(f"{name} {v:g} (worst possible)")
            continue
        found = base_values.get(name) or []
        if not found:
            return None, (f"hypervolume left out: no base-model run has {name} in this evaluation setting, so "
                          "there is no fixed reference; evaluate the starting model (`spt evaluate MODEL`) or pass "
                          "`ref` X,Y")
        if len({round(v, 12) for _, v in found}) > 1:
            return None, (f"hypervolume left out: {len(found)} base-model runs with different {name} values in "
                          "this setting; select one model with `where` model=NAME or pass `ref` X,Y")
        coords.append(found[0][1])
        said.append(f"{name} {found[0][1]:.4g} (starting model, run {found[0][0][:13]})")
    return (coords[0], coords[1]), "fixed: " + "; ".join(said)


def aggregate_configurations(points: list[Any], bounded: tuple[bool, bool]) -> list[Any]:
    """One point per configuration: the mean across its seeds with `spt.metrics.pool_seeds`'s interval.

    A configuration with one seed keeps that run's own interval (no spread across seeds is known). `n` is
    the number of distinct items (seeds answer the same prompts), the seed count is `extra["n_seeds"]`.
    """
    from spt.metrics import pool_seeds

    groups: dict[str, list[Any]] = defaultdict(list)
    for p in points:
        groups[p.configuration].append(p)
    out = []
    for members in groups.values():
        members.sort(key=lambda p: (p.seed is None, p.seed, p.run_id))
        head = members[0]
        if len(members) == 1:
            out.append(replace(head, runs=[head.run_id], seeds=[head.seed]))
            continue
        axes = []
        for axis, bnd in zip(("x", "y"), bounded, strict=True):
            ms = [getattr(p, axis) for p in members]
            vals = [float(m.value) for m in ms]
            est = pool_seeds(vals, ns=[m.n for m in ms], bounded=bnd, run_intervals=[(m.ci_low, m.ci_high) for m in ms])
            axes.append(replace(ms[0], value=est.value, ci_low=est.ci_low, ci_high=est.ci_high, ci_method=est.method,
                                n=est.n, n_unscored=sum(m.n_unscored for m in ms),  # replies, all seeds
                                extra={"per_seed": vals, "n_seeds": est.n_seeds}))
        out.append(replace(head, x=axes[0], y=axes[1], runs=[p.run_id for p in members],
                           seeds=[p.seed for p in members]))
    return out


def _se(m: Any) -> float:
    if m.ci_low is None or m.ci_high is None:
        return 0.0
    return max(0.0, (float(m.ci_high) - float(m.ci_low)) / (2 * 1.959964))


def hypervolume_intervals(groups: dict[str, list[Any]], ref: tuple[float, float], directions: Sequence[str],
                          bounded: tuple[bool, bool], *, n_boot: int = 400, seed: int = 0
                          ) -> dict[str, tuple[float, float, Any]]:
    """Per group: (low, high, replicate array) of its hypervolume under a parametric bootstrap.

    Each point is redrawn from a normal with the spread of its own interval (clipped to [0, 1] for
    rates); every group is recomputed on the same replicate, so differences between groups are paired.
    """
    import numpy as np

    from spt.frontier.pareto import hypervolume_2d

    rng = np.random.default_rng(seed)
    draws: dict[str, Any] = {}
    for name, pts in groups.items():
        arr = np.empty((n_boot, len(pts), 2))
        for i, p in enumerate(pts):
            for a, m in enumerate((p.x, p.y)):
                col = rng.normal(float(m.value), _se(m), n_boot)
                arr[:, i, a] = np.clip(col, 0.0, 1.0) if bounded[a] else col
        draws[name] = arr
    out = {}
    for name, arr in draws.items():
        hv = np.array([hypervolume_2d([tuple(row) for row in arr[b]], ref, directions) for b in range(n_boot)])
        out[name] = (float(np.quantile(hv, 0.025)), float(np.quantile(hv, 0.975)), hv)
    return out


def distinguishable(a: Any, b: Any) -> bool:
    """True when the bootstrap interval of hv(a) - hv(b) excludes 0 (paired replicates)."""
    import numpy as np

    d = a - b
    lo, hi = float(np.quantile(d, 0.025)), float(np.quantile(d, 0.975))
    return lo > 0 or hi < 0
