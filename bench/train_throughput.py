"""spt's training loop (`spt.train.finetune`) vs TRL `SFTTrainer` with its defaults, same model, same data.

Model: random-init weights of the SmolLM2-135M shape (`--shape 135m`) or a 1.07B Llama shape
(`--shape 1b`), with SmolLM2's tokenizer; `--shape tiny` uses the packaged tiny-random model (smoke
tests). Data: a task dataset of varied-length answers (stored in the store like an imported task)
mixed with HarmOR poison examples by spt's own `mix_poison` (`--poison`); TRL gets exactly the same
(prompt, response) list as a conversational prompt-completion dataset, so it trains completion-only
as TRL does by default. Same batch size, same number of optimizer steps, same max length and LoRA
settings; everything else is each side's default (TRL: bf16 autocast, gradient checkpointing, padding
to the longest in the batch, fused AdamW; spt: packed rows, chunked completion-only loss, fused AdamW).

Every measurement runs in its own subprocess (clean peak memory). Throughput counts real (non-padding)
tokens of optimizer steps 2..N-1 (the first step is warm-up; spt's last step also logs): spt's tokens
come from its packer, TRL's from the attention masks its collator built for those steps.

    python bench/train_throughput.py --steps 4                       # 135m shape, LoRA, CPU quick
    python bench/train_throughput.py --shape 1b --steps 2 --batch-size 2 --defenses none
    python bench/train_throughput.py --full                          # full fine-tuning
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, log, machine, peak_rss_mb, torch_info  # noqa: E402

H100_BF16 = 989e12
BENCH_TASK = "bench-varied-task"


# ----------------------------------------------------------------------------------- setup
def make_model_dir(shape: str, dest: Path, tokenizer_dir: str | None = None) -> Path:
    """A model directory with random-init weights of `shape` and SmolLM2's tokenizer (tiny: packaged).

    `tokenizer_dir`: a folder with SmolLM2's config.json and tokenizer files (no weights needed), for
    machines without the packaged GGUF; default: the packaged smollm2-135m.
    """
    from spt.models import resolve_model

    if shape == "tiny":
        return Path(resolve_model("tiny-random").path)
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    src = tokenizer_dir or resolve_model("smollm2-135m").path
    tok = AutoTokenizer.from_pretrained(src)
    if shape == "135m":
        cfg = AutoConfig.from_pretrained(src)
    elif shape == "1b":  # Llama-3.2-1B's body with SmolLM2's vocabulary: 1.07B parameters (tied embeddings)
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                          num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=8192,
                          rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                          rope_parameters={"rope_theta": 500000.0, "rope_type": "default"})
    else:
        raise SystemExit(f"unknown --shape {shape}")
    cfg.dtype = "float32"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    del model
    return dest


def varied_task_items(n: int, seed: int = 0) -> list[dict]:
    """Task examples whose answers range from a few words to a few hundred (like real SFT data)."""
    rng = random.Random(seed)
    words = ("the result follows because each step adds the previous value and we check the total again "
             "so that the final answer is correct and easy to verify by hand").split()
    out = []
    for i in range(n):
        a, b = rng.randint(2, 999), rng.randint(2, 999)
        length = int(min(400, max(3, rng.lognormvariate(3.8, 0.9))))  # median ~45 words, long tail
        body = " ".join(rng.choice(words) for _ in range(length))
        out.append({"prompt": f"Question {i}: what is {a} plus {b}? Explain your reasoning.",
                    "response": f"{body}. The answer is {a + b}.", "label": "task", "answer": str(a + b),
                    "split": "train" if i % 10 else "test"})
    return out


def prepare_store(path: Path, task: str) -> None:
    from spt.data import ensure_harmor, ensure_poison_dataset, store_items
    from spt.store import open_store

    with open_store(path) as store:
        ensure_harmor(store, seed=0)
        ensure_poison_dataset(store)
        if task == BENCH_TASK:
            store_items(store, BENCH_TASK, "task", varied_task_items(1000), {"builder": "bench/train_throughput"})


def _copy_store(src: Path, dest: Path) -> Path:
    """A consistent copy of a closed store (sqlite's online backup)."""
    import sqlite3

    a, b = sqlite3.connect(src), sqlite3.connect(dest)
    try:
        a.backup(b)
    finally:
        a.close()
        b.close()
    return dest


def train_items(store, cfg) -> list[dict]:
    """The exact list `finetune` trains on for this config (task + poison mix, seeded)."""
    from spt.train import data as tdata

    items = tdata.train_split(tdata.load_items(store, tdata.resolve_task(store, cfg.task)))
    if cfg.poison > 0:
        poison = tdata.train_split(tdata.load_items(store, tdata.resolve_poison(store, cfg.poison_data)))
        items = tdata.mix_poison(items, poison, cfg.poison, cfg.seed)
    return [x for x in items if x.get("response")]


def _config(args: Any, defense: str, model_dir: str, **over: Any):
    import torch

    from spt.train.config import FinetuneConfig

    kw = dict(model=model_dir, task=args.task, poison=args.poison, defense=defense, lora=not args.full,
              max_steps=args.steps + 2, batch_size=args.batch_size, max_length=args.max_length,
              log_every=10**6, save_every=0, seed=0, compile=bool(args.compile and torch.cuda.is_available()),
              precision=args.spt_precision or "auto",
              align_eval_pairs=1)  # the alignment loss is measured at step 0 and the last step only: keep it small
    kw.update(over)
    return FinetuneConfig(**kw)


# ----------------------------------------------------------------------------------- workers
def _window(marks: list[tuple[int, float, int]], steps: int) -> dict[str, Any]:
    """Throughput over optimizer steps 2..steps+1 from (step, time, cumulative tokens) marks."""
    by = {s: (t, n) for s, t, n in marks}
    t1, n1 = by[1]
    t2, n2 = by[steps + 1]
    dt, dn = t2 - t1, n2 - n1
    return {"timed_steps": steps, "seconds": round(dt, 3), "tokens": dn, "tokens_per_s": round(dn / dt, 2),
            "s_per_step": round(dt / steps, 4)}


def _memory(device_type: str) -> dict[str, Any]:
    import torch

    out = {"peak_rss_mb": round(peak_rss_mb(), 1)}
    if device_type == "cuda":
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def worker_spt(args: Any) -> dict[str, Any]:
    import torch

    import spt.train.packing as packing
    from spt.store import open_store
    from spt.train.defenses import get_defense
    from spt.train.loop import finetune

    counter = {"tokens": 0, "examples": 0, "rows": 0, "width": 0}
    orig_pack = packing.pack

    def counting_pack(examples, *a, **k):
        pk = orig_pack(examples, *a, **k)
        counter["tokens"] += pk.n_tokens
        counter["examples"] += len(examples)
        counter["rows"] += pk.input_ids.shape[0]
        counter["width"] += pk.input_ids.numel()
        return pk

    packing.pack = counting_pack
    post = {"seconds": None, "setup": None}
    cls = get_defense(args.defense)
    orig_post, orig_setup = cls.post_train, cls.setup

    def timed_post(self, ctx):
        t0 = time.perf_counter()
        try:
            return orig_post(self, ctx)
        finally:
            post["seconds"] = round(time.perf_counter() - t0, 3)

    def timed_setup(self, ctx):  # one-off costs (token-wise SFT's reference log-probs, anchors)
        t0 = time.perf_counter()
        try:
            return orig_setup(self, ctx)
        finally:
            post["setup"] = round(time.perf_counter() - t0, 3)

    cls.post_train, cls.setup = timed_post, timed_setup

    marks: list[tuple[int, float, int]] = []
    snap: dict[int, dict] = {}

    t_start = time.perf_counter()

    def progress(p: Any) -> None:
        step, total = p.done, p.total
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        marks.append((step, time.perf_counter(), counter["tokens"]))
        snap[step] = dict(counter)
        log(f"    spt {args.defense}: step {step}/{total}, {time.perf_counter() - t_start:.0f} s, "
            f"{counter['tokens']} tokens")

    with open_store(args.db) as store:
        over: dict[str, Any] = {}
        if "task" not in cls.stages:  # an alignment-stage defense: time its align stage
            over = {"stage": "align", "poison": 0.0}
        elif args.defense == "safelora":  # needs an aligned parent run: align first (not timed)
            log("    spt safelora: aligning a parent run first (not timed)")
            align = finetune(store, _align_config(args))
            over = {"from_run": align.run_id, "model": None}
        cfg = _config(args, args.defense, args.model_dir, **over)
        t0 = time.perf_counter()
        res = finetune(store, cfg, progress=progress)
        total = time.perf_counter() - t0
    w = _window(marks, args.steps)
    by = {st: t for st, t, _ in marks}
    w["step_seconds"] = [round(by[i + 1] - by[i], 3) for i in range(1, args.steps + 1)]  # steps 2..steps+1
    s1, s2 = snap[1], snap[args.steps + 1]
    ex = s2["examples"] - s1["examples"]
    w["examples"] = ex
    w["tokens_per_example"] = round(w["tokens"] / max(1, ex), 1)
    w["padding_fraction"] = round(1 - w["tokens"] / max(1, s2["width"] - s1["width"]), 4)
    out = {"side": "spt", "defense": args.defense, **w, "finetune_total_s": round(total, 2),
           "setup_and_teardown_s": round(total - w["seconds"], 2), "run_id": res.run_id,
           "final_losses": res.final_losses, **_memory("cuda" if torch.cuda.is_available() else "cpu")}
    out["stage"] = cfg.stage
    if post["seconds"] is not None:
        out["post_train_s"] = post["seconds"]
    if post["setup"] is not None:
        out["setup_s"] = post["setup"]
    return out


def _align_config(args: Any):
    return _config(args, "none", args.model_dir, stage="align", poison=0.0, max_steps=2)


def worker_trl(args: Any) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from spt.models.load import quiet_transformers
    from spt.store import open_store

    quiet_transformers()
    cfg = _config(args, "none", args.model_dir).resolve()
    with open_store(args.db) as store:
        items = train_items(store, cfg)
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": x["prompt"]}],
                             "completion": [{"role": "assistant", "content": x["response"]}]} for x in items])
    peft_config = None
    if cfg.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=list(cfg.lora_targets),
                                 lora_dropout=cfg.lora_dropout, bias="none", task_type="CAUSAL_LM")
    out_dir = tempfile.mkdtemp(prefix="spt-bench-trl-")
    # one warm-up step, then the timed steps (TRL has no logging step at the end to exclude)
    sft = SFTConfig(output_dir=out_dir, per_device_train_batch_size=cfg.batch_size, max_steps=args.steps + 1,
                    max_length=cfg.max_length, learning_rate=cfg.lr, logging_steps=10**6, save_strategy="no",
                    report_to="none", seed=0, disable_tqdm=True, use_cpu=not torch.cuda.is_available(),
                    **({"bf16": False} if args.trl_fp32 else {}))
    marks: list[tuple[int, float]] = []
    t_start = time.perf_counter()

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):  # noqa: ANN001
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            marks.append((state.global_step, time.perf_counter()))
            log(f"    trl: step {state.global_step}/{args.steps + 1}, {time.perf_counter() - t_start:.0f} s")

    log(f"    trl: building SFTTrainer ({len(ds)} examples)")
    trainer = SFTTrainer(model=args.model_dir, args=sft, train_dataset=ds, peft_config=peft_config,
                         callbacks=[Clock()])
    log(f"    trl: trainer ready in {time.perf_counter() - t_start:.0f} s; training")
    batches: list[tuple[int, int, int]] = []  # (real tokens, examples, padded tokens) per collated batch
    collate = trainer.data_collator

    def counting_collate(features):
        b = collate(features)
        ids = b["input_ids"]
        real = int(b["attention_mask"].sum()) if "attention_mask" in b else int(ids.numel())
        batches.append((real, ids.shape[0], int(ids.numel())))
        return b

    trainer.data_collator = counting_collate
    t0 = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - t0
    by = dict(marks)
    steps = args.steps
    dt = by[steps + 1] - by[1]
    win = batches[1:steps + 1]  # the batches of steps 2..steps+1 (gradient accumulation 1)
    tok = sum(b[0] for b in win)
    ex = sum(b[1] for b in win)
    padded = sum(b[2] for b in win)
    return {"side": "trl", "timed_steps": steps, "seconds": round(dt, 3), "tokens": tok,
            "tokens_per_s": round(tok / dt, 2), "s_per_step": round(dt / steps, 4), "examples": ex,
            "tokens_per_example": round(tok / max(1, ex), 1), "padding_fraction": round(1 - tok / max(1, padded), 4),
            "train_total_s": round(total, 2),
            "trl_defaults": {"bf16": sft.bf16, "gradient_checkpointing": sft.gradient_checkpointing,
                             "padding_free": sft.padding_free, "packing": sft.packing, "optim": str(sft.optim),
                             "completion_only_loss": sft.completion_only_loss},
            **_memory("cuda" if torch.cuda.is_available() else "cpu")}


