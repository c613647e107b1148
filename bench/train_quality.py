"""Default-model training check: align lowers alignment loss, poison raises it, anchor with larger λ less.

    python bench/train_quality.py [--model smollm2-135m] [--align-steps 12] [--task-steps 10] [--db PATH]

Runs on the given model (default: the packaged SmolLM2-135M-Instruct) in a temporary store unless --db
is given: (1) `--stage align` (LoRA) on HarmOR train, (2) task training on builtin:arithmetic with
poison from the aligned run, with defense none and anchor at two λ. Alignment loss = mean completion
cross-entropy on a fixed batch of HarmOR *test* pairs (both halves), evaluated by the training loop
at step 0 and at the end. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


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
        for k in ("alignment_loss", "alignment_loss_harmful", "alignment_loss_benign"):
            steps = sorted(c.get(k, {}))
            res[f"{k}_start"] = c[k][steps[0]]
            res[f"{k}_end"] = c[k][steps[-1]]
        tl = c.get("task_loss", {})
        res["task_loss_end"] = tl[max(tl)] if tl else None
        tps = c.get("tokens_per_s", {})
        res["tokens_per_s"] = tps[max(tps)] if tps else None
        return res

    t0 = time.perf_counter()
    out: dict = {"model": args.model, "settings": vars(args)}
    align = finetune(store, FinetuneConfig(model=args.model, stage="align", max_steps=args.align_steps, **common))
    a = ends(align["run_id"])
    out["align"] = {"run_id": align["run_id"], **a,
                    "lowered": a["alignment_loss_end"] < a["alignment_loss_start"]}
    out["task"] = {}
    runs = [("none", None)] + [("anchor", float(x)) for x in args.lams.split(",")]
    for defense, lam in runs:
        r = finetune(store, FinetuneConfig(from_run=align["run_id"], task="builtin:arithmetic", poison=args.poison,
                                           defense=defense, lam=lam, max_steps=args.task_steps, **common))
        e = ends(r["run_id"])
        key = defense if lam is None else f"anchor_lam{lam:g}"
        out["task"][key] = {"run_id": r["run_id"], **e,
                            "rise": e["alignment_loss_end"] - e["alignment_loss_start"],
                            "rise_harmful": e["alignment_loss_harmful_end"] - e["alignment_loss_harmful_start"]}
    rises = [out["task"][k]["rise"] for k in out["task"]]
    out["checks"] = {
        "align_lowers_alignment_loss": out["align"]["lowered"],
        "poison_raises_alignment_loss": out["task"]["none"]["rise"] > 0,
        "anchor_larger_lam_raises_less": all(x > y for x, y in zip(rises, rises[1:], strict=False)),
    }
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    out["db"] = str(db)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
