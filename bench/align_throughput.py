"""Cost per optimizer step of the alignment-stage methods next to plain SFT: time and peak memory.

Each method runs its real step code (the `spt.train.defenses` plug-ins `vaccine` and `booster`, and
`spt.train.dpo.DPOMethod`) through a `TrainContext` over spt's packed completion loss, on HarmOR train
data (align batches), HarmOR's poison pool (Booster's harmful batch) and HarmOR preference pairs (DPO),
in its own subprocess so the peak memory of one does not hide another's. Steps after the first are
timed. Memory: peak RSS of the worker (CPU) or `torch.cuda.max_memory_allocated` after the warm-up
step (GPU).

    python bench/align_throughput.py --shape tiny --steps 4           # smoke (seconds)
    python bench/align_throughput.py --shape 135m --steps 4           # SmolLM2-135M shape, LoRA r=8 q,v
    python bench/align_throughput.py --shape 135m --full --methods sft,vaccine,booster

Per step: SFT and Vaccine/Booster see `--batch-size` alignment examples; Booster adds a harmful batch
of 10 (the authors' size); DPO sees `--batch-size` preference pairs (2 sequences each, as TRL counts).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, log, machine, peak_rss_mb, torch_info  # noqa: E402

METHODS = ("sft", "vaccine", "booster", "dpo")


def _config(args: Any, method: str) -> SimpleNamespace:
    return SimpleNamespace(
        seed=0, grad_accum=1, max_length=args.max_length, pack_length=512, lora=not args.full,
        batch_size=args.batch_size, lam=5.0 if method == "booster" else None, poison_data="builtin:harmor-comply",
        safety_data="harmor", stage="align", defense=method if method in ("vaccine", "booster") else "none",
        vaccine_rho=2.0, booster_alpha=0.1, booster_harmful_batch_size=10, dpo_beta=0.1, dpo_both_ways=True)


def worker(args: Any) -> dict[str, Any]:
    """One method: build data and model, run `--steps` optimizer steps, report time and memory."""
    import torch

    from spt.data import ensure_harmor, ensure_poison_dataset
    from spt.models import load_tokenizer
    from spt.store import open_store
    from spt.train import data as tdata
    from spt.train.context import TrainContext
    from spt.train.defenses.base import Batch, Defense
    from spt.train.loss import LossModule

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    store = open_store(Path(args.workdir) / "bench.db")
    safety = tdata.load_items(store, ensure_harmor(store))
    harmful = tdata.train_split(tdata.load_items(store, ensure_poison_dataset(store)))
    train_items = [x for x in tdata.train_split(safety) if x["label"] in ("harmful", "benign") and x["response"]]
    tok = load_tokenizer(args.model_dir)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    model.config.use_cache = False
    cfg = _config(args, args.method)
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(0)
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                 lora_dropout=0.0, task_type="CAUSAL_LM"))
    model.to(dev).train()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else None
    ctx = TrainContext(config=cfg, model=model, store=store, run_id="bench", tokenizer=tok,
                       pad_id=tok.pad_token_id if tok.pad_token_id is not None else 0, device=dev,
                       total_steps=args.steps, items={"safety": safety, "harmful": harmful},
                       forward_fn=LossModule(model), backward_fn=lambda t: t.backward(), autocast=autocast)
    train = ctx.encode(train_items)
    if args.method == "dpo":
        from spt.train.dpo import DPOMethod

        d: Defense = DPOMethod(cfg)
    elif args.method == "sft":
        d = Defense(cfg)
    else:
        from spt.train.defenses import get_defense

        d = get_defense(args.method)(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    t_setup = time.perf_counter()
    d.setup(ctx)
    setup_s = time.perf_counter() - t_setup
    if args.method == "dpo" and args.ref_pairs and len(d.pairs) > args.ref_pairs:
        n_all = len(d.pairs)  # the reference pass is timed on a subset and reported per pair
        d.pairs, d.chosen, d.rejected = d.pairs[:args.ref_pairs], d.chosen[:args.ref_pairs], d.rejected[:args.ref_pairs]
    else:
        n_all = len(getattr(d, "pairs", []))
    times, tokens = [], []
    for step in range(1, args.steps + 1):
        idx = ctx.sample(len(train), step, 0, args.batch_size, 0)
        ex = [train[i] for i in idx]
        n = sum(e.n_completion for e in ex)
        batches = [Batch(ex, [1.0 / max(1, n)] * len(ex))]
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        if step == 1 and args.method == "dpo":
            d._reference(ctx)  # the one-off reference pass is timed separately (below), not as step 1
            ref_s = time.perf_counter() - t0
            t0 = time.perf_counter()
        st = d.train_step(ctx, step, batches)
        if st is None:
            st = ctx.forward_backward(batches[0])
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        log(f"  {args.method} step {step}/{args.steps}: {dt:.3f} s")
        if step == 1 and dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        if step > 1 or args.steps == 1:
            times.append(dt)
            tokens.append(st.tokens)
    out: dict[str, Any] = {
        "method": args.method, "steps_timed": len(times), "s_per_step": sum(times) / len(times),
        "tokens_per_step": sum(tokens) / len(tokens), "setup_s": setup_s, "device": dev.type,
        "trainable_params": sum(p.numel() for p in params), "peak_rss_mb": peak_rss_mb(),
    }
    if args.method == "dpo":
        out["reference_logps_s_per_pair"] = ref_s / len(d.pairs)
        out["reference_pairs_timed"] = len(d.pairs)
        out["n_pairs_harmor_train"] = n_all
        out["reference_logps_s_all_pairs_est"] = ref_s / len(d.pairs) * n_all
    if dev.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main(argv: list[str] | None = None) -> dict | None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="tiny", choices=("tiny", "135m", "1b"))
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA r=8 on q,v")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--ref-pairs", type=int, default=64,
                    help="DPO: time the one-off reference pass on this many pairs (0: all) and report it per pair")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--method", default="sft", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        emit(worker(args))
        return None
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise SystemExit(f"unknown --methods {', '.join(bad)}; choose from {', '.join(METHODS)}")
    from train_throughput import make_model_dir

    results = []
    with tempfile.TemporaryDirectory(prefix="spt-align-bench-") as tmp:
        env = dict(os.environ, SPT_HOME=str(Path(tmp) / "home"), HF_HUB_OFFLINE="1")
        model_dir = make_model_dir(args.shape, Path(tmp) / "model")
        for m in methods:
            log(f"{m}: {args.steps} steps, shape {args.shape}, {'full' if args.full else 'LoRA'}")
            cmd = [sys.executable, __file__, "--worker", "--method", m, "--model-dir", str(model_dir),
                   "--workdir", tmp, "--steps", str(args.steps), "--batch-size", str(args.batch_size),
                   "--max-length", str(args.max_length), "--ref-pairs", str(args.ref_pairs)] + \
                (["--full"] if args.full else [])
            r = subprocess.run(cmd, env=env, capture_output=True, text=True)
            sys.stderr.write(r.stderr[-2000:] if r.returncode else "")
            if r.returncode:
                raise SystemExit(f"{m} worker failed (exit {r.returncode})")
            results.append(json.loads(r.stdout[r.stdout.index("{"):]))
    sft = next((r for r in results if r["method"] == "sft"), None)
    for r in results:
        if sft:
            r["time_vs_sft"] = r["s_per_step"] / sft["s_per_step"]
            key = "peak_cuda_mb" if "peak_cuda_mb" in r else "peak_rss_mb"
            r["extra_memory_mb_vs_sft"] = r[key] - sft[key]
    out = {"shape": args.shape, "lora": not args.full, "batch_size": args.batch_size, "steps": args.steps,
           "machine": machine(), "torch": torch_info(), "results": results}
    emit(out)
    log("method    s/step   ×SFT   tokens/step  peak MB   extra MB")
    for r in results:
        mem = r.get("peak_cuda_mb", r["peak_rss_mb"])
        log(f"{r['method']:<9} {r['s_per_step']:7.3f}  {r.get('time_vs_sft', float('nan')):5.2f}  "
            f"{r['tokens_per_step']:11.0f}  {mem:8.0f}  {r.get('extra_memory_mb_vs_sft', 0):8.0f}")
    return out


if __name__ == "__main__":
    main()
