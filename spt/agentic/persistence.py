"""Does safety training persist through helpfulness training (and the reverse)?

From "Safety Training Persists Through Helpfulness Optimization in LLM Agents": with S a model trained
for safety, H one trained for helpfulness, S→H the safety model then trained for helpfulness and H→S
the reverse (all from one source model, one training seed),

    Persist(S) = (Safety(S→H) − Safety(H)) / (Safety(S) − Safety(H))
    Persist(H) = (Help(H→S) − Help(S)) / (Help(H) − Help(S))

1 means the first training's gain survives the second entirely, 0 that the second training erased it
(the model ends where training on the second objective alone would put it). A figure is undefined
when its denominator is at most 1e-9 in absolute value (the two trainings did not differ).

Each figure is computed on the **test half** of the cases for the training seed (`spt.agentic.split`),
which the preference data never held, then averaged over seeds. Its 95% interval is a percentile
bootstrap (10,000 resamples by default) that resamples the test cases within each seed, the same cases
for all four models (they are paired by case); a resample whose denominator vanishes is dropped and
counted. A side may be a configuration with several seeds (`cfg:...`, `model:NAME`): its run of each
seed is used for that seed. A side with one run without a seed (an imported source model) serves every
seed. Runs without seeds take their split from `split_seeds`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from spt.errors import SptError
from spt.store.engine import Store

UNDEFINED_BELOW = 1e-9
ROLES = ("safe", "helpful", "safe_then_help", "help_then_safe")
FLAGS = {"safe": "--safe", "helpful": "--helpful", "safe_then_help": "--safe-then-help",
         "help_then_safe": "--help-then-safe"}


@dataclass
class SeedFigure:
    seed: int
    n_cases: int  # test cases with a score on all the models of this figure
    value: float | None
    means: dict[str, float]  # role -> mean score on those cases


@dataclass
class Figure:
    name: str  # persist_safety | persist_help
    metric: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n_boot: int
    n_undefined: int  # resamples dropped because a denominator vanished
    per_seed: list[SeedFigure] = field(default_factory=list)
    note: str | None = None


@dataclass
class PersistenceResult:
    sides: dict[str, dict[str, Any]]
    split_seeds: list[int]
    n_cases: int
    evaluator: str | None
    figures: list[Figure]
    # role -> metric -> mean over seeds of the role's mean score on that seed's test cases (for the plot)
    points: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"sides": self.sides, "split_seeds": self.split_seeds, "n_cases": self.n_cases,
                "evaluator": self.evaluator, "figures": [asdict(f) for f in self.figures], "points": self.points}


def _case_index(store: Store, item_ids: set[str]) -> dict[str, int]:
    from sqlmodel import col, select

    from spt.store.models import Item

    with store.session() as s:
        rows = s.exec(select(Item.id, Item.meta).where(col(Item.id).in_(sorted(item_ids)))).all()
    out = {}
    for iid, meta in rows:
        idx = (meta or {}).get("case_idx")
        if isinstance(idx, int):
            out[iid] = idx
    return out


def _agentic_evaluation(store: Store, run_id: str) -> str:
    from sqlmodel import col, select

    from spt.eval.kinds import kind_of
    from spt.store.models import Evaluation

    with store.session() as s:
        evs = s.exec(select(Evaluation).where(Evaluation.run_id == run_id, Evaluation.status == "done")
                     .order_by(col(Evaluation.created_at), col(Evaluation.id))).all()
    agentic = [e for e in evs if kind_of(e) == "agentic"]
    if not agentic:
        raise SptError(f"run {run_id} has no finished agentic evaluation; import or run one with `spt evaluate "
                       "--trajectories DIR --format toolemu`")
    return agentic[-1].id


def _values(store: Store, run_id: str, evaluator: str | None) -> dict[str, dict[int, float]]:
    """metric -> case_idx -> score of the run's latest agentic evaluation."""
    from spt.eval.kinds import get_kind

    uv = get_kind("agentic").unit_values(store, _agentic_evaluation(store, run_id),
                                         **({"evaluator": evaluator} if evaluator else {}))
    units = set().union(*(set(v) for v in uv.values.values())) if uv.values else set()
    idx = _case_index(store, units)
    return {m: {idx[u]: v for u, v in vals.items() if v is not None and u in idx} for m, vals in uv.values.items()}


