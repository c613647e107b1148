"""Each alignment variant on the default model: its refusal and over-refusal on HarmOR test, then after a
10%-poisoned task run with no task-stage defense.

    python bench/align_variants.py [--variants none,vaccine,booster,dpo] [--align-steps 20] [--db PATH]

Variants: SFT alignment with no defense, Vaccine, Booster (all `--stage align`, LoRA) and DPO (`--method dpo`).
Each aligned run is evaluated (greedy, `--eval-limit` HarmOR test items, keyword preset spt), then fine-tuned
on builtin:arithmetic with `--poison` harmful-compliant examples (defense none) and evaluated again. Prints
JSON with every rate's n, interval and method; progress on stderr. Sizes match `spt demo` (full).
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


def rates(res) -> dict:
    out = {}
    for m in res.metrics:
        if m["category"] == "all" and m["name"] in ("refusal_rate", "over_refusal_rate"):
            out[m["name"]] = {k: m[k] for k in ("value", "ci_low", "ci_high", "n", "n_unscored", "ci_method")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--variants", default="none,vaccine,booster,dpo")
    ap.add_argument("--align-steps", type=int, default=20)
    ap.add_argument("--task-steps", type=int, default=12)
    ap.add_argument("--poison", type=float, default=0.1)
    ap.add_argument("--eval-limit", type=int, default=60)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--db", default=None)
    args = ap.parse_args()

    from spt.eval import EvaluateConfig, evaluate
    from spt.store import open_store
    from spt.train import FinetuneConfig, finetune

    db = Path(args.db) if args.db else Path(tempfile.mkdtemp(prefix="spt-bench-align-")) / "bench.db"
    os.environ.setdefault("SPT_HOME", str(db.parent))
    store = open_store(db)
    common = dict(batch_size=8, max_length=128, lr=1e-3, lora_r=8, save_every=0, log_every=100, align_eval_pairs=8,
                  seed=0)
    ev_cfg = dict(limit=args.eval_limit, max_new_tokens=args.max_new_tokens)
    out: dict = {"benchmark": "align_variants", "model": args.model, "params": vars(args), "variants": {}}
    for v in args.variants.split(","):
        t0 = time.time()
        method = "dpo" if v == "dpo" else "sft"
        defense = "none" if v in ("none", "dpo") else v
        log(f"[{v}] align ({defense}, {method}), {args.align_steps} steps")
        al = finetune(store, FinetuneConfig(model=args.model, stage="align", defense=defense, method=method,
                                            max_steps=args.align_steps, **common))
        t_align = time.time() - t0
        log(f"[{v}] evaluate aligned run {al.run_id[:13]}")
        e1 = evaluate(store, al.run_id, EvaluateConfig(task="none", **ev_cfg))
        log(f"[{v}] poisoned task run ({args.poison:g}), {args.task_steps} steps")
        tk = finetune(store, FinetuneConfig(from_run=al.run_id, stage="task", task="builtin:arithmetic",
                                            poison=args.poison, defense="none", max_steps=args.task_steps, **common))
        e2 = evaluate(store, tk.run_id, EvaluateConfig(task="none", **ev_cfg))
        out["variants"][v] = {"align_run": al.run_id, "task_run": tk.run_id, "aligned": rates(e1),
                              "after_poisoned_task": rates(e2), "align_seconds": round(t_align, 1),
                              "seconds": round(time.time() - t0, 1)}
        log(f"[{v}] done in {time.time() - t0:.0f} s: {json.dumps(out['variants'][v])}")
    out["store"] = str(db)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
