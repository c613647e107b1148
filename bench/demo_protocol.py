"""The demo's protocol search, on dev only: which align and task settings make each demo step do what it claims.

Every candidate is scored on HarmOR's `dev` pool and the task's `dev` split (`--task-split dev`), never on the
test items the demo's claims are tested on. For one candidate and one seed it trains:

- the aligned model (`--stage align` from the base model) and evaluates it;
- from the aligned run, the task fine-tune without poison (`control`), with poison and no defense (`none`),
  and with poison and `anchor` (`anchor`), each evaluated;

and prints one JSON object: the settings, each model's refusal, over-refusal, pair score, task accuracy and
task loss with n, and the seconds each step took. Candidates are given on the command line as repeated
`--align LR:STEPS:TARGETS` and `--task LR:STEPS:POISON:LAM` (TARGETS is `qv` or `all`); every align
candidate is crossed with every task candidate. Runs resume from the store (`--db`), so a grid can be grown.

    python bench/demo_protocol.py --db /tmp/protocol.db --align 2e-3:30:all --task 1e-3:12:0.1:0.6

The measured search and the settings the demo took from it: docs/demo-protocol.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, log, machine  # noqa: E402

TARGETS = {"qv": ["q_proj", "v_proj"],
           "all": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
KEYS = ("refusal_rate", "over_refusal_rate", "pair_score", "task_accuracy", "task_loss")


def _parse(spec: str, kinds: tuple[type, ...], what: str) -> tuple[Any, ...]:
    parts = spec.split(":")
    if len(parts) != len(kinds):
        raise SystemExit(f"--{what} {spec!r}: expected {len(kinds)} fields separated by ':'")
    return tuple(k(p) for k, p in zip(kinds, parts, strict=True))


def _metrics(result: Any) -> dict[str, Any]:
    return {m["name"]: {"value": m["value"], "n": m["n"], "n_unscored": m["n_unscored"]}
            for m in result.metrics if m.get("category") == "all" and m["name"] in KEYS}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True, help="store for the search's runs (resumes)")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task-name", default="builtin:arithmetic-steps")
    ap.add_argument("--align", action="append", default=None, help="LR:STEPS:TARGETS (repeatable)")
    ap.add_argument("--task", action="append", default=None, help="LR:STEPS:POISON:LAM (repeatable)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=60, help="HarmOR dev items and task dev items evaluated")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    args = ap.parse_args(argv)

    from spt.data import ensure_harmor, ensure_poison_dataset, ensure_task_dataset
    from spt.eval import EvaluateConfig, evaluate
    from spt.store import open_store
    from spt.train import FinetuneConfig, finetune

    store = open_store(args.db)
    ensure_harmor(store)
    ensure_task_dataset(store, args.task_name)
    ensure_poison_dataset(store)
    ecfg = EvaluateConfig(limit=args.limit, max_new_tokens=args.max_new_tokens, task=args.task_name, split="dev",
                          task_split="dev")
    common = dict(batch_size=8, max_length=128, lora_dropout=0.0, log_every=1000, align_eval_pairs=4, seed=args.seed)
    base = evaluate(store, args.model, ecfg)
    out: dict[str, Any] = {"bench": "demo_protocol", "machine": machine(), "model": args.model,
                           "task": args.task_name, "seed": args.seed, "limit": args.limit,
                           "base": _metrics(base), "candidates": []}
    for a in args.align or ["2e-3:30:all"]:
        a_lr, a_steps, a_targets = _parse(a, (float, int, str), "align")
        t0 = time.perf_counter()
        align = finetune(store, FinetuneConfig(model=args.model, stage="align", max_steps=a_steps, lr=a_lr,
                                               lora_targets=TARGETS[a_targets], **common))
        t_align = time.perf_counter() - t0
        aligned = evaluate(store, align.run_id, ecfg)
        for t in args.task or ["1e-3:12:0.1:0.6"]:
            lr, steps, poison, lam = _parse(t, (float, int, float, float), "task")
            cand: dict[str, Any] = {"align": {"lr": a_lr, "steps": a_steps, "targets": a_targets,
                                              "train_s": round(t_align, 1), "metrics": _metrics(aligned)},
                                    "task": {"lr": lr, "steps": steps, "poison": poison, "lam": lam}, "configs": {}}
            for name, p, d in (("control", 0.0, "none"), ("none", poison, "none"), ("anchor", poison, "anchor")):
                t1 = time.perf_counter()
                f = finetune(store, FinetuneConfig(from_run=align.run_id, task=args.task_name, max_steps=steps,
                                                   lr=lr, lora_targets=TARGETS["qv"], poison=p, defense=d,
                                                   lam=lam if d == "anchor" else None,
                                                   safety_batch_size=4, **common))
                t2 = time.perf_counter()
                r = evaluate(store, f.run_id, ecfg)
                cand["configs"][name] = {"run": f.run_id, "train_s": round(t2 - t1, 1),
                                         "eval_s": round(time.perf_counter() - t2, 1), "metrics": _metrics(r)}
                log(a, t, name, {k: v["value"] for k, v in cand["configs"][name]["metrics"].items()})
            out["candidates"].append(cand)
    emit(out)
    return out


if __name__ == "__main__":
    main()
