"""`spt compare A B`: is the difference between two runs (or configurations) real?

Both sides must have been evaluated the same way (same evaluation kind, setting and items). Each side's
evaluation gives per-unit values through its kind (`spt.eval.kinds`: an item's refusal verdict, a pair's
score, an item's loss, a benchmark document's accuracy), and each metric is compared on the units both
sides scored. A unit without a verdict on either side (a degenerate reply, an unscored judgment) is
dropped and counted, never read as a 0.

Seeds are the unit of replication (../shared/DESIGN.md, statistics):

- A side with >= 2 seeds (a configuration `cfg:...` or `model:NAME`): each run's mean over the shared
  units is one observation. Both sides with the same seeds: a t interval over the per-seed paired
  differences (k - 1 degrees of freedom; runs with one seed share their data order and initialisation,
  so pairing removes that common part). Different seed sets: Welch's t. A single run against a
  configuration: one-sample t when the single run has no training seed (a base model: nothing random to
  vary), else the configuration's seed variance is assumed for both sides. Each run's mean carries its
  own item noise, so the spread over seeds includes it.
- Two single runs: seed variance cannot be estimated and the result says so. Items are then the
  replication: a paired bootstrap that resamples clusters (sensitive words, documents), and for 0/1
  metrics the exact McNemar p-value on the discordant items.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from spt.errors import SptError
from spt.store.engine import Store

BINARY = ("refusal_rate", "over_refusal_rate", "pair_score", "task_accuracy")
LOSSES = ("alignment_loss", "task_loss")
SEEDS_PAIRED = "t-over-seeds (paired by seed)"
SEEDS_WELCH = "welch-t-over-seeds"
SEEDS_ONE_FIXED = "t-over-seeds (one side fixed)"
SEEDS_EQUAL_VAR = "t-over-seeds (equal seed variance assumed)"
SEEDS_AGREE = "paired-bootstrap (seeds agree)"
NO_SEED_VARIANCE = ("seed variance not estimated: one run per side, so the interval and p-value are over "
                    "items only; compare configurations with >= 2 seeds each")


@dataclass
class Difference:
    metric: str
    n: int  # units (items, pairs, documents) compared
    a: float | None
    b: float | None
    diff: float | None
    ci_low: float | None
    ci_high: float | None
    method: str
    mcnemar_b: int | None = None  # items where A is 1 and B is 0
    mcnemar_c: int | None = None  # items where A is 0 and B is 1
    p_value: float | None = None
    n_dropped: int = 0
    n_seeds_a: int = 1
    n_seeds_b: int = 1
    df: float | None = None  # degrees of freedom of a t over seeds
    per_seed_a: list[float] | None = None
    per_seed_b: list[float] | None = None


@dataclass
class Comparison:
    a: dict[str, Any]
    b: dict[str, Any]
    setting: str
    setting_description: str
    preset: str | None
    kind: str = "refusal"
    differences: list[Difference] = field(default_factory=list)
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "setting": self.setting, "setting_description": self.setting_description,
                "preset": self.preset, "kind": self.kind, "note": self.note,
                "seed_variance_estimated": self.note is None,
                "differences": [asdict(d) for d in self.differences]}


def _side(store: Store, ref: str) -> dict[str, Any]:
    """A run (id or unique prefix) or a configuration (`cfg:...`, `model:NAME`) as {label, runs, seeds}."""
    from spt.runs import resolve_configuration, resolve_run

    ref = (ref or "").strip()
    if ref.startswith(("cfg:", "model:")):
        label, runs = resolve_configuration(store, ref)
        return {"label": label, "runs": [r["id"] for r in runs], "seeds": [r["seed"] for r in runs]}
    run = resolve_run(store, ref)
    return {"label": run.id, "runs": [run.id], "seeds": [run.seed]}


def _latest_evaluations(store: Store, run_ids: list[str], settings: dict[str, tuple[str, str]],
                        setting: str | None) -> dict[str, str]:
    """Per run, the id of its latest finished evaluation (in `setting` when given)."""
    from sqlmodel import col, select

    from spt.store.models import Evaluation

    with store.session() as s:
        evs = s.exec(select(Evaluation).where(col(Evaluation.run_id).in_(run_ids), Evaluation.status == "done")
                     .order_by(col(Evaluation.created_at), col(Evaluation.id))).all()
    out: dict[str, str] = {}
    for ev in evs:
        if setting is None or settings.get(ev.id, ("",))[0].startswith(setting):
            out[ev.run_id] = ev.id
    missing = [r for r in run_ids if r not in out]
    if missing:
        raise SptError(f"run {missing[0]} has no finished evaluation{' in setting ' + setting if setting else ''}; "
                       "run `spt evaluate` on it first")
    return out


def t_two_sided_p(t: float, df: float) -> float:
    """Two-sided p-value of Student's t with `df` degrees of freedom (df > 0)."""
    from spt import stats

    if math.isinf(t):
        return 0.0
    return min(1.0, stats.betainc(df / 2.0, 0.5, df / (df + t * t)))


