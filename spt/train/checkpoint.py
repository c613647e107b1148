"""Checkpoints of a training run: save (atomic rename, then the store row), trainer state for an exact
resume (loaded `weights_only`), the content hash of weights, leftovers of killed attempts, and the run
row updates that end a run (which release its lease).
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

from spt.errors import SptError
from spt.models.fingerprint import weights_id
from spt.signals import INTERRUPTED
from spt.store import queries
from spt.tmpfiles import pid_alive

STATE_FILE = "trainer_state.pt"


def ckpt_dir_name(step: int, final: bool) -> str:
    return "final" if final else f"step-{step:06d}"


def save_checkpoint(store: Any, plan: Any, cfg: Any, model: Any, tokenizer: Any, step: int,
                     final: bool, state: dict | None, extra_meta: dict | None = None) -> dict:
    import torch

    from spt.models import chat_template_hash
    from spt.paths import artifacts_dir
    from spt.store import new_id
    from spt.store.models import Checkpoint

    run_dir = artifacts_dir(store.path) / plan.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / ckpt_dir_name(step, final)
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
                    content_hash=weights_id(target), is_final=final, meta=meta)
    with store.write() as s:
        s.add(ck)
    return ck.model_dump()


def mark(store: Any, run_id: str, **fields: Any) -> None:
    """Set the run's fields; ending the run (done, failed, interrupted) releases this process's lease."""
    from spt.store.lease import my_owner
    from spt.store.models import Run, utcnow

    with store.write() as s:
        row = s.get(Run, run_id)
        if row is None:
            return
        status = fields.pop("status", None)
        if status is not None:
            queries.set_status(s, row, status, error=fields.pop("error", row.error),
                               finished=bool(fields.get("finished_at")) or None)
        for k, v in fields.items():
            setattr(row, k, v)
        if status in ("done", "failed", INTERRUPTED) and row.lease_owner == my_owner():
            row.lease_owner = row.lease_heartbeat = None
        row.updated_at = utcnow()
        s.add(row)


def trainer_state(step: int, optimizer: Any, scheduler: Any, model: Any, cfg: Any, world: int,
                  defense_state: dict | None = None) -> dict:
    """Everything a resumed run needs to continue exactly (tensors, numbers, tuples: loadable weights_only)."""
    import torch

    state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                     "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
             "world_size": world}
    if cfg.lora:
        state["trainable"] = {k: v.detach().cpu().clone() for k, v in model.named_parameters() if v.requires_grad}
    if defense_state:
        state["defense"] = defense_state
    return state


def load_state(ck: dict) -> dict:
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
                       "start a fresh run without `resume`")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError) as e:
        raise SptError(f"trainer state {path} holds more than tensors and plain values "
                       f"({str(e).splitlines()[0][:120]}); refusing to load it") from None


def clean_run_dir(store: Any, run_id: str) -> list[str]:
    """Remove what a killed attempt left in the run's folder: temporary copies whose writer is gone,
    and checkpoint folders renamed into place without their store row (the kill fell in between)."""

    from spt.paths import artifacts_dir

    run_dir = artifacts_dir(store.path) / run_id
    if not run_dir.is_dir():
        return []
    with store.session() as s:
        known = {Path(c.path).name for c in queries.checkpoints(s, run_id)}
    removed = []
    for d in run_dir.iterdir():
        if not d.is_dir():
            continue
        tmp_pid = d.name.rpartition(".tmp-")[2] if ".tmp-" in d.name else None
        if tmp_pid is not None:
            if tmp_pid.isdigit() and pid_alive(int(tmp_pid)) and int(tmp_pid) != os.getpid():
                continue  # another live process is still writing it
        elif d.name in known or not (d.name == "final" or d.name.startswith("step-")):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d.name)
    return removed
