"""Default-model training check: align lowers alignment loss, poison raises it, and every defense at
its defaults against `none` after the same poisoned training.

    python bench/train_quality.py [--model smollm2-135m] [--align-steps 12] [--task-steps 10] [--db PATH]
    python bench/train_quality.py --defenses none,anchor,lisa --eval-limit 0      # losses only

Runs on the given model (default: the packaged SmolLM2-135M-Instruct) in a temporary store unless --db
is given: (1) `--stage align` (LoRA) on HarmOR train, (2) task training on builtin:arithmetic with
poison from the aligned run, once per task-stage defense at its defaults (`--defenses`, default every
defense of the registry), plus anchor at the `--lams` values. An alignment-stage defense (Vaccine,
Booster) gets its own align run with that defense, followed by the same poisoned task run with `none`.
Alignment loss = mean completion cross-entropy on a fixed batch of HarmOR *test* pairs (both halves),
evaluated by the training loop at step 0 and at the end (after SafeLoRA's projection for safelora).
With `--eval-limit N > 0` every task run is also evaluated (`spt evaluate`, greedy, N HarmOR test
items, keyword refusal judge): refusal rate on harmful prompts and over-refusal on benign ones, with n
and a Wilson interval. Prints JSON; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def log(*a: object) -> None:
    print(*a, file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--align-steps", type=int, default=12)
    ap.add_argument("--task-steps", type=int, default=10)
    ap.add_argument("--poison", type=float, default=0.3)
    ap.add_argument("--lams", default="0.3,0.7")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--eval-pairs", type=int, default=8)
    ap.add_argument("--db", default=None)
    ap.add_argument("--defenses", default="all", help="comma-separated, or all (every registered defense)")
    ap.add_argument("--eval-limit", type=int, default=0, help="HarmOR test items evaluated per run (0: none)")
    ap.add_argument("--eval-tokens", type=int, default=32, help="max new tokens per evaluated reply")
    args = ap.parse_args()

    from sqlmodel import select

    from spt.store import open_store
    from spt.store.models import TrainLog
    from spt.train import FinetuneConfig, finetune

    db = Path(args.db) if args.db else Path(tempfile.mkdtemp(prefix="spt-bench-")) / "bench.db"
    os.environ.setdefault("SPT_HOME", str(db.parent))
    store = open_store(db)
    common = dict(batch_size=args.batch_size, max_length=args.max_length, lr=args.lr, save_every=0,
                  log_every=10_000, align_eval_pairs=args.eval_pairs, seed=0)

    def curve(run_id: str) -> dict[str, dict[int, float]]:
        with store.session() as s:
            rows = s.exec(select(TrainLog).where(TrainLog.run_id == run_id)).all()
        out: dict[str, dict[int, float]] = {}
        for r in rows:
            out.setdefault(r.name, {})[r.step] = r.value
        return out

    def ends(run_id: str) -> dict[str, float]:
        c = curve(run_id)
        res = {}
        post = [n for n in c if n.startswith("alignment_loss_post_")]  # after SafeLoRA's projection
        suffix = post[0][len("alignment_loss"):] if post else ""
        for k in ("alignment_loss", "alignment_loss_harmful", "alignment_loss_benign"):
            steps = sorted(c.get(k, {}))
            res[f"{k}_start"] = c[k][steps[0]]
            end = c.get(k + suffix) or c[k]
            res[f"{k}_end"] = end[max(end)]
        if suffix:
            res["alignment_loss_end_before_post_train"] = \
                c["alignment_loss"][max(c["alignment_loss"])]
        tl = c.get("task_loss", {})
        res["task_loss_end"] = tl[max(tl)] if tl else None
        tps = c.get("tokens_per_s", {})
        res["tokens_per_s"] = tps[max(tps)] if tps else None
        return res

    from spt.train.defenses import all_defenses

    registry = all_defenses()
    names = list(registry) if args.defenses == "all" else [d.strip() for d in args.defenses.split(",") if d.strip()]
    names = ["none"] + [d for d in names if d != "none"]

    def refusals(run_id: str) -> dict:
        if args.eval_limit <= 0:
            return {}
        from spt.eval import EvaluateConfig, evaluate

        ev = evaluate(store, run_id, EvaluateConfig(limit=args.eval_limit, max_new_tokens=args.eval_tokens,
                                                    task="none"))
        out = {}
        for m in ev.metrics:  # the overall rows: value, n, n_unscored and the interval
            if m.get("category") == "all" and m["name"] in ("refusal_rate", "over_refusal_rate", "alignment_loss"):
                out[f"eval_{m['name']}"] = {k: m.get(k) for k in ("value", "n", "n_unscored", "ci_low", "ci_high")}
        return out

    t0 = time.perf_counter()
    out: dict = {"model": args.model, "settings": vars(args)}
    log(f"align ({args.align_steps} steps) ...")
    align = finetune(store, FinetuneConfig(model=args.model, stage="align", max_steps=args.align_steps, **common))
    a = ends(align.run_id)
    out["align"] = {"run_id": align.run_id, **a,
                    "lowered": a["alignment_loss_end"] < a["alignment_loss_start"]}
    out["task"] = {}
    runs = [(d, None) for d in names] + [("anchor", float(x)) for x in args.lams.split(",")
                                           if x.strip() and "anchor" in names]
    for defense, lam in runs:
        parent = align.run_id
        if "task" not in registry[defense].stages:  # an alignment-stage defense: its own align run first
            log(f"align with {defense} ...")
            parent = finetune(store, FinetuneConfig(model=args.model, stage="align", defense=defense,
                                                    max_steps=args.align_steps, **common)).run_id
        task_defense = defense if "task" in registry[defense].stages else "none"
        key = defense if lam is None else f"anchor_lam{lam:g}"
        log(f"task {key} ({args.task_steps} steps, poison {args.poison}) ...")
        t1 = time.perf_counter()
        r = finetune(store, FinetuneConfig(from_run=parent, task="builtin:arithmetic", poison=args.poison,
                                           defense=task_defense, lam=lam, max_steps=args.task_steps, **common))
        e = ends(r.run_id)
        post = r.post_train or {}
        row = {"run_id": r.run_id, **e, "rise": e["alignment_loss_end"] - e["alignment_loss_start"],
               "rise_harmful": e["alignment_loss_harmful_end"] - e["alignment_loss_harmful_start"],
               "train_s": round(time.perf_counter() - t1, 1)}
        if post:
            row["record"] = {k: v for k, v in post.items() if k != "layers"}
        row.update(refusals(r.run_id))
        out["task"][key] = row
        log(f"  {key}: alignment loss {e['alignment_loss_start']:.3f} -> {e['alignment_loss_end']:.3f}")
    rises = [out["task"][k]["rise"] for k in out["task"] if k.startswith("anchor_lam")]
    base = out["task"]["none"]["rise"]
    out["checks"] = {
        "align_lowers_alignment_loss": out["align"]["lowered"],
        "poison_raises_alignment_loss": base > 0,
        "anchor_larger_lam_raises_less": all(x > y for x, y in zip(rises, rises[1:], strict=False)),
        "rise_below_none": {k: v["rise"] < base for k, v in out["task"].items() if k != "none"},
    }
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    out["db"] = str(db)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
