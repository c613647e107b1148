"""Row builders shared by the frontier and runs tests: runs, evaluations, metrics inserted directly."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

from spt.store import content_id, new_id
from spt.store.models import Checkpoint, Evaluation, Judge, Metric, Run

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def ts(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat(timespec="microseconds")


def add_run(s, *, kind="finetune", defense=None, lam=None, poison=None, model="smollm2-135m", task="gsm8k",
            parent=None, tags=None, status="done", seed=0, config=None, minute=0) -> Run:
    run = Run(id=new_id(), kind=kind, defense=defense, lam=lam, poison_ratio=poison, model_ref=model,
              base_model=model, task=task, seed=seed, status=status, tags=tags, parent_run_id=parent,
              config=config or {"defense": defense, "lam": lam, "lr": 2e-4}, created_at=ts(minute))
    s.add(run)
    return run


def add_eval(s, run, *, minute=0, split="test", preset="spt", task=None) -> Evaluation:
    ev = Evaluation(id=new_id(), run_id=run.id, identity=content_id({"r": run.id, "m": minute, "t": task}),
                    split=split, task=task, refusal_preset=preset, status="done", created_at=ts(minute))
    s.add(ev)
    return ev


def add_metric(s, run, ev, name, value, *, category="all", judge=None, preset="spt", half=0.02, n=200,
               n_unscored=0) -> Metric:
    ident = {"e": ev.id if ev else run.id, "j": judge, "n": name, "c": category, "p": preset}
    lo = hi = None
    if value is not None and half is not None:
        lo, hi = value - half, value + half
    m = Metric(id=content_id(ident), run_id=run.id, evaluation_id=ev.id if ev else None, judge_id=judge,
               name=name, category=category, preset=preset, value=value, ci_low=lo, ci_high=hi, n=n,
               n_unscored=n_unscored)
    s.add(m)
    return m


def add_judge(s, name="openai:gpt-4o-mini/harmfulness") -> Judge:
    j = Judge(id=content_id({"name": name}), name=name, backend="openai", model="gpt-4o-mini")
    s.add(j)
    return j


def realistic_store(store) -> dict:
    """A base model, an aligned model and 12 fine-tuned runs over 3 defenses (none, anchor, proximal).

    task_loss rises and alignment_loss falls with λ; `none` varies a dose instead of λ (all runs share
    one poison ratio, 0.05, so they rank in one hypervolume table).
    Each fine-tuned run has two evaluations (HarmOR test, then the task), as evaluate writes them.
    """
    out: dict = {"runs": []}
    with store.write() as s:
        base = add_run(s, kind="base", task=None, minute=0)
        s.flush()
        align = add_run(s, kind="align", parent=base.id, defense=None, task=None, minute=1)
        s.flush()
        ev = add_eval(s, base, minute=2)
        for name, v in (("alignment_loss", 1.9), ("task_loss", 2.4), ("refusal_rate", 0.55),
                        ("over_refusal_rate", 0.08)):
            add_metric(s, base, ev, name, v)
        ev = add_eval(s, align, minute=3)
        for name, v in (("alignment_loss", 0.9), ("task_loss", 2.3), ("refusal_rate", 0.93),
                        ("over_refusal_rate", 0.22)):
            add_metric(s, align, ev, name, v)
        s.add(Checkpoint(id=new_id(), run_id=align.id, step=500, kind="adapter", path="/ckpt/align",
                         is_final=True))
        out["base"], out["align"] = base, align
        minute = 10
        specs = [("none", None, p) for p in (0.0, 0.02, 0.05, 0.1)]
        specs += [("anchor", lam, 0.05) for lam in (0.1, 0.3, 1.0, 3.0)]
        specs += [("proximal", lam, 0.05) for lam in (0.1, 0.3, 1.0, 3.0)]
        for defense, lam, poison in specs:
            run = add_run(s, defense=defense, lam=lam, poison=0.05, parent=align.id, minute=minute,
                          tags=["sweep1", defense], config={"defense": defense, "lam": lam, "dose": poison})
            s.flush()
            strength = 0.0 if lam is None else math.log10(lam) + 1.5  # 0.5 .. 2.0
            if defense == "none":
                task_loss, align_loss = 1.05 + 0.3 * poison, 2.1 + 6 * poison
                refusal, over = 0.52 - 2.5 * poison, 0.06 - 0.1 * poison
            elif defense == "anchor":
                task_loss, align_loss = 1.08 + 0.09 * strength ** 1.6, 1.95 - 0.42 * strength
                refusal, over = 0.4 + 0.27 * strength, 0.05 + 0.05 * strength
            else:
                task_loss, align_loss = 1.07 + 0.06 * strength ** 1.3, 2.0 - 0.38 * strength
                refusal, over = 0.35 + 0.25 * strength, 0.04 + 0.06 * strength
            ev1 = add_eval(s, run, minute=minute + 1)
            add_metric(s, run, ev1, "alignment_loss", round(align_loss, 4), half=0.04)
            add_metric(s, run, ev1, "refusal_rate", round(refusal, 4))
            add_metric(s, run, ev1, "over_refusal_rate", round(over, 4), half=0.015)
            ev2 = add_eval(s, run, minute=minute + 2, task="gsm8k")
            add_metric(s, run, ev2, "task_loss", round(task_loss, 4), half=0.015)
            add_metric(s, run, ev2, "task_accuracy", round(0.42 - 0.05 * strength, 4))
            out["runs"].append(run)
            minute += 5
    return out


def test_realistic_store_builds(store):
    data = realistic_store(store)
    assert len(data["runs"]) == 12
