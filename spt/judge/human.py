"""Agreement with human verdicts: every judge and every keyword preset against the `human` judge.

Human verdicts enter the store as judgments of a judge with backend `human` (`spt evaluate
--responses FILE --verdict-col COL`, see `spt.eval.external`). `human_agreement` compares, on the same
generations:

- every other judge with current judgments there (keyword, OpenAI-compatible, local), through the
  common binary axis `spt.judge.rubrics.refused` (full and partial refusals count as refused); an
  unscored judgment is counted in `n_unscored` and left out;
- every keyword preset (`spt.eval.refusal.PRESETS`), recomputed on the stored responses with
  `spt.eval.refusal.classify` (nothing is regenerated); a `degenerate` verdict is neither a refusal
  nor an answer: it is counted in `n_degenerate` and left out, never read as compliance.

For each (human judge, candidate) and for each item category plus "all":
- `accuracy`: share of decided generations where the candidate's refused/not agrees with the human's,
  with an exact Clopper-Pearson interval (`spt.stats.rate_interval`);
- `kappa`: Cohen's kappa on the same binary verdicts; None when undefined (both raters constant on one
  value). Its interval is the envelope of a percentile bootstrap that resamples sensitive words when
  the items have them (else pairs, else items; `cluster_of`), since prompts sharing a word are not
  independent, and of the kappa values the exact accuracy interval implies at the observed marginals
  (so perfect agreement on 28 items is 1 [0.75, 1], not a zero-width [1, 1]), clipped to [-1, 1];
- `confusion`: counts by human class (full_refusal, partial_refusal, full_compliance) and candidate
  verdict (refusal, compliance, degenerate, unscored), and the binary cells `tp` (both refused),
  `fn` (human refused, candidate answered), `fp` (human: answered; candidate: refused), `tn`.

Each generation counts once per (run, item): an external file imported under two presets makes two
evaluations of the same run with the same responses, and those are not two observations.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlmodel import select

from spt.errors import SptError
from spt.eval.metrics import cluster_of
from spt.judge.rubrics import refused
from spt.store.models import Evaluation, Generation, Item, Judge, Judgment

HUMAN_CLASSES = ("full_refusal", "partial_refusal", "full_compliance")
PREDICTIONS = ("refusal", "compliance", "degenerate", "unscored")
N_BOOT = 2000


@dataclass
class _Gen:
    id: str
    evaluation_id: str
    run_id: str
    item_id: str
    response: str
    category: str
    cluster: str
    label: str


def human_evaluations(store) -> list[str]:
    """Evaluations with at least one current judgment of a human judge, oldest first."""
    with store.session() as s:
        q = (select(Generation.evaluation_id).join(Judgment, Judgment.generation_id == Generation.id)
             .join(Judge, Judge.id == Judgment.judge_id)
             .where(Judge.backend == "human", Judgment.superseded_by.is_(None)).distinct())
        ids = set(s.exec(q).all())
        if not ids:
            return []
        evs = s.exec(select(Evaluation.id).where(Evaluation.id.in_(list(ids))).order_by(Evaluation.created_at,
                                                                                         Evaluation.id)).all()
    return list(evs)


def kappa_from_cells(tp: float, fn: float, fp: float, tn: float) -> float | None:
    """Cohen's kappa of two binary raters from their 2x2 counts; None when chance agreement is 1."""
    n = tp + fn + fp + tn
    if n <= 0:
        return None
    po = (tp + tn) / n
    pe = ((tp + fn) * (tp + fp) + (fp + tn) * (fn + tn)) / (n * n)
    if pe >= 1.0 - 1e-12:
        return None
    return (po - pe) / (1.0 - pe)


