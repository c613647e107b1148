"""The training loop behind `spt finetune`: a lean PyTorch loop under `accelerate`.

Per optimizer step, on each process: `batch_size × grad_accum` examples from a seeded stream
(position → epoch permutation, so the data position of any step is known without replaying), packed
padding-free (`spt.train.packing`), one forward per micro-batch (anchor: task and safety examples in
the same packed forward with per-token weights), completion-only loss through the chunked
linear-cross-entropy (`spt.train.loss`), fused AdamW, linear warmup/decay, gradient clipping. Rank 0
alone writes to the store: the run row, TrainLog rows every `log_every` steps (task loss, alignment
loss on a fixed HarmOR test batch, lr, tokens/s), checkpoints every `save_every` steps (with
optimizer, scheduler, RNG state and step) and the final checkpoint.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError

from spt.errors import SptError
from spt.train.config import FinetuneConfig
from spt.train.signals import INTERRUPTED, Interrupted, StopOnSignal, signal_name

ALGO_VERSION = 1
STATE_FILE = "trainer_state.pt"


# ----------------------------------------------------------------------------------- helpers
class LeaseHeld(SptError):
    """Another live process holds the lease of the run with these settings (it is being trained now)."""

    def __init__(self, message: str, holder_run_id: str):
        super().__init__(message)
        self.holder_run_id = holder_run_id


def weights_hash(path: str | Path) -> str:
    """Content hash of a model or adapter directory's weights (safetensors files)."""
    from spt.store import content_id, file_hash

    d = Path(path)
    if not d.is_dir():
        return f"ref:{path}"
    files = sorted(d.glob("*.safetensors"))
    if not files:
        files = sorted(d.glob("*.bin"))
    if len(files) == 1:
        return file_hash(files[0])
    return content_id({f.name: file_hash(f) for f in files})


def provenance(device: str, dtype: str, seed: int, world: int) -> dict[str, Any]:
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    import spt

    vers = {}
    for pkg in ("spt", "torch", "transformers", "peft", "trl", "accelerate"):
        try:
            vers[pkg] = version(pkg)
        except PackageNotFoundError:
            vers[pkg] = None
    commit = None
    try:
        r = subprocess.run(["git", "-C", str(Path(spt.__file__).parent), "rev-parse", "HEAD"],
                           capture_output=True, text=True, timeout=5)
        commit = r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"versions": vers, "git_commit": commit, "host": socket.gethostname(), "device": device,
            "dtype": dtype, "seeds": {"seed": seed, "data": seed, "lora_init": seed}, "world_size": world}


def _ckpt_dir_name(step: int, final: bool) -> str:
    return "final" if final else f"step-{step:06d}"


@dataclass
class Plan:
    """What rank 0 decided before training; broadcast to the other processes as a dict."""

    config: dict
    run_id: str
    identity: str
    reused: bool = False
    kind: str = "finetune"
    start_path: str = ""
    start_hash: str = ""
    parent_id: str | None = None
    parent_final: dict | None = None
    parent_start_path: str | None = None
    train_dataset: str | None = None
    poison_dataset: str | None = None
    safety_dataset: str | None = None
    resume_from: dict | None = None  # checkpoint row (dict) with a trainer state
    summary: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------- planning
def _check_lora_targets(start_path: str, targets: list[str]) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        cfg = AutoConfig.from_pretrained(start_path)
    except OSError as e:
        raise SptError(f"cannot read the model config at {start_path} ({str(e).splitlines()[0]})") from None
    with torch.device("meta"):
        m = AutoModelForCausalLM.from_config(cfg)
    names = [n for n, mod in m.named_modules() if isinstance(mod, torch.nn.Linear)]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
        raise SptError(f"--lora-targets {', '.join(missing)} match no linear layer of this model; "
                       f"available: {', '.join(leaves)}")


