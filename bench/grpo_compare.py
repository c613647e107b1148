"""Reasoned refusal on the embedded model, on CPU: base, SFT, SFT + GRPO and GRPO as seeded configurations.

The comparison of the Reasoned Refusal project (GRPO against SFT for safety), run through spt into one store
(resumable: a second run with the same settings trains and generates nothing):

1. **base**: the model itself;
2. **SFT**: `--stage align --safety-data builtin:harmor-reasoned` (HarmOR's train twins with reasoned replies);
3. **SFT + GRPO**: GRPO (`--method grpo`) from the SFT run;
4. **GRPO**: GRPO from the base model;

each fine-tuned one per seed. Every model is evaluated the same way: HarmOR `test` (refusal of harmful
prompts, over-refusal of their benign twins, the pair score) and a utility task (`builtin:sentiment` test
by default), with GRPO's system prompt (`--system-prompt grpo`, the condition GRPO trains in) and the answer
read from the tags (`--reasoning tags:PAUSE,SOLUTION`). The comparisons against the base model and SFT come
from `spt compare` (seed-aware: seed variance is estimated across the configurations' seeds), and the
frontier over refusal and utility from `spt frontier`. It prints one JSON object.

    python bench/grpo_compare.py --db /tmp/grpo.db --seeds 0,1

What it shows and what it does not: docs/grpo.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, log, machine, overall_metrics  # noqa: E402

KEYS = ("refusal_rate", "over_refusal_rate", "pair_score", "task_accuracy", "unfinished_thought_rate")
COMPARED = ("refusal_rate", "over_refusal_rate", "task_accuracy")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--sft-steps", type=int, default=40)
    ap.add_argument("--sft-lr", type=float, default=5e-4)
    ap.add_argument("--grpo-steps", type=int, default=30)
    ap.add_argument("--grpo-lr", type=float, default=5e-5)
    ap.add_argument("--grpo-batch", type=int, default=8, help="completions per step (prompts x generations)")
    ap.add_argument("--grpo-generations", type=int, default=4)
    ap.add_argument("--grpo-max-completion-length", type=int, default=64)
    ap.add_argument("--reward", default="format,refusal")
    ap.add_argument("--task", default="builtin:sentiment", help="the utility task evaluated beside HarmOR")
    ap.add_argument("--limit", type=int, default=60, help="HarmOR test and task test items evaluated")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    args = ap.parse_args(argv)

    from spt.compare import compare
    from spt.eval.evaluate import EvaluateConfig, evaluate
    from spt.frontier import compute_frontier
    from spt.store import open_store
    from spt.store.selection import select_runs
    from spt.train import FinetuneConfig, finetune

    store = open_store(args.db)
    seeds = [int(s) for s in args.seeds.split(",")]
    lora = {"lora_targets": ["q_proj", "v_proj"]}
    grpo = {"stage": "align", "method": "grpo", "max_steps": args.grpo_steps, "lr": args.grpo_lr,
            "batch_size": args.grpo_batch, "grpo_num_generations": args.grpo_generations,
            "grpo_max_completion_length": args.grpo_max_completion_length, "reward": args.reward,
            "log_every": 5, **lora}
    ecfg = EvaluateConfig(limit=args.limit, task=args.task, reasoning="tags:PAUSE,SOLUTION", system_prompt="grpo",
                          max_new_tokens=args.max_new_tokens)
    out: dict[str, Any] = {"settings": vars(args), "machine": machine(), "models": {}, "vs": {}, "seconds": {}}
    runs: dict[str, list[str]] = {}
    t_all = time.perf_counter()

    def timed(label: str, fn: Any, *a: Any) -> Any:
        t0 = time.perf_counter()
        res = fn(store, *a)
        out["seconds"][label] = round(time.perf_counter() - t0, 1)
        return res

    def trained(name: str, seed: int, **settings: Any) -> str:
        run = timed(f"{name} s{seed}", finetune, FinetuneConfig(seed=seed, **settings))
        runs.setdefault(name, []).append(run.run_id)
        res = timed(f"evaluate {name} s{seed}", evaluate, run.run_id, ecfg)
        out["models"][f"{name} s{seed}"] = overall_metrics(res, KEYS)
        log(name, seed, out["models"][f"{name} s{seed}"])
        return run.run_id

    base = timed("evaluate base", evaluate, args.model, ecfg)
    out["models"]["base"] = overall_metrics(base, KEYS)
    runs["base"] = [base.run_id]
    log("base", out["models"]["base"])
    for seed in seeds:
        sft = trained("sft", seed, model=args.model, stage="align", safety_data="builtin:harmor-reasoned",
                      max_steps=args.sft_steps, lr=args.sft_lr, **lora)
        trained("sft+grpo", seed, from_run=sft, **grpo)
        trained("grpo", seed, model=args.model, **grpo)

    cfg = {r["id"]: r["configuration"] for r in select_runs(store)}
    side = {name: (ids[0] if name == "base" or len(seeds) == 1 else cfg[ids[0]]) for name, ids in runs.items()}
    out["configurations"] = side
    for a, b in (("base", "sft"), ("base", "sft+grpo"), ("base", "grpo"), ("sft", "grpo"), ("sft", "sft+grpo")):
        cmp = compare(store, side[a], side[b])
        out["vs"][f"{b} - {a}"] = {d.metric: {"diff": d.diff, "ci": [d.ci_low, d.ci_high],
                                              "p": d.p_value, "method": d.method, "n": d.n,
                                              "seeds": [d.n_seeds_a, d.n_seeds_b]}
                                   for d in cmp.differences if d.metric in COMPARED}
    fr = compute_frontier(store, x="refusal_rate", y="task_accuracy")
    names = {c: n for n, c in side.items()}
    out["frontier"] = [{"model": names.get(p.configuration, names.get(p.run_id, p.run_id)),
                        "refusal_rate": p.x.value, "task_accuracy": p.y.value, "seeds": p.seeds,
                        "on_frontier": p.on_frontier} for p in fr.points]
    out["seconds"]["total"] = round(time.perf_counter() - t_all, 1)
    emit(out)
    return out


if __name__ == "__main__":
    main()
