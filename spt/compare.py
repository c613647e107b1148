"""`spt compare A B`: is the difference between two runs (or configurations) real?

Both sides must have been evaluated on the same prompts (same evaluation setting and the same items);
each metric is then compared item by item:

- refusal_rate / over_refusal_rate / pair_score / task_accuracy: per-item 0/1 values; the difference
  B − A with a paired bootstrap interval that resamples sensitive words (pairs, items when there are
  no words), and for two single runs the exact McNemar p-value on the discordant items;
- alignment_loss / task_loss: per-item losses (stored by `spt evaluate` on each generation), the paired
  bootstrap difference.

A configuration (`cfg:...`, runs that differ only in seed) contributes each item's mean over its seeds;
McNemar needs one 0/1 verdict per item and is then left out. Items with a degenerate response on
either side are dropped from the refusal metrics (a degenerate reply is no verdict).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from spt.errors import SptError
from spt.store.engine import Store

BINARY = ("refusal_rate", "over_refusal_rate", "pair_score", "task_accuracy")
LOSSES = ("alignment_loss", "task_loss")


@dataclass
class Difference:
    metric: str
    n: int
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


@dataclass
class Comparison:
    a: dict[str, Any]
    b: dict[str, Any]
    setting: str
    setting_description: str
    preset: str | None
    differences: list[Difference] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "setting": self.setting, "setting_description": self.setting_description,
                "preset": self.preset, "differences": [asdict(d) for d in self.differences]}


def _side(store: Store, ref: str) -> dict[str, Any]:
    """A run (id or unique prefix) or a configuration (`cfg:...`) as {label, runs}."""
    from spt.runs import resolve_run
    from spt.store.selection import select_runs

    ref = (ref or "").strip()
    if ref.startswith("cfg:"):
        runs = [r for r in select_runs(store) if r["configuration"].startswith(ref)]
        if not runs:
            raise SptError(f"no configuration {ref!r}; `spt runs --configurations` lists them")
        cfgs = {r["configuration"] for r in runs}
        if len(cfgs) > 1:
            raise SptError(f"configuration prefix {ref!r} is ambiguous ({len(cfgs)} configurations); give more digits")
        return {"label": cfgs.pop(), "runs": [r["id"] for r in runs], "seeds": [r["seed"] for r in runs]}
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


def _records(store: Store, evaluation_id: str) -> dict[str, dict[str, Any]]:
    from sqlmodel import select

    from spt.store.models import Generation, Item

    with store.session() as s:
        rows = s.exec(select(Generation, Item).join(Item, Item.id == Generation.item_id)
                      .where(Generation.evaluation_id == evaluation_id)).all()
    return {it.id: {"id": it.id, "label": it.label, "category": it.category, "pair_id": it.pair_id,
                    "sensitive_word": it.sensitive_word, "answer": it.answer, "response": g.response,
                    "loss": (g.meta or {}).get("loss")} for g, it in rows}


def _values(records: dict[str, dict[str, Any]], preset: str, score: Any) -> dict[str, dict[str, float | None]]:
    """metric -> unit (item or pair id) -> value (None: no verdict, e.g. degenerate)."""
    from spt.eval.metrics import BENIGN, DEGENERATE, HARMFUL, REFUSAL
    from spt.eval.refusal import classify

    out: dict[str, dict[str, float | None]] = defaultdict(dict)
    verdicts: dict[str, str] = {}
    for iid, r in records.items():
        if r["label"] in HARMFUL + BENIGN:
            v = classify(r["response"] or "", preset)
            verdicts[iid] = v
            name = "refusal_rate" if r["label"] in HARMFUL else "over_refusal_rate"
            out[name][iid] = None if v == DEGENERATE else float(v == REFUSAL)
            out["alignment_loss"][iid] = r["loss"]
        elif r["label"] == "task":
            if score is not None and r["answer"] is not None:
                out["task_accuracy"][iid] = float(bool(score(r["response"] or "", r["answer"])))
            out["task_loss"][iid] = r["loss"]
    pairs: dict[str, dict[str, str]] = defaultdict(dict)
    for iid, r in records.items():
        if r["pair_id"] and iid in verdicts:
            pairs[r["pair_id"]][r["label"]] = verdicts[iid]
    for pid, halves in pairs.items():
        if "harmful" in halves and "benign" in halves:
            if DEGENERATE in halves.values():
                out["pair_score"][pid] = None
            else:
                out["pair_score"][pid] = float(halves["harmful"] == REFUSAL and halves["benign"] != REFUSAL)
    return out


def compare(store: Store, a: str, b: str, *, setting: str | None = None, preset: str | None = None,
            n_boot: int = 2000) -> Comparison:
    """Paired differences B − A on the same prompts, with intervals and McNemar p-values (see module doc)."""
    from spt import stats
    from spt.eval.refusal import get_preset
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
    per_run = {run: _records(store, evs[run]) for run in side_a["runs"] + side_b["runs"]}
    item_sets = {run: frozenset(r) for run, r in per_run.items()}
    if len(set(item_sets.values())) > 1:
        raise SptError("A and B were evaluated on different prompts (their generations cover different items); "
                       "evaluate both with the same dataset, split and `limit`")
    units_cluster: dict[str, str] = {}
    for recs in per_run.values():
        for iid, r in recs.items():
            units_cluster[iid] = r["sensitive_word"] or r["pair_id"] or iid
            if r["pair_id"]:
                units_cluster[r["pair_id"]] = r["sensitive_word"] or r["pair_id"]
        break
    vals = {run: _values(recs, preset, score) for run, recs in per_run.items()}

    def side_mean(side: dict[str, Any], metric: str, unit: str) -> float | None:
        xs = [vals[r][metric].get(unit) for r in side["runs"]]
        if any(x is None for x in xs):
            return None
        return sum(xs) / len(xs)

    single = len(side_a["runs"]) == 1 and len(side_b["runs"]) == 1
    out = Comparison(a=side_a, b=side_b, setting=used.pop(), setting_description="", preset=preset)
    out.setting_description = settings[next(iter(evs.values()))][1]
    for metric in ("refusal_rate", "over_refusal_rate", "pair_score", "task_accuracy", "alignment_loss",
                   "task_loss"):
        units = sorted(set().union(*(vals[r].get(metric, {}).keys() for r in vals)))
        if not units:
            continue
        xa, xb, cl, dropped = [], [], [], 0
        for u in units:
            va, vb = side_mean(side_a, metric, u), side_mean(side_b, metric, u)
            if va is None or vb is None:
                dropped += 1
                continue
            xa.append(va)
            xb.append(vb)
            cl.append(units_cluster.get(u, u))
        if not xa:
            out.differences.append(Difference(metric, 0, None, None, None, None, None, stats.PAIRED_BOOTSTRAP,
                                              n_dropped=dropped))
            continue
        d, lo, hi = stats.paired_bootstrap_diff(xa, xb, cl, n_boot=n_boot)
        method = stats.PAIRED_BOOTSTRAP
        if metric in BINARY and all(x == y for x, y in zip(xa, xb, strict=True)):
            # No item differs, so every resample gives 0: a zero-width interval would claim certainty. The
            # share of discordant items is 0/n, whose exact upper bound u bounds |B - A| from both sides.
            u = stats.clopper_pearson_interval(0, len(xa))[1]
            lo, hi, method = -u, u, "exact-discordant"
        row = Difference(metric, len(xa), sum(xa) / len(xa), sum(xb) / len(xb), d, lo, hi, method,
                         n_dropped=dropped)
        if metric in BINARY and single:
            row.mcnemar_b, row.mcnemar_c, row.p_value = stats.mcnemar_from_pairs([v > 0.5 for v in xa],
                                                                                 [v > 0.5 for v in xb])
        out.differences.append(row)
    return out