def _parent_run(store: Any, run_ref: str) -> tuple[Any, Any]:
    from sqlmodel import col, select

    from spt.runs import resolve_run
    from spt.store.models import Checkpoint

    parent = resolve_run(store, run_ref)
    if parent.status != "done":
        raise SptError(f"--from run {parent.id} is {parent.status}"
                       + (f" ({parent.error})" if parent.error else "")
                       + "; start from a finished run (resume it with --resume, or pick another)")
    with store.session() as s:
        ck = s.exec(select(Checkpoint).where(Checkpoint.run_id == parent.id, Checkpoint.is_final == True)  # noqa: E712
                    .order_by(col(Checkpoint.created_at).desc())).first()
    if ck is None or not Path(ck.path).exists():
        raise SptError(f"--from run {parent.id} has no final checkpoint on disk; re-run it")
    return parent, ck


def plan_run(store: Any, config: FinetuneConfig, world: int = 1) -> Plan:
    """Validate everything, build data, compute the identity, and create or find the run row."""

    from spt.models import chat_template_hash, load_tokenizer, resolve_model
    from spt.store import content_id
    from spt.train import data as tdata
    from spt.train.defense_base import get_defense

    cfg = config.resolve()
    dcls = get_defense(cfg.defense)
    parent = parent_ck = None
    if cfg.from_run:
        parent, parent_ck = _parent_run(store, cfg.from_run)
    dcls.validate_lineage(cfg, parent)

    if parent is not None:
        model_ref, base_model = parent.model_ref, parent.base_model
        if parent_ck.kind == "adapter":
            from spt.train.merge import merge_run

            merged = merge_run(store, parent.id, parent_ck.id)
            start_path, start_hash = merged["path"], merged["content_hash"]
        else:
            start_path, start_hash = parent_ck.path, parent_ck.content_hash or weights_hash(parent_ck.path)
        parent_start = (parent.config or {}).get("start_path")
    else:
        rm = resolve_model(cfg.model)
        model_ref, base_model = cfg.model, rm.base_model
        start_path = rm.path
        if rm.kind == "hub":
            from huggingface_hub import snapshot_download

            try:
                start_path = snapshot_download(rm.path)
            except Exception as e:  # noqa: BLE001 - any hub failure is the user's environment
                raise SptError(f"cannot download {rm.path} ({type(e).__name__}); pass a local directory") from None
        start_hash = weights_hash(start_path)
        parent_start = None
    if cfg.lora:
        _check_lora_targets(start_path, cfg.lora_targets)

    safety_id = tdata.resolve_safety(store, cfg.safety_data, seed=0)
    task_id = poison_id = None
    if cfg.stage == "task":
        task_id = tdata.resolve_task(store, cfg.task, seed=0)
        if cfg.poison > 0:
            poison_id = tdata.resolve_poison(store, cfg.poison_data, seed=0)
    tok_hash = chat_template_hash(load_tokenizer(start_path))

    ident_obj = {
        "algo": ALGO_VERSION, "start": start_hash, "stage": cfg.stage, "safety_dataset": safety_id,
        "train_dataset": task_id or safety_id, "poison_dataset": poison_id, "world_size": world,
        "chat_template": tok_hash, "settings": cfg.identity_fields(),
    }
    identity = content_id(ident_obj)
    kind = "align" if cfg.stage == "align" else "finetune"
    common = dict(kind=kind, identity=identity, start_path=str(start_path), start_hash=start_hash,
                  parent_id=parent.id if parent else None,
                  parent_final=parent_ck.model_dump() if parent_ck is not None else None,
                  parent_start_path=parent_start, train_dataset=task_id or safety_id,
                  poison_dataset=poison_id, safety_dataset=safety_id)

    resolved = cfg.to_dict()
    resolved.update({"start_path": str(start_path), "start_hash": start_hash, "chat_template_hash": tok_hash,
                     "train_dataset": task_id or safety_id, "safety_dataset": safety_id,
                     "poison_dataset": poison_id, "world_size": world, "identity_inputs": ident_obj})
    from spt.models import default_device

    prov = provenance(default_device(), "float32", cfg.seed, world)
    for attempt in range(3):
        try:
            return _claim_run(store, cfg, identity, resolved, common, prov, model_ref, base_model, parent)
        except IntegrityError:  # another planner inserted the running row first: plan again against it
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _claim_run(store: Any, cfg: FinetuneConfig, identity: str, resolved: dict, common: dict, prov: dict,
               model_ref: str, base_model: str | None, parent: Any) -> Plan:
    """In one write transaction: reuse a done run, adopt a resumable one whose lease expired, or insert a
    new running row holding this process's lease. A live lease on the same settings is refused."""
    from sqlmodel import col, select

    from spt.store.lease import describe, is_stale, my_owner
    from spt.store.models import Checkpoint, Run, utcnow

    owner, now = my_owner(), utcnow()
    with store.write() as s:  # BEGIN IMMEDIATE: planners of one store decide one at a time
        same = s.exec(select(Run).where(Run.identity == identity).order_by(col(Run.created_at).desc())).all()
        done = [r for r in same if r.status == "done"]
        if done:
            return Plan(config=cfg.to_dict(), run_id=done[0].id, reused=True, **common)
        running = [r for r in same if r.status == "running"]
        # A lease is released when its process ends the run (done, failed, interrupted); one still held and
        # renewed means a process is working on the run, whatever its status says.
        live = [r for r in same if (r.lease_owner or r.status == "running")
                and not is_stale(r.lease_owner, r.lease_heartbeat, r.updated_at)]
        if live:
            r = live[0]
            raise LeaseHeld(f"run {r.id} with these settings is being trained by "
                            f"{describe(r.lease_owner, r.lease_heartbeat, r.updated_at)}; wait for it, or if that "
                            "process is gone run `spt runs reap` (or lower SPT_LEASE_TIMEOUT_S)", r.id)
        resume_ck = None
        adopt = None
        if cfg.resume:
            adopt = next((r for r in same if r.status in ("running", "failed", "pending", INTERRUPTED)), None)
        for r in running:  # stale rows not adopted become interrupted (one running row per identity)
            if r is not adopt:
                r.status, r.error, r.updated_at = INTERRUPTED, "lease expired; superseded by a new run", now
                s.add(r)
        if adopt is not None:
            cks = s.exec(select(Checkpoint).where(Checkpoint.run_id == adopt.id)
                         .order_by(col(Checkpoint.step).desc())).all()
            for ck in cks:
                st = (ck.meta or {}).get("state_path")
                if st and Path(st).exists():
                    resume_ck = ck.model_dump()
                    break
            adopt.status, adopt.error, adopt.updated_at = "running", None, now
            adopt.lease_owner, adopt.lease_heartbeat = owner, now
            adopt.config = resolved
            s.add(adopt)
            return Plan(config=cfg.to_dict(), run_id=adopt.id, resume_from=resume_ck, **common)
        s.flush()
        run = Run(kind=common["kind"], parent_run_id=parent.id if parent else None, model_ref=model_ref,
                  base_model=base_model, task=cfg.task if cfg.stage == "task" else None, defense=cfg.defense,
                  lam=cfg.lam, poison_ratio=cfg.poison if cfg.stage == "task" else None, seed=cfg.seed,
                  lora=cfg.lora, config=resolved, identity=identity, status="running", provenance=prov,
                  lease_owner=owner, lease_heartbeat=now)
        s.add(run)
    return Plan(config=cfg.to_dict(), run_id=run.id, **common)