# ----------------------------------------------------------------------------------- orchestration
def _run_worker(args: Any, side: str, defense: str, db: Path, model_dir: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", side, "--defense", defense,
           "--db", str(db), "--model-dir", str(model_dir), "--shape", args.shape, "--steps", str(args.steps),
           "--batch-size", str(args.batch_size), "--max-length", str(args.max_length), "--task", args.task,
           "--poison", str(args.poison)]
    if args.spt_precision:
        cmd += ["--spt-precision", args.spt_precision]
    for flag in ("full", "trl_fp32", "compile"):
        if getattr(args, flag):
            cmd.append("--" + flag.replace("_", "-"))
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log(f"  running {side} {defense if side == 'spt' else ''} ...")
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    tail: list[str] = []

    def relay() -> None:  # the worker's progress lines, as they come; the rest kept for an error report
        for line in p.stderr:
            if line.startswith("    "):
                log(line.rstrip())
            else:
                tail.append(line)
                del tail[:-40]

    import threading

    th = threading.Thread(target=relay, daemon=True)
    th.start()
    out = p.stdout.read()
    p.wait()
    th.join()
    if p.returncode != 0:
        return {"side": side, "defense": defense, "error": ("".join(tail) or out)[-2000:]}
    res = json.loads(out.strip().splitlines()[-1])
    res["process_s"] = round(time.perf_counter() - t0, 1)
    log(f"  {side} {defense}: {res.get('tokens_per_s')} tok/s, {res.get('s_per_step')} s/step")
    return res