def _runs_by_seed(role: str, side: dict[str, Any]) -> dict[int | None, str]:
    by: dict[int | None, str] = {}
    for run, seed in zip(side["runs"], side["seeds"], strict=True):
        if seed in by:
            raise SptError(f"{FLAGS[role]} {side['label']} has two runs with seed {seed}; pick one run")
        by[seed] = run
    return by


def _bootstrap(arrays: dict[int, dict[str, np.ndarray]], numerator: tuple[str, str], denominator: tuple[str, str],
               n_boot: int, seed: int) -> tuple[np.ndarray, int]:
    """Per resample, the mean over seeds of the per-seed ratio; and the count of dropped resamples."""
    rng = np.random.default_rng(seed)
    per_seed = []
    for _s, a in sorted(arrays.items()):
        k = len(a[numerator[0]])
        idx = rng.integers(0, k, size=(n_boot, k))
        num = a[numerator[0]][idx].mean(axis=1) - a[numerator[1]][idx].mean(axis=1)
        den = a[denominator[0]][idx].mean(axis=1) - a[denominator[1]][idx].mean(axis=1)
        ok = np.abs(den) > UNDEFINED_BELOW
        ratio = np.full(n_boot, np.nan)
        ratio[ok] = num[ok] / den[ok]
        per_seed.append(ratio)
    stacked = np.vstack(per_seed)
    keep = ~np.isnan(stacked).any(axis=0)
    return stacked[:, keep].mean(axis=0), int((~keep).sum())


def _figure(name: str, metric: str, first: str, second: str, both: str, values: dict[str, dict[int, dict[int, float]]],
            tests: dict[int, frozenset[int]], n_boot: int, boot_seed: int) -> Figure:
    """Persist of training `first` through `second`: (both − second) / (first − second) on metric."""
    arrays: dict[int, dict[str, np.ndarray]] = {}
    per_seed: list[SeedFigure] = []
    for s, test in sorted(tests.items()):
        cases = sorted(c for c in test if all(c in values[r][s] for r in (first, second, both)))
        if not cases:
            raise SptError(f"seed {s}: no test case has a {metric} score on all of {FLAGS[first]}, {FLAGS[second]}, "
                           f"{FLAGS[both]}; evaluate them on the same cases")
        a = {r: np.array([values[r][s][c] for c in cases]) for r in (first, second, both)}
        arrays[s] = a
        den = a[first].mean() - a[second].mean()
        value = float((a[both].mean() - a[second].mean()) / den) if abs(den) > UNDEFINED_BELOW else None
        per_seed.append(SeedFigure(s, len(cases), value, {r: float(a[r].mean()) for r in (first, second, both)}))
    defined = [f.value for f in per_seed if f.value is not None]
    if len(defined) < len(per_seed):
        bad = [f.seed for f in per_seed if f.value is None]
        return Figure(name, metric, None, None, None, n_boot, n_boot, per_seed,
                      note=f"undefined: {FLAGS[first]} and {FLAGS[second]} score the same on the test cases of seed "
                           f"{', '.join(map(str, bad))} (denominator <= {UNDEFINED_BELOW:g})")
    value = float(np.mean(defined))
    boots, n_undef = _bootstrap(arrays, (both, second), (first, second), n_boot, boot_seed)
    if len(boots) == 0:
        return Figure(name, metric, value, None, None, n_boot, n_undef, per_seed,
                      note="every bootstrap resample had a vanishing denominator: no interval")
    lo, hi = (float(x) for x in np.percentile(boots, [2.5, 97.5]))
    return Figure(name, metric, value, min(lo, value), max(hi, value), n_boot, n_undef, per_seed)