def seed_difference(a: list[float], b: list[float], *, paired: bool, a_fixed: bool = False,
                    alpha: float = 0.05) -> tuple[float, float | None, float | None, float | None, float | None, str]:
    """mean(b) - mean(a) over per-seed values: (diff, lo, hi, p, df, method); lo/hi/p None when the seeds agree.

    paired: a[i] and b[i] share seed i (t over the differences, k - 1 df). Otherwise Welch's t
    (Satterthwaite df); with one value on a side, that side is either fixed (`a_fixed`/a one-sample t:
    nothing random to vary) or assumed to vary across seeds as the other side does.
    """
    from spt import stats

    ka, kb = len(a), len(b)
    ma, mb = sum(a) / ka, sum(b) / kb
    diff = mb - ma

    def var(xs: list[float]) -> float:
        m = sum(xs) / len(xs)
        return sum((x - m) ** 2 for x in xs) / (len(xs) - 1)

    if paired:
        d = [y - x for x, y in zip(a, b, strict=True)]
        se2, df, method = var(d) / ka, ka - 1.0, SEEDS_PAIRED
    elif ka >= 2 and kb >= 2:
        va, vb = var(a) / ka, var(b) / kb
        se2, method = va + vb, SEEDS_WELCH
        df = se2 * se2 / ((va * va / (ka - 1) if va else 0.0) + (vb * vb / (kb - 1) if vb else 0.0)) if se2 else 1.0
    else:
        many, k_many, k_one = (b, kb, ka) if kb >= 2 else (a, ka, kb)
        fixed = a_fixed if kb >= 2 else False
        v = var(many)
        se2 = v / k_many if fixed else v * (1.0 / k_many + 1.0 / k_one)
        df, method = k_many - 1.0, SEEDS_ONE_FIXED if fixed else SEEDS_EQUAL_VAR
    if se2 <= 0:
        return diff, None, None, None, df, method
    se = math.sqrt(se2)
    half = stats.t_ppf(1.0 - alpha / 2.0, df) * se
    return diff, diff - half, diff + half, t_two_sided_p(diff / se, df), df, method


