"""Planning a run before training: validate the settings and the lineage, build the data, compute the
run identity, and create (or find, or adopt for a resume) the run row under this process's lease.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError

from spt.errors import SptError
from spt.models.fingerprint import weights_id
from spt.signals import INTERRUPTED
from spt.store import queries
from spt.train.config import DEFAULT_POISON, FinetuneConfig

ALGO_VERSION = 1


class LeaseHeld(SptError):
    """Another live process holds the lease of the run with these settings (it is being trained now)."""

    def __init__(self, message: str, holder_run_id: str):
        super().__init__(message)
        self.holder_run_id = holder_run_id


def provenance(device: str, dtype: str, seed: int, world: int) -> dict[str, Any]:
    """The run's provenance (`spt.provenance`) with what training adds: device, dtype, seeds, processes."""
    from spt.provenance import provenance as common

    return common(device=device, dtype=dtype, seeds={"seed": seed, "data": seed, "lora_init": seed}, world_size=world)


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
        raise SptError(f"`lora_targets` {', '.join(missing)} match no linear layer of this model; "
                       f"available: {', '.join(leaves)}")


def _parent_run(store: Any, run_ref: str) -> tuple[Any, Any]:

    from spt.runs import resolve_run

    parent = resolve_run(store, run_ref)
    if parent.status != "done":
        raise SptError(f"`from_run` run {parent.id} is {parent.status}"
                       + (f" ({parent.error})" if parent.error else "")
                       + "; start from a finished run (resume it with `resume`, or pick another)")
    with store.session() as s:
        ck = queries.final_checkpoint(s, parent.id)
    if ck is None or not Path(ck.path).exists():
        raise SptError(f"`from_run` run {parent.id} has no final checkpoint on disk; re-run it")
    return parent, ck


_MODULE_NAME = re.compile(r"[A-Za-z_][\w.]*")


def preflight(store: Any, config: FinetuneConfig) -> FinetuneConfig:
    """Every check that needs no model in memory and no torch: settings, model reference, LoRA target
    spelling and dataset names (stored or built-in), so a typo is one line before minutes of loading.

    Returns the resolved config. `plan_run` repeats what it needs with the loaded model (layer names)."""
    from spt.models.resolve import check_model_ref
    from spt.train import data as tdata

    cfg = config.resolve()
    if not cfg.from_run:
        check_model_ref(cfg.model)
    else:
        _parent_run(store, cfg.from_run)
    if cfg.lora:
        bad = [t for t in cfg.lora_targets if not _MODULE_NAME.fullmatch(t)]
        if bad:
            raise SptError(f"`lora_targets` {bad[0]!r} is not a module name; name linear layers such as "
                           "q_proj,v_proj")
    checks = [(cfg.safety_data, tdata.resolve_safety, ("harmor", "builtin:harmor", "builtin:harmor-reasoned"))]
    if cfg.stage in ("task", "reason"):
        checks.append((cfg.task, tdata.resolve_task, None))
    if cfg.alignment_data:
        checks.append((cfg.alignment_data, tdata.resolve_alignment, ("direct-refusal", "cot-refusal",
                                                                     "builtin:direct-refusal", "builtin:cot-refusal")))
    if cfg.stage == "task" and (cfg.poison > 0 or cfg.poison_data != DEFAULT_POISON):
        checks.append((cfg.poison_data, tdata.resolve_poison, None))
    for name, resolve, builtins in checks:
        is_builtin = name in builtins if builtins else name.startswith("builtin:")
        if not is_builtin:
            resolve(store, name, build=False)
    if getattr(cfg, "preferences", None):
        from spt.train.dpo import resolve_preferences

        resolve_preferences(store, cfg.preferences)
    return cfg


def plan_run(store: Any, config: FinetuneConfig, world: int = 1) -> Plan:
    """Validate everything, build data, compute the identity, and create or find the run row."""

    from spt.models import chat_template_hash, load_tokenizer, resolve_model
    from spt.store import content_id
    from spt.train import data as tdata
    from spt.train.defenses import get_defense

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
            start_path, start_hash = parent_ck.path, parent_ck.content_hash or weights_id(parent_ck.path)
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
        start_hash = weights_id(start_path)
        parent_start = None
    if cfg.lora:
        _check_lora_targets(start_path, cfg.lora_targets)

    safety_id = tdata.resolve_safety(store, cfg.safety_data, seed=0)
    task_id = poison_id = None
    if cfg.alignment_data:
        task_id = tdata.resolve_alignment(store, cfg.alignment_data, seed=0)  # what the align stage trains on
    if cfg.stage in ("task", "reason"):
        task_id = tdata.resolve_task(store, cfg.task, seed=0)
        if cfg.poison > 0:
            poison_id = tdata.resolve_poison(store, cfg.poison_data, seed=0)
    pref_id = None
    if getattr(cfg, "preferences", None):
        from spt.train.dpo import resolve_preferences

        pref_id = resolve_preferences(store, cfg.preferences).id
    tok_hash = chat_template_hash(load_tokenizer(start_path))

    ident_obj = {
        "algo": ALGO_VERSION, "start": start_hash, "stage": cfg.stage, "safety_dataset": safety_id,
        "train_dataset": task_id or safety_id, "poison_dataset": poison_id, "world_size": world,
        "chat_template": tok_hash, "settings": cfg.identity_fields(),
    }
    if pref_id is not None:  # only then: identities of every other run are unchanged
        ident_obj["preference_dataset"] = pref_id
        ident_obj["train_dataset"] = pref_id
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
                     "poison_dataset": poison_id, "world_size": world, "identity_inputs": ident_obj,
                     "preference_dataset": pref_id})
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

    from spt.store.lease import describe, is_stale, my_owner
    from spt.store.models import Run, utcnow

    owner, now = my_owner(), utcnow()
    with store.write() as s:  # BEGIN IMMEDIATE: planners of one store decide one at a time
        same = queries.runs_with_identity(s, identity, newest_first=True)
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
                queries.set_status(s, r, INTERRUPTED, error="lease expired; superseded by a new run", now=now)
        if adopt is not None:
            for ck in reversed(queries.checkpoints(s, adopt.id)):
                st = (ck.meta or {}).get("state_path")
                if st and Path(st).exists():
                    resume_ck = ck.model_dump()
                    break
            queries.set_status(s, adopt, "running", error=None, now=now)
            adopt.lease_owner, adopt.lease_heartbeat = owner, now
            adopt.config = resolved
            s.add(adopt)
            return Plan(config=cfg.to_dict(), run_id=adopt.id, resume_from=resume_ck, **common)
        s.flush()
        run = Run(kind=common["kind"], parent_run_id=parent.id if parent else None, model_ref=model_ref,
                  base_model=base_model, task=cfg.task if cfg.stage in ("task", "reason") else None,
                  defense=cfg.defense,
                  lam=cfg.lam, poison_ratio=cfg.poison if cfg.stage == "task" else None, seed=cfg.seed,
                  lora=cfg.lora, config=resolved, identity=identity, status="running", provenance=prov,
                  lease_owner=owner, lease_heartbeat=now)
        s.add(run)
    return Plan(config=cfg.to_dict(), run_id=run.id, **common)


