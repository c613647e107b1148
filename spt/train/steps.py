"""The step loop: data, model, optimizer, resume, and one optimizer step at a time with the defense's hooks.

Per optimizer step, on each process: `batch_size × grad_accum` task examples from a seeded stream
(position → epoch permutation, so the data position of any step is known without replaying); the
defense turns them into the micro-batches trained on (`Defense.batches`: anchor adds safety examples,
Lisa swaps in alignment data, token-wise SFT adds per-token weights); each micro-batch is packed
padding-free (`spt.train.packing`) and runs one forward through the chunked completion-only loss
(`spt.train.loss`), the defense's `extra_loss` joins the last one (or `Defense.train_step` runs the
whole step); then clipping, fused AdamW, linear warmup/decay and `Defense.after_step`. Rank 0 alone
writes: TrainLog rows every `log_every` steps (task loss, alignment loss on a fixed HarmOR test batch,
lr, tokens/s, the defense's `log_values`), checkpoints every `save_every` steps (with optimizer,
scheduler, RNG and defense state) and the final checkpoint after `Defense.post_train`.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from typing import Any

from spt.errors import SptError
from spt.progress import ProgressFn, report
from spt.signals import INTERRUPTED, Interrupted, StopOnSignal, signal_name
from spt.train.checkpoint import clean_run_dir, load_state, mark, save_checkpoint, trainer_state
from spt.train.config import FinetuneConfig
from spt.train.context import Stream, TrainContext
from spt.train.defenses.base import StepStats
from spt.train.plan import Plan
from spt.train.result import FinetuneResult, checkpoint_infos


def set_seed(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def training_autocast(precision: str, device: Any) -> Any:
    """The autocast context of a step: `auto` is bf16 on CUDA and none on CPU, `bf16` bf16 everywhere.

    Weights and optimizer state stay float32 in every mode (autocast only runs matmuls in bf16), so a
    checkpoint's tensors have the same dtype whatever the precision; the precision is part of the run
    identity because it changes the numbers.
    """
    import torch

    dev = device.type
    if precision == "float32" or (precision == "auto" and dev != "cuda"):
        return torch.autocast(dev if dev in ("cuda", "cpu") else "cpu", enabled=False)
    return torch.autocast(dev if dev in ("cuda", "cpu") else "cpu", dtype=torch.bfloat16)


def build_model(cfg: FinetuneConfig, start_path: str, resume_dir: str | None) -> Any:
    """The model to train: full weights (a resume checkpoint's, for a full fine-tune) or base + seeded LoRA."""
    import warnings

    import torch
    from transformers import AutoModelForCausalLM

    from spt.models.load import quiet_transformers

    quiet_transformers()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    src = resume_dir if (resume_dir and not cfg.lora) else start_path
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    model.config.use_cache = False
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(cfg.seed)
        lc = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=list(cfg.lora_targets),
                        lora_dropout=cfg.lora_dropout, bias="none", task_type="CAUSAL_LM")
        model = get_peft_model(model, lc)
    return model


def _load_data(store: Any, plan: Plan, cfg: FinetuneConfig, tokenizer: Any) -> tuple[list, list, list, list]:
    """(train items, encoded train examples, encoded eval examples, HarmOR items)."""
    from spt.train import data as tdata
    from spt.train.packing import encode_items

    safety_items = tdata.load_items(store, plan.safety_dataset)
    if cfg.stage == "align" and cfg.alignment_data:
        train_items = [x for x in tdata.train_split(tdata.load_items(store, plan.train_dataset))
                       if x["label"] in ("harmful", "benign")]
    elif cfg.stage == "align":
        train_items = [x for x in tdata.train_split(safety_items) if x["label"] in ("harmful", "benign")]
    else:
        train_items = tdata.train_split(tdata.load_items(store, plan.train_dataset))
        if plan.poison_dataset:
            poison = tdata.train_split(tdata.load_items(store, plan.poison_dataset))
            train_items = tdata.mix_poison(train_items, poison, cfg.poison, cfg.seed)
    train_items = [x for x in train_items if x.get("response")]
    if not train_items:
        raise SptError("the training data is empty")
    train = encode_items(tokenizer, train_items, cfg.max_length)
    test_items = [x for x in safety_items if x["split"] == "test"] or safety_items
    eval_pairs = tdata.fixed_eval_pairs(test_items, cfg.align_eval_pairs)
    eval_ex = (encode_items(tokenizer, [h for h, _ in eval_pairs], cfg.max_length, group=0)
               + encode_items(tokenizer, [b for _, b in eval_pairs], cfg.max_length, group=1))
    return train_items, train, eval_ex, safety_items


