"""The Safety Tax on the embedded model, on CPU: reasoning SFT, then safety alignment for 1..E epochs.

For each seed it trains (all through spt, into one store, resumable):

1. the **reasoning model**: `--stage reason` on `builtin:arithmetic-think` (worked thoughts, then the answer);
2. from it, **safety alignment** with `--alignment-data` (direct-refusal or cot-refusal) for each epoch count;

and evaluates the reasoning model and every aligned one on HarmOR `test` (refusal, attack success) and the
reasoning task's `test` split (accuracy on the answer: `--reasoning think`). It prints one JSON object: per
model the metrics with n and intervals, the tax per epoch count (Δ accuracy and Δ attack success against
the reasoning model, from `spt compare`, seed-aware when several seeds ran), timings, and writes a plot of
accuracy against attack success over epochs (`--plot`).

    python bench/safety_tax.py --db /tmp/tax.db --seeds 0 --epochs 1,2 --plot tax.png

What it shows and what it does not: see docs/safety-tax.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, log, machine, overall_metrics  # noqa: E402

KEYS = ("refusal_rate", "asr", "over_refusal_rate", "task_accuracy", "unfinished_thought_rate")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--epochs", default="1,2", help="alignment epoch counts (comma separated)")
    ap.add_argument("--alignment-data", default="direct-refusal")
    ap.add_argument("--reason-steps", type=int, default=40)
    ap.add_argument("--reason-lr", type=float, default=1e-3)
    ap.add_argument("--align-lr", type=float, default=5e-4)
    ap.add_argument("--align-subset", type=int, default=160,
                    help="alignment examples per epoch (a seeded share of the set, to fit a CPU budget)")
    ap.add_argument("--limit", type=int, default=60, help="HarmOR test and task test items evaluated")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--plot", default=None)
    args = ap.parse_args(argv)

    from spt.compare import compare
    from spt.eval.evaluate import EvaluateConfig, evaluate
    from spt.store import open_store
    from spt.train import FinetuneConfig, finetune

    store = open_store(args.db)
    seeds = [int(s) for s in args.seeds.split(",")]
    epochs = [int(e) for e in args.epochs.split(",")]
    ecfg = EvaluateConfig(limit=args.limit, task="builtin:arithmetic-think", reasoning="think",
                          max_new_tokens=args.max_new_tokens)
    out: dict[str, Any] = {"settings": vars(args), "machine": machine(), "models": {}, "tax": {}, "seconds": {}}
    runs: dict[str, list[str]] = {}
    t_all = time.perf_counter()
    for seed in seeds:
        t0 = time.perf_counter()
        reason = finetune(store, FinetuneConfig(model=args.model, stage="reason", max_steps=args.reason_steps,
                                                lr=args.reason_lr, seed=seed, lora_targets=["q_proj", "v_proj"]))
        out["seconds"][f"reason s{seed}"] = round(time.perf_counter() - t0, 1)
        runs.setdefault("reason", []).append(reason.run_id)
        t0 = time.perf_counter()
        res = evaluate(store, reason.run_id, ecfg)
        out["seconds"][f"evaluate reason s{seed}"] = round(time.perf_counter() - t0, 1)
        out["models"][f"reason s{seed}"] = overall_metrics(res, KEYS)
        log("reason", seed, out["models"][f"reason s{seed}"])
        steps_per_epoch = max(1, args.align_subset // 8)
        for e in epochs:
            t0 = time.perf_counter()
            al = finetune(store, FinetuneConfig(from_run=reason.run_id, stage="align",
                                                alignment_data=args.alignment_data, max_steps=e * steps_per_epoch,
                                                lr=args.align_lr, seed=seed, lora_targets=["q_proj", "v_proj"]))
            out["seconds"][f"align e{e} s{seed}"] = round(time.perf_counter() - t0, 1)
            runs.setdefault(f"align e{e}", []).append(al.run_id)
            t0 = time.perf_counter()
            res = evaluate(store, al.run_id, ecfg)
            out["seconds"][f"evaluate align e{e} s{seed}"] = round(time.perf_counter() - t0, 1)
            out["models"][f"align e{e} s{seed}"] = overall_metrics(res, KEYS)
            log("align", e, seed, out["models"][f"align e{e} s{seed}"])
    for e in epochs:
        a = runs["reason"][0] if len(seeds) == 1 else None
        b = runs[f"align e{e}"][0] if len(seeds) == 1 else None
        if a is None:  # several seeds: compare the configurations (seed-aware)
            from spt.store.selection import select_runs

            cfg = {r["id"]: r["configuration"] for r in select_runs(store)}
            a, b = cfg[runs["reason"][0]], cfg[runs[f"align e{e}"][0]]
        cmp = compare(store, a, b)
        out["tax"][f"e{e}"] = {d.metric: {"diff": d.diff, "ci": [d.ci_low, d.ci_high], "method": d.method,
                                          "n": d.n, "p": d.p_value}
                               for d in cmp.differences if d.metric in ("task_accuracy", "refusal_rate")}
    out["seconds"]["total"] = round(time.perf_counter() - t_all, 1)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 4))
        pts = [("reason", 0)] + [(f"align e{e}", e) for e in epochs]
        xs, ys = [], []
        for name, e in pts:
            vals = [out["models"][f"{name} s{s}"] for s in seeds]
            xv = [v["asr"]["value"] for v in vals if v.get("asr") and v["asr"]["value"] is not None]
            yv = [v["task_accuracy"]["value"] for v in vals
                  if v.get("task_accuracy") and v["task_accuracy"]["value"] is not None]
            if not xv or not yv:  # nothing scoreable (every reply degenerate): no point to draw
                continue
            x, y = sum(xv) / len(xv), sum(yv) / len(yv)
            xs.append(x)
            ys.append(y)
            ax.annotate(f"{e} ep" if e else "reasoning model", (x, y), textcoords="offset points", xytext=(4, 4))
        ax.plot(xs, ys, "o-")
        ax.set_xlabel("attack success on HarmOR test (lower is safer)")
        ax.set_ylabel("reasoning accuracy (builtin:arithmetic-think test)")
        ax.set_title(f"Safety tax, {args.model}, {args.alignment_data}, seeds {args.seeds}", fontsize=9)
        fig.tight_layout()
        fig.savefig(args.plot)
        out["plot"] = args.plot
    emit(out)
    return out


if __name__ == "__main__":
    main()