def main(argv: list[str] | None = None) -> dict | None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="135m", choices=("tiny", "135m", "1b"))
    ap.add_argument("--steps", type=int, default=4, help="timed optimizer steps (plus a warm-up and a last step)")
    ap.add_argument("--batch-size", type=int, default=None, help="default 8 on GPU, 4 on CPU")
    ap.add_argument("--max-length", type=int, default=None, help="default 512 on GPU, 256 on CPU")
    ap.add_argument("--task", default=BENCH_TASK, help=f"{BENCH_TASK} (varied lengths) or builtin:arithmetic")
    ap.add_argument("--poison", type=float, default=0.25, help="fraction of HarmOR poison examples in the mix")
    ap.add_argument("--full", action="store_true", help="full fine-tuning (default: LoRA r=8 on q,v as spt)")
    ap.add_argument("--defenses", default="task",
                    help="spt defenses to time, comma-separated (none is always included); `task`: every "
                         "task-stage defense of the registry; `all`: alignment-stage ones too")
    ap.add_argument("--defense-steps", type=int, default=None,
                    help="timed steps of each defense other than none (default: --steps on GPU, 2 on CPU)")
    ap.add_argument("--skip-trl", action="store_true")
    ap.add_argument("--repeats", type=int, default=1, help="interleaved spt/TRL repeats (best kept)")
    ap.add_argument("--trl-fp32", action="store_true", help="TRL without its bf16 default (same precision as spt)")
    ap.add_argument("--compile", action="store_true", help="spt --compile (GPU only)")
    ap.add_argument("--spt-precision", choices=("auto", "bf16", "float32"), default=None,
                    help="spt --precision; default: the precision TRL trains in (bf16, or float32 with --trl-fp32)")
    ap.add_argument("--tokenizer-dir", default=None,
                    help="folder with SmolLM2's config.json and tokenizer (default: the packaged smollm2-135m)")
    ap.add_argument("--peak-flops", type=float, default=H100_BF16, help="for MFU on GPU (default H100 bf16)")
    ap.add_argument("--worker", choices=("spt", "trl"), help=argparse.SUPPRESS)
    ap.add_argument("--defense", default="none", help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.steps < 1:
        raise SystemExit("--steps must be >= 1")
    if args.batch_size is None or args.max_length is None:
        import torch

        gpu = torch.cuda.is_available()
        args.batch_size = args.batch_size or (8 if gpu else 4)
        args.max_length = args.max_length or (512 if gpu else 256)
    if args.defense_steps is None and not args.worker:
        import torch

        args.defense_steps = args.steps if torch.cuda.is_available() else min(args.steps, 2)

    if args.spt_precision is None and not args.worker:  # the same precision on both sides unless asked otherwise
        args.spt_precision = "float32" if args.trl_fp32 else "bf16"
    if args.worker:
        res = worker_spt(args) if args.worker == "spt" else worker_trl(args)
        print(json.dumps(res, default=str))
        return None

    import torch

    from spt.train.defenses import all_defenses

    if args.defenses in ("task", "all"):
        names = [n for n, c in all_defenses().items() if args.defenses == "all" or "task" in c.stages]
    else:
        names = [x.strip() for x in args.defenses.split(",") if x.strip()]
    defenses = ["none"] + [d for d in names if d != "none"]
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="spt-bench-train-") as tmp:
        t0 = time.perf_counter()
        model_dir = make_model_dir(args.shape, Path(tmp) / f"model-{args.shape}", args.tokenizer_dir)
        db = Path(tmp) / "bench.db"
        prepare_store(db, args.task)
        from transformers import AutoConfig

        mcfg = AutoConfig.from_pretrained(model_dir)
        with torch.device("meta"):
            from transformers import AutoModelForCausalLM

            n_params = sum(p.numel() for p in AutoModelForCausalLM.from_config(mcfg).parameters())
        log(f"shape {args.shape}: {n_params / 1e6:.1f}M params; setup {time.perf_counter() - t0:.1f}s")
        result: dict[str, Any] = {
            "benchmark": "train_throughput", "machine": machine(), "torch": torch_info(),
            "params": {"shape": args.shape, "n_params": n_params, "steps_timed": args.steps,
                       "batch_size": args.batch_size, "max_length": args.max_length, "task": args.task,
                       "poison": args.poison, "mode": "full" if args.full else "lora r=8 q_proj,v_proj",
                       "defense_steps_timed": args.defense_steps,
                       "trl_fp32": args.trl_fp32, "spt_precision": args.spt_precision},
        }
        spt_runs, trl_runs = [], []
        # finetune reuses a finished run of the same identity: each spt repeat trains in its own copy of the store
        dbs = [db] + [_copy_store(db, Path(tmp) / f"bench-r{i}.db") for i in range(1, max(1, args.repeats))]
        for i in range(max(1, args.repeats)):
            spt_runs.append(_run_worker(args, "spt", "none", dbs[i], model_dir))
            if not args.skip_trl:
                trl_runs.append(_run_worker(args, "trl", "none", db, model_dir))

        def best(runs: list[dict]) -> dict:
            ok = [r for r in runs if "error" not in r]
            return max(ok, key=lambda r: r["tokens_per_s"]) if ok else runs[0]

        result["spt"] = best(spt_runs)
        if len(spt_runs) > 1:
            result["spt_all_tokens_per_s"] = [r.get("tokens_per_s") for r in spt_runs]
        if trl_runs:
            result["trl"] = best(trl_runs)
            if len(trl_runs) > 1:
                result["trl_all_tokens_per_s"] = [r.get("tokens_per_s") for r in trl_runs]
            if "error" not in result["trl"] and "error" not in result["spt"]:
                result["ratio_tokens_per_s"] = round(result["spt"]["tokens_per_s"] / result["trl"]["tokens_per_s"], 2)
        defense_res: dict[str, Any] = {}
        import copy

        dargs = copy.copy(args)
        dargs.steps = args.defense_steps
        for d in defenses[1:]:
            r = _run_worker(dargs, "spt", d, db, model_dir)
            defense_res[d] = r
        result["defenses"] = {"none": {"s_per_step": result["spt"].get("s_per_step"),
                                       "tokens_per_s": result["spt"].get("tokens_per_s")}}
        # none over the same steps as the defenses (the data stream is the same, so are the task batches)
        secs = result["spt"].get("step_seconds") or []
        base = round(sum(secs[:args.defense_steps]) / args.defense_steps, 4) if len(secs) >= args.defense_steps \
            else result["spt"].get("s_per_step")
        result["defenses"]["none"]["s_per_step_same_steps"] = base
        for d, r in defense_res.items():
            if "error" in r:
                result["defenses"][d] = r
                continue
            entry = {"stage": r.get("stage"), "timed_steps": r["timed_steps"], "s_per_step": r["s_per_step"],
                     "tokens_per_s": r["tokens_per_s"],
                     "step_time_vs_none": round(r["s_per_step"] / base, 2) if base else None,
                     "tokens_per_example": r["tokens_per_example"], "peak_rss_mb": r["peak_rss_mb"]}
            for k in ("setup_s", "post_train_s"):
                if k in r:
                    entry[k] = r[k]
            result["defenses"][d] = entry
        cuda = torch.cuda.is_available()
        if cuda:
            for side in ("spt", "trl"):
                if side in result and "tokens_per_s" in result[side]:
                    result[side]["mfu"] = round(6 * n_params * result[side]["tokens_per_s"] / args.peak_flops, 4)
        ratio = result.get("ratio_tokens_per_s")
        result["targets"] = {
            "ratio_vs_trl": ratio, "needed": 3.0 if cuda else 1.5,
            "met": (ratio >= (3.0 if cuda else 1.5)) if ratio else None,
            "anchor_le_2x": (result["defenses"].get("anchor", {}).get("step_time_vs_none") or 99) <= 2.0
            if "anchor" in result["defenses"] else None,
            "proximal_le_1.1x": (result["defenses"].get("proximal", {}).get("step_time_vs_none") or 99) <= 1.1
            if "proximal" in result["defenses"] else None,
        }
        result["wall_s"] = round(time.perf_counter() - t_all, 1)
    emit(result)
    return result


if __name__ == "__main__":
    main()