# ----------------------------------------------------------------------------------- training
class _Stream:
    """Example index at any stream position: epoch-wise seeded permutations of range(n)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self._perms: dict[int, list[int]] = {}

    def at(self, pos: int) -> int:
        ep, i = divmod(pos, self.n)
        p = self._perms.get(ep)
        if p is None:
            p = list(range(self.n))
            random.Random(self.seed * 1_000_003 + ep).shuffle(p)
            self._perms = {ep: p}
        return p[i]


@dataclass
class TrainContext:
    """What defense hooks see."""

    config: FinetuneConfig
    model: Any  # the (peft) model being trained, unwrapped
    store: Any
    run_id: str
    parent_final: Any | None = None  # Checkpoint of the parent run
    parent_start_path: str | None = None


def _set_seed(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _build_model(cfg: FinetuneConfig, start_path: str, resume_dir: str | None) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    from spt.models.load import quiet_transformers

    quiet_transformers()
    import warnings

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


def _save_checkpoint(store: Any, plan: Plan, cfg: FinetuneConfig, model: Any, tokenizer: Any, step: int,
                     final: bool, state: dict | None, extra_meta: dict | None = None) -> dict:
    import torch

    from spt.models import chat_template_hash
    from spt.paths import artifacts_dir
    from spt.store import new_id
    from spt.store.models import Checkpoint

    run_dir = artifacts_dir(store.path) / plan.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / _ckpt_dir_name(step, final)
    tmp = run_dir / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    if cfg.lora:
        model.peft_config["default"].base_model_name_or_path = str(Path(plan.start_path).resolve())
        model.save_pretrained(str(tmp))
        kind = "adapter"
    else:
        model.save_pretrained(str(tmp))
        kind = "full"
    tokenizer.save_pretrained(str(tmp))
    meta: dict[str, Any] = {"chat_template_hash": chat_template_hash(tokenizer), "dtype": "float32", "step": step}
    if cfg.lora:
        meta.update({"base_hash": plan.start_hash, "base_path": str(Path(plan.start_path).resolve())})
    if state is not None:
        torch.save(state, tmp / STATE_FILE)
        meta["state_path"] = str(target / STATE_FILE)
    if extra_meta:
        meta.update(extra_meta)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    ck = Checkpoint(id=new_id(), run_id=plan.run_id, step=step, kind=kind, path=str(target),
                    content_hash=weights_hash(target), is_final=final, meta=meta)
    with store.write() as s:
        s.add(ck)
    return ck.model_dump()


def _broadcast(obj: Any, accelerator: Any) -> Any:
    if accelerator.num_processes == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _mark(store: Any, run_id: str, **fields: Any) -> None:
    """Set the run's fields; ending the run (done, failed, interrupted) releases this process's lease."""
    from spt.store.lease import my_owner
    from spt.store.models import Run, utcnow

    with store.write() as s:
        row = s.get(Run, run_id)
        if row is None:
            return
        for k, v in fields.items():
            setattr(row, k, v)
        if fields.get("status") in ("done", "failed", INTERRUPTED) and row.lease_owner == my_owner():
            row.lease_owner = row.lease_heartbeat = None
        row.updated_at = utcnow()
        s.add(row)


def _reused_summary(store: Any, run_id: str) -> dict[str, Any]:
    from sqlmodel import col, select

    from spt.store.models import Checkpoint, Run

    with store.session() as s:
        run = s.get(Run, run_id)
        cks = s.exec(select(Checkpoint).where(Checkpoint.run_id == run_id).order_by(col(Checkpoint.step))).all()
    res = (run.config or {}).get("result", {})
    return {"run_id": run_id, "status": run.status, "reused": True, "kind": run.kind,
            "checkpoints": [{"id": c.id, "step": c.step, "kind": c.kind, "path": c.path, "is_final": c.is_final}
                            for c in cks],
            "final_losses": res.get("final_losses", {}), "steps": res.get("steps")}


def finetune(store: Any, config: FinetuneConfig, progress: Callable[..., Any] | None = None) -> dict[str, Any]:
    """Run (or resume, or report) one fine-tuning run; returns run_id, status, checkpoints, final losses.

    Under `accelerate launch` every process calls this; rank 0 plans, writes and reports.
    """
    import torch
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    rank0 = accelerator.is_main_process
    world = accelerator.num_processes
    msg: dict[str, Any]
    if rank0:
        try:
            msg = {"plan": plan_run(store, config, world).__dict__}
        except SptError as e:
            msg = {"error": str(e)}
            _broadcast(msg, accelerator)
            raise
    else:
        msg = {}
    msg = _broadcast(msg, accelerator)
    if "error" in msg:
        raise SptError(msg["error"])
    plan = Plan(**msg["plan"])
    if plan.reused:
        return _reused_summary(store, plan.run_id)
    try:
        with StopOnSignal() as stop, _heartbeat(store, plan.run_id, rank0):
            return _train(store, plan, accelerator, progress, stop)
    except Interrupted:
        raise  # the run is already marked interrupted, with a resumable checkpoint
    except BaseException as e:
        if rank0:
            err = f"{type(e).__name__}: {e}".strip()
            try:
                _mark(store, plan.run_id, status="failed", error=err.splitlines()[0][:500] if err else "failed")
            except Exception:  # noqa: BLE001 - never mask the original error
                pass
        raise


def _heartbeat(store: Any, run_id: str, rank0: bool) -> Any:
    """Rank 0 renews the run's lease while it trains (see spt.store.lease)."""
    from spt.store.lease import Heartbeat

    return Heartbeat(store, run_id) if rank0 else _nullcontext()