def kappa_interval(human: Sequence[bool], other: Sequence[bool], clusters: Sequence[Any] | None = None, *,
                   n_boot: int = N_BOOT, alpha: float = 0.05, seed: int = 0) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of Cohen's kappa, resampling clusters (each item its own when None).

    Replicates where kappa is undefined (a resample with one rater constant) are dropped; None when
    fewer than half the replicates are defined or there is at most one cluster.
    """
    n = len(human)
    if n == 0 or len(other) != n:
        return None, None
    cells = np.zeros((n, 4))
    cells[np.arange(n), 2 * (1 - np.asarray(human, dtype=int)) + (1 - np.asarray(other, dtype=int))] = 1.0
    if clusters is None:
        codes = np.arange(n)
    else:
        seen: dict[Any, int] = {}
        codes = np.fromiter((seen.setdefault(c, len(seen)) for c in clusters), dtype=np.int64, count=n)
    g = int(codes.max()) + 1
    if g < 2:
        return None, None
    per_cluster = np.zeros((g, 4))
    np.add.at(per_cluster, codes, cells)
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    chunk = max(1, 2_000_000 // g)
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        w = rng.multinomial(g, np.full(g, 1.0 / g), size=m).astype(np.float64)
        c = w @ per_cluster  # (m, 4): tp, fn, fp, tn
        tot = c.sum(axis=1)
        po = (c[:, 0] + c[:, 3]) / tot
        pe = ((c[:, 0] + c[:, 1]) * (c[:, 0] + c[:, 2]) + (c[:, 2] + c[:, 3]) * (c[:, 1] + c[:, 3])) / (tot * tot)
        with np.errstate(divide="ignore", invalid="ignore"):
            k = np.where(pe < 1.0 - 1e-12, (po - pe) / (1.0 - pe), np.nan)
        out[start:start + m] = k
    ok = out[np.isfinite(out)]
    if len(ok) < n_boot / 2:
        return None, None
    lo, hi = np.quantile(ok, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


def agreement_stats(records: list[tuple[str, str, Any]], *, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """Accuracy, kappa (with intervals) and the confusion matrix of (human class, prediction, cluster) records."""
    from spt.stats import CLOPPER_PEARSON, rate_interval

    confusion = {h: dict.fromkeys(PREDICTIONS, 0) for h in HUMAN_CLASSES}
    hs: list[bool] = []
    ps: list[bool] = []
    cl: list[Any] = []
    for h, p, c in records:
        confusion[h][p] += 1
        if p in ("refusal", "compliance"):
            hs.append(h != "full_compliance")
            ps.append(p == "refusal")
            cl.append(c)
    n = len(hs)
    tp = sum(1 for a, b in zip(hs, ps, strict=True) if a and b)
    fn = sum(1 for a, b in zip(hs, ps, strict=True) if a and not b)
    fp = sum(1 for a, b in zip(hs, ps, strict=True) if not a and b)
    tn = n - tp - fn - fp
    out: dict[str, Any] = {
        "n": n, "n_degenerate": sum(confusion[h]["degenerate"] for h in HUMAN_CLASSES),
        "n_unscored": sum(confusion[h]["unscored"] for h in HUMAN_CLASSES),
        "accuracy": None, "accuracy_ci": [None, None], "accuracy_ci_method": None,
        "kappa": None, "kappa_ci": [None, None], "kappa_ci_method": None,
        "tp": tp, "fn": fn, "fp": fp, "tn": tn, "confusion": confusion,
    }
    if n:
        k = tp + tn
        lo, hi = rate_interval(k, n)
        out.update({"accuracy": k / n, "accuracy_ci": [lo, hi], "accuracy_ci_method": CLOPPER_PEARSON})
        kappa = kappa_from_cells(tp, fn, fp, tn)
        out["kappa"] = kappa
        if kappa is not None:
            clustered = len(set(cl)) < n
            blo, bhi = kappa_interval(hs, ps, cl, n_boot=n_boot, seed=seed)
            # Envelope with the kappa the exact accuracy bounds imply at the observed marginals: without it a
            # judge that agrees on every item gets the zero-width interval [1, 1] from the bootstrap.
            pe = ((tp + fn) * (tp + fp) + (fp + tn) * (fn + tn)) / (n * n)
            elo, ehi = ((a - pe) / (1.0 - pe) for a in out["accuracy_ci"])
            lo = max(-1.0, min(elo, blo) if blo is not None else elo)
            hi = min(1.0, max(ehi, bhi) if bhi is not None else ehi)
            method = ("cluster-bootstrap" if clustered else "bootstrap") + "+exact-envelope" if blo is not None \
                else "exact-accuracy"
            out.update({"kappa_ci": [min(lo, kappa), max(hi, kappa)], "kappa_ci_method": method})
    return out


def _load(store, evaluation_ids: list[str]) -> tuple[list[_Gen], dict[str, dict[str, Judgment]], dict[str, Judge]]:
    with store.session() as s:
        rows = s.exec(
            select(Generation.id, Generation.evaluation_id, Evaluation.run_id, Generation.item_id, Generation.response,
                   Item.category, Item.sensitive_word, Item.pair_id, Item.label)
            .join(Item, Item.id == Generation.item_id).join(Evaluation, Evaluation.id == Generation.evaluation_id)
            .where(Generation.evaluation_id.in_(evaluation_ids))
            .order_by(Evaluation.created_at, Generation.evaluation_id, Generation.id)).all()
        judgments = s.exec(select(Judgment).join(Generation, Generation.id == Judgment.generation_id)
                           .where(Generation.evaluation_id.in_(evaluation_ids),
                                  Judgment.superseded_by.is_(None))).all()
        jids = sorted({j.judge_id for j in judgments})
        judges = {j.id: j for j in s.exec(select(Judge).where(Judge.id.in_(jids))).all()}
    gens = []
    seen: set[tuple[str, str]] = set()
    for gid, eid, rid, iid, resp, cat, word, pair, label in rows:
        if (rid, iid) in seen:
            continue
        seen.add((rid, iid))
        gens.append(_Gen(gid, eid, rid, iid, resp or "", cat or "uncategorized",
                         cluster_of({"sensitive_word": word, "pair_id": pair, "id": iid}), label))
    by_judge: dict[str, dict[str, Judgment]] = defaultdict(dict)
    for j in judgments:
        by_judge[j.judge_id][j.generation_id] = j
    return gens, by_judge, judges


def _rows_for(records: list[tuple[str, str, str, Any]], n_boot: int, seed: int) -> list[dict[str, Any]]:
    """Stats for "all" and each category of (category, human class, prediction, cluster) records."""
    cats = sorted({r[0] for r in records})
    out = [{"category": "all", **agreement_stats([r[1:] for r in records], n_boot=n_boot, seed=seed)}]
    for c in cats:
        out.append({"category": c, **agreement_stats([r[1:] for r in records if r[0] == c], n_boot=n_boot,
                                                     seed=seed)})
    return out


def human_agreement(store, evaluation_ids: list[str] | None = None, *, judge_ids: list[str] | None = None,
                    presets: list[str] | None = None, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """Agreement of every judge and keyword preset with each human judge on `evaluation_ids` (default:
    every evaluation with human verdicts). See the module doc for the numbers.

    Returns {evaluations, human_judges: [{id, name, n_verdicts}], rows: [{human_id, human_name, candidate,
    kind: judge|preset, judge_id, preset, preset_version, n_unjudged, categories: [{category, n, accuracy,
    accuracy_ci, kappa, kappa_ci, tp, fn, fp, tn, n_degenerate, n_unscored, confusion}]}]}.
    """
    from spt.eval.refusal import PRESETS, get_preset

    if evaluation_ids is None:
        evaluation_ids = human_evaluations(store)
        if not evaluation_ids:
            raise SptError("no evaluation has human verdicts; import some with `spt evaluate --responses FILE "
                           "--model-name NAME --verdict-col COL`")
    preset_names = list(PRESETS) if presets is None else presets
    for p in preset_names:
        get_preset(p)
    gens, by_judge, judges = _load(store, list(evaluation_ids))
    humans = [jid for jid, j in judges.items() if j.backend == "human"]
    if not humans:
        raise SptError(f"none of the {len(evaluation_ids)} evaluation(s) has human verdicts; import them with "
                       "`spt evaluate --responses FILE --model-name NAME --verdict-col COL`")
    humans.sort(key=lambda jid: (judges[jid].name, jid))
    candidates = [jid for jid in judges if jid not in humans and (judge_ids is None or jid in judge_ids)]
    candidates.sort(key=lambda jid: (judges[jid].name, jid))
    if judge_ids:
        unknown = [jid for jid in judge_ids if jid not in judges]
        if unknown:
            raise SptError(f"judge {unknown[0]} has no judgments on these evaluations; run `spt judge` with it first")
    keyword_cache: dict[str, dict[str, str]] = {}
    result_rows: list[dict[str, Any]] = []
    human_info = []
    for hid in humans:
        hj = judges[hid]
        verdicts = {g.id: by_judge[hid][g.id] for g in gens
                    if g.id in by_judge[hid] and by_judge[hid][g.id].status == "scored"
                    and by_judge[hid][g.id].label in HUMAN_CLASSES}
        labelled = [g for g in gens if g.id in verdicts]
        human_info.append({"id": hid, "name": hj.name, "n_verdicts": len(labelled)})
        if not labelled:
            continue
        for p in preset_names:
            if p not in keyword_cache:
                from spt.eval.refusal import classify

                keyword_cache[p] = {g.id: classify(g.response, p) for g in gens}
            recs = [(g.category, verdicts[g.id].label, keyword_cache[p][g.id], g.cluster) for g in labelled]
            result_rows.append({"human_id": hid, "human_name": hj.name, "candidate": f"preset:{p}", "kind": "preset",
                                "judge_id": None, "preset": p, "preset_version": get_preset(p).version,
                                "n_unjudged": 0, "categories": _rows_for(recs, n_boot, seed)})
        for jid in candidates:
            j = judges[jid]
            recs = []
            n_unjudged = 0
            for g in labelled:
                o = by_judge[jid].get(g.id)
                if o is None:
                    n_unjudged += 1
                    continue
                if o.status != "scored":
                    pred = "degenerate" if o.reason == "degenerate" else "unscored"
                else:
                    r = refused(j.rubric or "refusal", o.score, o.label)
                    pred = "unscored" if r is None else ("refusal" if r else "compliance")
                recs.append((g.category, verdicts[g.id].label, pred, g.cluster))
            if not recs:
                continue
            result_rows.append({"human_id": hid, "human_name": hj.name, "candidate": j.name, "kind": "judge",
                                "judge_id": jid, "preset": (j.config or {}).get("preset"), "preset_version": None,
                                "n_unjudged": n_unjudged, "categories": _rows_for(recs, n_boot, seed)})
    return {"evaluations": list(evaluation_ids), "human_judges": human_info, "n_boot": n_boot, "rows": result_rows}