def compare(store: Store, a: str, b: str, *, setting: str | None = None, preset: str | None = None,
            n_boot: int = 2000, cluster: str | None = None) -> Comparison:
    """Differences B − A on the same units, seed-aware where a side has seeds (see module doc).

    `preset` re-scores refusal evaluations with another keyword preset; `cluster` is passed to the kind
    (benchmark evaluations: "document" or "task").
    """
    from spt import stats
    from spt.eval.kinds import get_kind, kind_of
    from spt.store.models import Evaluation
    from spt.store.selection import evaluation_settings

    side_a, side_b = _side(store, a), _side(store, b)
    settings = evaluation_settings(store)
    evs = {**_latest_evaluations(store, side_a["runs"], settings, setting),
           **_latest_evaluations(store, side_b["runs"], settings, setting)}
    used = {settings[e][0] for e in evs.values()}
    if len(used) > 1:
        listing = "; ".join(sorted({f"{settings[e][0]} ({settings[e][1]})" for e in evs.values()}))
        raise SptError(f"A and B were evaluated on different prompt sets or settings ({listing}); evaluate both "
                       "the same way, or pick one with `setting` KEY")
    with store.session() as s:
        ev_rows = {e: s.get(Evaluation, e) for e in evs.values()}
    kinds = {kind_of(ev) for ev in ev_rows.values()}
    if len(kinds) > 1:
        raise SptError(f"A and B are evaluations of different kinds ({', '.join(sorted(kinds))}); compare "
                       "evaluations of one kind")
    kind = get_kind(kinds.pop())
    options: dict[str, Any] = {}
    if kind.name == "refusal":
        from spt.eval.refusal import get_preset

        presets = {ev.refusal_preset for ev in ev_rows.values()}
        preset = preset or (presets.pop() if len(presets) == 1 else None)
        if preset is None:
            raise SptError("the evaluations used different refusal presets; pick one with `preset`")
        get_preset(preset)
        tasks = {ev.task for ev in ev_rows.values()}
        score = None
        if len(tasks) == 1 and (task := next(iter(tasks))):
            from spt.data import get_task

            score = get_task(task, store=store).score
        options = {"preset": preset, "score": score}
    elif preset is not None:
        raise SptError(f"`preset` re-scores refusal evaluations; these are {kind.name} evaluations: drop it")
    else:
        preset = None
    if cluster is not None:
        options["cluster"] = cluster
    runs = side_a["runs"] + side_b["runs"]
    vals = {run: kind.unit_values(store, evs[run], **options) for run in runs}
    unit_sets = {run: frozenset().union(*(set(v) for v in uv.values.values())) for run, uv in vals.items()}
    if len(set(unit_sets.values())) > 1:
        raise SptError("A and B were evaluated on different prompts (their generations cover different items); "
                       "evaluate both with the same dataset, split and `limit`")
    clusters = vals[runs[0]].clusters
    single = len(side_a["runs"]) == 1 and len(side_b["runs"]) == 1
    out = Comparison(a=side_a, b=side_b, setting=used.pop(), setting_description="", preset=preset, kind=kind.name,
                     note=NO_SEED_VARIANCE if single else None)
    out.setting_description = settings[next(iter(evs.values()))][1]
    names: list[str] = []
    for uv in vals.values():
        names += [m for m in uv.values if m not in names]
    seeds_a, seeds_b = side_a["seeds"], side_b["seeds"]
    paired_seeds = (not single and len(seeds_a) >= 2 and None not in seeds_a and sorted(seeds_a) == sorted(seeds_b)
                    and len(set(seeds_a)) == len(seeds_a))
    for metric in names:
        rate = vals[runs[0]].kinds.get(metric) == "rate"
        units = sorted(set().union(*(vals[r].values.get(metric, {}).keys() for r in runs)))
        if not units:
            continue
        kept = [u for u in units if all(vals[r].values.get(metric, {}).get(u) is not None for r in runs)]
        dropped = len(units) - len(kept)
        seeds = dict(n_seeds_a=len(side_a["runs"]), n_seeds_b=len(side_b["runs"]))
        if not kept:
            out.differences.append(Difference(metric, 0, None, None, None, None, None, stats.PAIRED_BOOTSTRAP,
                                              n_dropped=dropped, **seeds))
            continue

        def unit_mean(side: dict[str, Any], u: str, metric: str = metric) -> float:
            return sum(vals[r].values[metric][u] for r in side["runs"]) / len(side["runs"])

        def run_mean(r: str, metric: str = metric, kept: list[str] = kept) -> float:
            return sum(vals[r].values[metric][u] for u in kept) / len(kept)

        xa = [unit_mean(side_a, u) for u in kept]
        xb = [unit_mean(side_b, u) for u in kept]
        cl = [clusters.get(u, u) for u in kept]
        row = Difference(metric, len(kept), sum(xa) / len(xa), sum(xb) / len(xb), None, None, None, "",
                         n_dropped=dropped, **seeds)
        if not single:
            by_seed_a = dict(zip(seeds_a, side_a["runs"], strict=True))
            order_a = ([by_seed_a[sd] for sd in seeds_b] if paired_seeds else side_a["runs"])
            pa, pb = [run_mean(r) for r in order_a], [run_mean(r) for r in side_b["runs"]]
            row.per_seed_a, row.per_seed_b = pa, pb
            a_fixed = len(pa) == 1 and seeds_a[0] is None
            if len(pb) == 1 and seeds_b[0] is None and len(pa) >= 2:  # B fixed: mirror the one-sample case
                d, lo, hi, p, df, method = seed_difference(pb, pa, paired=False, a_fixed=True)
                d, lo, hi = -d, (None if hi is None else -hi), (None if lo is None else -lo)
            else:
                d, lo, hi, p, df, method = seed_difference(pa, pb, paired=paired_seeds, a_fixed=a_fixed)
            row.diff, row.df = d, df
            if lo is not None and rate:  # a difference of two rates lies in [-1, 1]
                lo, hi = max(-1.0, lo), min(1.0, hi)
            if lo is not None:
                row.ci_low, row.ci_high, row.p_value, row.method = lo, hi, p, method
                out.differences.append(row)
                continue
            # every seed gives the same value: no spread over seeds to build on; the items' interval instead
            method = SEEDS_AGREE
        else:
            method = stats.PAIRED_BOOTSTRAP
        d, lo, hi = stats.paired_bootstrap_diff(xa, xb, cl, n_boot=n_boot)
        if rate and all(x == y for x, y in zip(xa, xb, strict=True)):
            # No item differs, so every resample gives 0: a zero-width interval would claim certainty. The
            # share of discordant items is 0/n, whose exact upper bound u bounds |B - A| from both sides.
            u = stats.clopper_pearson_interval(0, len(xa))[1]
            lo, hi, method = -u, u, "exact-discordant"
        row.diff, row.ci_low, row.ci_high, row.method = d, lo, hi, method
        if rate and single:
            row.mcnemar_b, row.mcnemar_c, row.p_value = stats.mcnemar_from_pairs([v > 0.5 for v in xa],
                                                                                 [v > 0.5 for v in xb])
        out.differences.append(row)
    return out