def alignment_loss(ctx: TrainContext, eval_ex: list[Any]) -> dict[str, float]:
    """Mean over examples of each example's mean token CE on the fixed HarmOR test batch (as `spt evaluate`)."""
    import torch

    from spt.train.defenses.base import Batch

    ctx.model.eval()
    with torch.no_grad():
        _, ce, flat, pk = ctx.forward(Batch(eval_ex, [1.0] * len(eval_ex)), ddp=False)
    ctx.model.train()
    seg = pk.seg.reshape(-1).to(flat.device)
    tgt_seg = torch.full_like(seg, -1)
    tgt_seg[:-1] = seg[1:]
    ex = tgt_seg.index_select(0, flat)
    ce = ce.float()
    n_ex = len(eval_ex)
    sums = torch.zeros(n_ex, device=ce.device).index_add_(0, ex, ce)
    counts = torch.zeros(n_ex, device=ce.device).index_add_(0, ex, torch.ones_like(ce))
    per_ex = sums / counts.clamp(min=1)
    groups = torch.tensor([e.group for e in eval_ex], device=ce.device)
    valid = counts > 0
    out = {"alignment_loss": float(per_ex[valid].mean())}
    for g, nm in ((0, "alignment_loss_harmful"), (1, "alignment_loss_benign")):
        m = valid & (groups == g)
        if m.any():
            out[nm] = float(per_ex[m].mean())
    return out