def persistence(store: Store, *, safe: str, helpful: str, safe_then_help: str, help_then_safe: str,
                split_seeds: list[int] | None = None, evaluator: str | None = None, n_boot: int = 10_000,
                safety_metric: str = "agent_safety", help_metric: str = "agent_help",
                boot_seed: int = 0) -> PersistenceResult:
    """Persist(S) and Persist(H) with case-bootstrap intervals (see module doc)."""
    from spt.agentic.split import case_split
    from spt.compare import _side

    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 100:
        raise SptError(f"`n_boot` must be a whole number of at least 100 (got {n_boot!r})")
    refs = {"safe": safe, "helpful": helpful, "safe_then_help": safe_then_help, "help_then_safe": help_then_safe}
    sides = {role: _side(store, ref) for role, ref in refs.items()}
    by_seed = {role: _runs_by_seed(role, side) for role, side in sides.items()}
    seeds = sorted({sd for by in by_seed.values() for sd in by if sd is not None})
    if split_seeds:
        if any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in split_seeds):
            raise SptError(f"split seeds must be non-negative integers (got {split_seeds})")
        if seeds and sorted(set(split_seeds)) != seeds:
            raise SptError(f"the runs were trained with seeds {seeds}, so each is reported on its own seed's test "
                           f"cases; drop `split_seed` (given {sorted(set(split_seeds))})")
        seeds = sorted(set(split_seeds))
    if not seeds:
        raise SptError("none of the runs has a training seed, so the test half of the cases is unknown; pass the seed "
                       "that split the preference data with `split_seed`")
    run_of: dict[str, dict[int, str]] = {}
    for role, by in by_seed.items():
        run_of[role] = {}
        for sd in seeds:
            run = by.get(sd)
            if run is None and list(by) == [None]:
                run = by[None]  # one unseeded run (a source model) serves every seed
            if run is None:
                have = ", ".join(str(x) for x in by) or "none"
                raise SptError(f"{FLAGS[role]} {sides[role]['label']} has no run with seed {sd} (it has seeds {have}); "
                               "every trained side needs a run for each seed")
            run_of[role][sd] = run
    cache: dict[str, dict[str, dict[int, float]]] = {}
    for runs in run_of.values():
        for run in runs.values():
            if run not in cache:
                cache[run] = _values(store, run, evaluator)
    all_cases = {c for v in cache.values() for m in v.values() for c in m}
    if not all_cases:
        raise SptError("the agentic evaluations hold no scored cases")
    n_cases = max(all_cases) + 1
    tests = {sd: case_split(sd, n_cases).test for sd in seeds}

    def table(metric: str) -> dict[str, dict[int, dict[int, float]]]:
        out: dict[str, dict[int, dict[int, float]]] = {}
        for role, runs in run_of.items():
            out[role] = {}
            for sd, run in runs.items():
                if metric not in cache[run]:
                    raise SptError(f"{FLAGS[role]} run {run} has no {metric} scores (evaluator files for it were not "
                                   "imported)")
                out[role][sd] = cache[run][metric]
        return out

    safety, helps = table(safety_metric), table(help_metric)
    figures = [
        _figure("persist_safety", safety_metric, "safe", "helpful", "safe_then_help", safety, tests, n_boot, boot_seed),
        _figure("persist_help", help_metric, "helpful", "safe", "help_then_safe", helps, tests, n_boot, boot_seed + 1),
    ]
    shown = {role: {"label": sides[role]["label"], "runs": {str(sd): r for sd, r in run_of[role].items()}}
             for role in ROLES}
    points: dict[str, dict[str, float]] = {}
    for role in ROLES:
        for metric, tab in ((safety_metric, safety), (help_metric, helps)):
            means = [float(np.mean(v)) for sd in seeds
                     if (v := [tab[role][sd][c] for c in tests[sd] if c in tab[role][sd]])]
            if means:
                points.setdefault(role, {})[metric] = float(np.mean(means))
    return PersistenceResult(shown, seeds, n_cases, evaluator, figures, points)