def _trainer_state(step: int, optimizer: Any, scheduler: Any, model: Any, cfg: FinetuneConfig, world: int) -> dict:
    """Everything a resumed run needs to continue exactly (tensors, numbers, tuples: loadable weights_only)."""
    import torch

    state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                     "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
             "world_size": world}
    if cfg.lora:
        state["trainable"] = {k: v.detach().cpu().clone() for k, v in model.named_parameters() if v.requires_grad}
    return state


def _load_state(ck: dict) -> dict:
    """A checkpoint's trainer state, read without unpickling code (`weights_only=True`).

    The path comes from the store, which may have been imported from another machine, so it must lie in
    the checkpoint's own folder, and only tensors and plain values are accepted.
    """
    import pickle

    import torch

    path = Path((ck.get("meta") or {}).get("state_path") or "")
    folder = Path(ck["path"]).resolve()
    if path.resolve().parent != folder:
        raise SptError(f"checkpoint {ck['id']} names a trainer state outside its folder ({path}); "
                       "start a fresh run without --resume")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError) as e:
        raise SptError(f"trainer state {path} holds more than tensors and plain values "
                       f"({str(e).splitlines()[0][:120]}); refusing to load it") from None


def _clean_run_dir(store: Any, run_id: str) -> list[str]:
    """Remove what a killed attempt left in the run's folder: temporary copies whose writer is gone,
    and checkpoint folders renamed into place without their store row (the kill fell in between)."""
    from sqlmodel import select

    from spt.paths import artifacts_dir
    from spt.store.models import Checkpoint

    run_dir = artifacts_dir(store.path) / run_id
    if not run_dir.is_dir():
        return []
    with store.session() as s:
        known = {Path(p).name for p in s.exec(select(Checkpoint.path).where(Checkpoint.run_id == run_id)).all()}
    removed = []
    for d in run_dir.iterdir():
        if not d.is_dir():
            continue
        tmp_pid = d.name.rpartition(".tmp-")[2] if ".tmp-" in d.name else None
        if tmp_pid is not None:
            if tmp_pid.isdigit() and _pid_alive(int(tmp_pid)) and int(tmp_pid) != os.getpid():
                continue  # another live process is still writing it
        elif d.name in known or not (d.name == "final" or d.name.startswith("step-")):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d.name)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _train(store: Any, plan: Plan, accelerator: Any, progress: Callable[..., Any] | None,
           stop: StopOnSignal | None = None) -> dict[str, Any]:
    import torch

    from spt.models import load_tokenizer
    from spt.store import BatchWriter
    from spt.store.models import Checkpoint, TrainLog, utcnow
    from spt.train import data as tdata
    from spt.train.defense_base import get_defense
    from spt.train.loss import LossModule
    from spt.train.packing import encode_items, pack

    cfg = FinetuneConfig(**plan.config)
    rank, world, rank0 = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    device = accelerator.device
    _set_seed(cfg.seed)
    tokenizer = load_tokenizer(plan.start_path)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    # ---- data (read-only on every rank)
    safety_items = tdata.load_items(store, plan.safety_dataset)
    if cfg.stage == "align":
        train_items = tdata.train_split(safety_items)
        train_items = [x for x in train_items if x["label"] in ("harmful", "benign")]
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

    defense = get_defense(cfg.defense)(cfg)
    safety_pairs: list[tuple[Any, Any]] = []
    if defense.needs_safety_batches:
        pairs = tdata.pairs_of(tdata.train_split(safety_items))
        if not pairs:
            raise SptError("the safety dataset has no harmful/benign pairs in its train split")
        safety_pairs = [(encode_items(tokenizer, [h], cfg.max_length, 1)[0],
                         encode_items(tokenizer, [b], cfg.max_length, 1)[0]) for h, b in pairs]

    per_step = cfg.batch_size * cfg.grad_accum * world
    total_steps = cfg.max_steps or max(1, math.ceil(float(cfg.epochs) * len(train) / per_step))
    stream = _Stream(len(train), cfg.seed)
    sb_pairs = max(1, cfg.safety_batch_size // 2)
    sstream = _Stream(len(safety_pairs), cfg.seed + 7) if safety_pairs else None

    # ---- model, optimizer, schedule
    resume_dir = plan.resume_from["path"] if plan.resume_from else None
    model = _build_model(cfg, plan.start_path, resume_dir)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    fused_ok = device.type in ("cuda", "cpu")
    try:
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused_ok)
    except (RuntimeError, TypeError):
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    warmup = int(cfg.warmup_ratio * total_steps)

    def lr_lambda(i: int) -> float:
        if i < warmup:
            return (i + 1) / (warmup + 1)
        return max(0.0, (total_steps - i) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    start_step = 0
    if plan.resume_from:
        state = _load_state(plan.resume_from)
        if cfg.lora:
            named = dict(model.named_parameters())
            with torch.no_grad():
                for k, v in state["trainable"].items():
                    named[k].copy_(v.to(named[k].device))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_step = int(state["step"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        if torch.cuda.is_available() and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])

    if rank0:  # a resumed run: drop log rows the interrupted attempt wrote after its last checkpoint
        from sqlmodel import delete

        _clean_run_dir(store, plan.run_id)

        with store.write() as s:
            s.exec(delete(TrainLog).where(TrainLog.run_id == plan.run_id, TrainLog.step > start_step))
            if start_step == 0:
                s.exec(delete(TrainLog).where(TrainLog.run_id == plan.run_id))
    ctx = TrainContext(cfg, model, store, plan.run_id,
                       Checkpoint(**plan.parent_final) if plan.parent_final else None, plan.parent_start_path)
    defense.setup(ctx)
    wrapped = LossModule(model)
    if cfg.compile and device.type == "cuda":
        wrapped = torch.compile(wrapped, dynamic=True)
    wrapped = accelerator.prepare(wrapped)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else torch.autocast("cpu", enabled=False))

    def to_dev(pk: Any) -> tuple:
        return (pk.input_ids.to(device, non_blocking=True), pk.position_ids.to(device, non_blocking=True),
                pk.labels.to(device, non_blocking=True), pk.weights.to(device, non_blocking=True))

    def eval_alignment() -> dict[str, float]:
        inner = accelerator.unwrap_model(wrapped)
        model.eval()
        pk = pack(eval_ex, pad_id, cfg.pack_length, [1.0] * len(eval_ex))
        with torch.no_grad(), autocast:
            _, ce, flat = inner(*to_dev(pk))
        model.train()
        seg = pk.seg.reshape(-1).to(flat.device)
        tgt_seg = torch.full_like(seg, -1)
        tgt_seg[:-1] = seg[1:]
        ex = tgt_seg.index_select(0, flat)
        # One definition with `spt evaluate` (spt.eval.metrics.loss_metrics): each example's mean token
        # CE, then the mean over examples, so a long reference response does not outweigh a short one.
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

    writer = BatchWriter(store, batch_size=256, interval_s=5.0) if rank0 else None

    def log(step: int, values: dict[str, float]) -> None:
        if writer is not None:
            for k, v in values.items():
                if v is not None and math.isfinite(v):
                    writer.add(TrainLog(run_id=plan.run_id, step=step, name=k, value=float(v)))

    model.train()
    if start_step == 0 and rank0:
        log(0, eval_alignment())
    checkpoints: list[dict] = []
    window = {"task": 0.0, "task_n": 0, "safety": 0.0, "safety_n": 0, "tokens": 0, "t0": time.perf_counter(),
              "steps": 0, "extra": 0.0}
    last_losses: dict[str, float] = {}
    tw, sw = defense.task_weight(), defense.safety_weight()
    for step in range(start_step + 1, total_steps + 1):
        base = (step - 1) * per_step
        micro = []
        n_task_tok = n_safe_tok = 0
        for m in range(cfg.grad_accum):
            off = base + (m * world + rank) * cfg.batch_size
            ex = [train[stream.at(off + j)] for j in range(cfg.batch_size)]
            sx = []
            if sstream is not None:
                soff = ((step - 1) * cfg.grad_accum * world + m * world + rank) * sb_pairs
                for j in range(sb_pairs):
                    h, b = safety_pairs[sstream.at(soff + j)]
                    sx += [h, b]
            n_task_tok += sum(e.n_completion for e in ex)
            n_safe_tok += sum(e.n_completion for e in sx)
            micro.append((ex, sx))
        wt = tw / max(1, n_task_tok)
        ws = sw / max(1, n_safe_tok)
        step_tokens = 0
        for m, (ex, sx) in enumerate(micro):
            allx = ex + sx
            pk = pack(allx, pad_id, cfg.pack_length, [wt] * len(ex) + [ws] * len(sx))
            step_tokens += pk.n_tokens
            last = m == cfg.grad_accum - 1
            sync_ctx = accelerator.no_sync(wrapped) if (not last and world > 1) else _nullcontext()
            with sync_ctx:
                with autocast:
                    loss, ce, flat = wrapped(*to_dev(pk))
                    if last:
                        extra = defense.extra_loss(model)
                        if extra is not None:
                            loss = loss + extra
                            window["extra"] += float(extra.detach())
                accelerator.backward(loss)
            # per-group token CE for logging (no extra forward)
            seg = pk.seg.reshape(-1)
            tgt_seg = torch.full_like(seg, -1)
            tgt_seg[:-1] = seg[1:]
            exi = tgt_seg.index_select(0, flat.cpu())
            is_safe = exi >= len(ex)
            ce = ce.detach().float().cpu()
            window["task"] += float(ce[~is_safe].sum())
            window["task_n"] += int((~is_safe).sum())
            window["safety"] += float(ce[is_safe].sum())
            window["safety_n"] += int(is_safe.sum())
        if cfg.max_grad_norm and cfg.max_grad_norm > 0:
            gn = accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
        else:
            gn = None
        lr_now = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        window["tokens"] += step_tokens
        window["steps"] += 1

        if step % cfg.log_every == 0 or step == total_steps:
            dt = max(time.perf_counter() - window["t0"], 1e-9)
            vals = {"task_loss": window["task"] / max(1, window["task_n"]), "lr": lr_now,
                    "tokens_per_s": window["tokens"] * world / dt}
            if gn is not None:
                vals["grad_norm"] = float(gn)
            if window["safety_n"]:
                vals["safety_loss"] = window["safety"] / window["safety_n"]
            if window["extra"]:
                vals["penalty"] = window["extra"] / window["steps"]
            if rank0:
                vals.update(eval_alignment())
                log(step, vals)
            last_losses = {k: v for k, v in vals.items() if "loss" in k}
            if progress is not None and rank0:
                progress(step, total_steps, vals)
            window = {"task": 0.0, "task_n": 0, "safety": 0.0, "safety_n": 0, "tokens": 0,
                      "t0": time.perf_counter(), "steps": 0, "extra": 0.0}
        elif progress is not None and rank0:
            progress(step, total_steps, {})

        saved_now = bool(cfg.save_every and step % cfg.save_every == 0 and step < total_steps)
        if saved_now and rank0:
            state = _trainer_state(step, optimizer, scheduler, model, cfg, world)
            if writer is not None:
                writer.flush()
            checkpoints.append(_save_checkpoint(store, plan, cfg, model, tokenizer, step, False, state))

        signum = stop.poll(accelerator) if (stop is not None and step < total_steps) else None
        if signum:  # SIGTERM / SIGINT: checkpoint this step boundary, mark the run interrupted, stop
            name = signal_name(signum)
            msg = f"interrupted by {name} at step {step}/{total_steps}; continue with --resume"
            if rank0:
                if not saved_now:
                    state = _trainer_state(step, optimizer, scheduler, model, cfg, world)
                    if writer is not None:
                        writer.flush()
                    _save_checkpoint(store, plan, cfg, model, tokenizer, step, False, state)
                if writer is not None:
                    writer.flush()
                _mark(store, plan.run_id, status=INTERRUPTED, error=msg)
            accelerator.wait_for_everyone()
            raise Interrupted(f"run {plan.run_id} {msg}", signum, step, plan.run_id)

    accelerator.wait_for_everyone()
    result: dict[str, Any] = {"steps": total_steps, "final_losses": last_losses, "n_train": len(train),
                              "examples_per_step": per_step}
    if cfg.stage == "task":
        result["poison"] = _poison_seen(train_items, train, stream, total_steps * per_step, cfg.poison)
    if rank0:
        post = defense.post_train(ctx)
        extra_meta = {}
        if post is not None:
            result[cfg.defense] = post
            extra_meta[cfg.defense] = {k: v for k, v in post.items() if k != "layers"}
            after = eval_alignment()
            log(total_steps, {f"{k}_post_{cfg.defense}": v for k, v in after.items()})
            result["final_losses_post_defense"] = after
        if writer is not None:
            writer.flush()
        final = _save_checkpoint(store, plan, cfg, model, tokenizer, total_steps, True, None, extra_meta)
        checkpoints.append(final)
        from spt.store.models import Run

        with store.session() as s:
            run = s.get(Run, plan.run_id)
            conf = dict(run.config or {})
        conf["result"] = result
        _mark(store, plan.run_id, status="done", error=None, finished_at=utcnow(), config=conf)
    accelerator.wait_for_everyone()
    ck_rows = _all_checkpoints(store, plan.run_id) if rank0 else checkpoints
    return {"run_id": plan.run_id, "status": "done", "reused": False, "kind": plan.kind, "rank": rank,
            "resumed_from_step": start_step or None, "steps": total_steps, "final_losses": last_losses,
            "checkpoints": ck_rows, **({cfg.defense: result[cfg.defense]} if cfg.defense in result else {})}


def _poison_seen(items: list[dict], encoded: list[Any], stream: _Stream, positions: int,
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


def _all_checkpoints(store: Any, run_id: str) -> list[dict]:
    from sqlmodel import col, select

    from spt.store.models import Checkpoint

    with store.session() as s:
        cks = s.exec(select(Checkpoint).where(Checkpoint.run_id == run_id)
                     .order_by(col(Checkpoint.step), col(Checkpoint.created_at))).all()
    return [{"id": c.id, "step": c.step, "kind": c.kind, "path": c.path, "is_final": c.is_final,
             "content_hash": c.content_hash} for c in cks]


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None