def train(store: Any, plan: Plan, accelerator: Any, progress: ProgressFn | None,
          stop: StopOnSignal | None = None) -> FinetuneResult:
    """Train the planned run to its last step (or to a signal); rank 0 records everything."""
    import torch

    from spt.models import load_tokenizer
    from spt.store import BatchWriter
    from spt.store.models import Checkpoint, TrainLog, utcnow
    from spt.train.defenses import get_defense
    from spt.train.loss import LossModule

    cfg = FinetuneConfig(**plan.config)
    rank, world, rank0 = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    device = accelerator.device
    set_seed(cfg.seed)
    tokenizer = load_tokenizer(plan.start_path)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    train_items, train_ex, eval_ex, safety_items = _load_data(store, plan, cfg, tokenizer)
    from spt.train.methods import method_for

    defense = method_for(cfg) or get_defense(cfg.defense)(cfg)  # --method dpo replaces the SFT objective
    per_step = cfg.batch_size * cfg.grad_accum * world
    total_steps = cfg.max_steps or max(1, math.ceil(float(cfg.epochs) * len(train_ex) / per_step))
    stream = Stream(len(train_ex), cfg.seed)

    # ---- model, optimizer, schedule
    resume_dir = plan.resume_from["path"] if plan.resume_from else None
    model = build_model(cfg, plan.start_path, resume_dir)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    lora_init = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad} \
        if cfg.lora else None
    try:
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                      fused=device.type in ("cuda", "cpu"))
    except (RuntimeError, TypeError):
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    warmup = int(cfg.warmup_ratio * total_steps)

    def lr_lambda(i: int) -> float:
        if i < warmup:
            return (i + 1) / (warmup + 1)
        return max(0.0, (total_steps - i) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    state = load_state(plan.resume_from) if plan.resume_from else None
    start_step = int(state["step"]) if state else 0

    wrapped = LossModule(model)
    if cfg.compile and device.type == "cuda":
        wrapped = torch.compile(wrapped, dynamic=True)
    wrapped = accelerator.prepare(wrapped)
    autocast = training_autocast(cfg.precision, device)
    ctx = TrainContext(
        config=cfg, model=model, store=store, run_id=plan.run_id, start_path=plan.start_path,
        parent_final=Checkpoint(**plan.parent_final) if plan.parent_final else None,
        parent_start_path=plan.parent_start_path, tokenizer=tokenizer, pad_id=pad_id, device=device,
        total_steps=total_steps, start_step=start_step, world=world, rank=rank, train=train_ex,
        items={"safety": safety_items}, forward_fn=wrapped, eval_forward_fn=accelerator.unwrap_model(wrapped),
        backward_fn=accelerator.backward,
        no_sync_fn=lambda sync: (accelerator.no_sync(wrapped) if (not sync and world > 1)
                                 else contextlib.nullcontext()),
        autocast=autocast, lora_init=lora_init,
        visited_fn=lambda: [train_ex[i] for i in sorted({stream.at(p) for p in range(total_steps * per_step)})])
    with torch.random.fork_rng(devices=[]):  # a defense's set-up never shifts the training RNG
        defense.setup(ctx)
    if state:
        if cfg.lora:
            named = dict(model.named_parameters())
            with torch.no_grad():
                for k, v in state["trainable"].items():
                    named[k].copy_(v.to(named[k].device))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        if torch.cuda.is_available() and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        defense.load_state_dict(state.get("defense") or {})

    if rank0:  # a resumed run: drop log rows the interrupted attempt wrote after its last checkpoint
        from sqlmodel import delete

        clean_run_dir(store, plan.run_id)
        with store.write() as s:
            s.exec(delete(TrainLog).where(TrainLog.run_id == plan.run_id, TrainLog.step > start_step))
            if start_step == 0:
                s.exec(delete(TrainLog).where(TrainLog.run_id == plan.run_id))

    writer = BatchWriter(store, batch_size=256, interval_s=5.0) if rank0 else None

    def log(step: int, values: dict[str, float]) -> None:
        if writer is not None:
            for k, v in values.items():
                if v is not None and math.isfinite(v):
                    writer.add(TrainLog(run_id=plan.run_id, step=step, name=k, value=float(v)))

    def checkpoint(step: int) -> dict:
        st = trainer_state(step, optimizer, scheduler, model, cfg, world, defense.state_dict())
        if writer is not None:
            writer.flush()
        return save_checkpoint(store, plan, cfg, model, tokenizer, step, False, st)

    model.train()
    if start_step == 0 and rank0:
        log(0, alignment_loss(ctx, eval_ex))
    window, t0, n_steps = StepStats(), time.perf_counter(), 0
    last_losses: dict[str, float] = {}
    for step in range(start_step + 1, total_steps + 1):
        base = (step - 1) * per_step
        micro = []
        for m in range(cfg.grad_accum):
            off = base + (m * world + rank) * cfg.batch_size
            micro.append([train_ex[stream.at(off + j)] for j in range(cfg.batch_size)])
        batches = defense.batches(ctx, step, micro)
        stats = defense.train_step(ctx, step, batches)
        if stats is None:
            stats = StepStats()
            for m, b in enumerate(batches):
                last = m == len(batches) - 1
                extra = defense.extra_loss(ctx, step) if last else None
                stats.add(ctx.forward_backward(b, extra, sync=last))
        gn = accelerator.clip_grad_norm_(params, cfg.max_grad_norm) if cfg.max_grad_norm else None
        lr_now = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        defense.after_step(ctx, step)
        window.add(stats)
        n_steps += 1

        if step % cfg.log_every == 0 or step == total_steps:
            dt = max(time.perf_counter() - t0, 1e-9)
            vals = {"task_loss": window.sums.get(0, 0.0) / max(1, window.counts.get(0, 0)), "lr": lr_now,
                    "tokens_per_s": window.tokens * world / dt}
            if gn is not None:
                vals["grad_norm"] = float(gn)
            if window.counts.get(1):
                vals["safety_loss"] = window.sums[1] / window.counts[1]
            if window.extra:
                vals["penalty"] = window.extra / n_steps
            vals.update(defense.log_values())
            if rank0:
                vals.update(alignment_loss(ctx, eval_ex))
                log(step, vals)
            last_losses = {k: v for k, v in vals.items() if "loss" in k}
            if rank0:
                report(progress, "train", step, total_steps, "steps", **vals)
            window, t0, n_steps = StepStats(), time.perf_counter(), 0
        elif rank0:
            report(progress, "train", step, total_steps, "steps")

        saved_now = bool(cfg.save_every and step % cfg.save_every == 0 and step < total_steps)
        if saved_now and rank0:
            checkpoint(step)
        signum = stop.poll(accelerator) if (stop is not None and step < total_steps) else None
        if signum:  # SIGTERM / SIGINT: checkpoint this step boundary, mark the run interrupted, stop
            msg = f"interrupted by {signal_name(signum)} at step {step}/{total_steps}; continue with --resume"
            if rank0:
                if not saved_now:
                    checkpoint(step)
                if writer is not None:
                    writer.flush()
                mark(store, plan.run_id, status=INTERRUPTED, error=msg)
            accelerator.wait_for_everyone()
            raise Interrupted(f"run {plan.run_id} {msg}", signum, step, plan.run_id)

    accelerator.wait_for_everyone()
    result: dict[str, Any] = {"steps": total_steps, "final_losses": last_losses, "n_train": len(train_ex),
                              "examples_per_step": per_step}
    if cfg.stage == "task":
        result["poison"] = poison_seen(train_items, train_ex, stream, total_steps * per_step, cfg.poison)
    if rank0:
        post = defense.post_train(ctx)
        extra_meta = {}
        if post is not None:
            result[cfg.defense] = post
            extra_meta[cfg.defense] = {k: v for k, v in post.items() if k != "layers"}
            if defense.changes_weights_after_training:
                after = alignment_loss(ctx, eval_ex)
                log(total_steps, {f"{k}_post_{cfg.defense}": v for k, v in after.items()})
                result["final_losses_post_defense"] = after
        if writer is not None:
            writer.flush()
        save_checkpoint(store, plan, cfg, model, tokenizer, total_steps, True, None, extra_meta)
        from spt.store.models import Run

        with store.session() as s:
            conf = dict(s.get(Run, plan.run_id).config or {})
        conf["result"] = result
        mark(store, plan.run_id, status="done", error=None, finished_at=utcnow(), config=conf)
    accelerator.wait_for_everyone()
    return FinetuneResult(run_id=plan.run_id, status="done", kind=plan.kind, rank=rank,
                          resumed_from_step=start_step or None, steps=total_steps, final_losses=last_losses,
                          checkpoints=checkpoint_infos(store, plan.run_id) if rank0 else [], defense=cfg.defense,
                          post_train=result.get(cfg.defense),
                          final_losses_post_defense=result.get("final_losses_post_defense"))


def poison_seen(items: list[dict], encoded: list[Any], stream: Stream, positions: int,
                ratio: float) -> dict[str, Any]:
    """The realised poison dose: poison examples in the data and examples/tokens actually trained on.

    A ratio alone hides the dose (20 steps of batch 8 see 16 poison examples at p = 0.1, whatever the
    data size), so the run records what it saw. The data stream is deterministic, so this is exact.
    """
    poison = {i for i, x in enumerate(items) if x.get("label") == "poison"}
    seen = [stream.at(p) for p in range(positions)]
    hit = [i for i in seen if i in poison]
    return {"ratio": ratio, "examples_in_data": len(poison), "distinct_in_data":
            len({items[i]["prompt"] for i in poison}), "examples_seen": len(hit), "distinct_seen": len(set(hit)),
            "tokens_seen": sum(encoded[i].n_completion for i in hit), "examples_seen_total": len(seen)}
