"""`spt merge`: fold a LoRA adapter checkpoint into full weights, recorded as a `merged` checkpoint.

The merged directory holds the weights (in the requested dtype), the tokenizer and its chat template,
so `spt.models.load_model(path)` loads it like any model directory. The new checkpoint belongs to the
same run (same step), with the source checkpoint id, base and adapter hashes in its meta. Merging the
same checkpoint to the same dtype and place again returns the existing checkpoint.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from spt.errors import SptError
from spt.store import queries

DTYPES = ("float32", "bfloat16", "float16")


def _pick_checkpoint(store: Any, run_id: str, checkpoint_id: str | None) -> tuple[Any, Any]:

    from spt.runs import resolve_run
    from spt.store.models import Checkpoint

    run = resolve_run(store, run_id)
    with store.session() as s:
        if checkpoint_id:
            ck = s.get(Checkpoint, checkpoint_id)
            if ck is None:
                found = [c for c in queries.checkpoint_by_prefix(s, checkpoint_id, limit=50) if c.run_id == run.id]
                ck = found[0] if len(found) == 1 else None
            if ck is None or ck.run_id != run.id:
                raise SptError(f"run {run.id} has no checkpoint {checkpoint_id!r}; see `spt runs show {run.id}`")
        else:
            ck = queries.final_checkpoint(s, run.id)
            if ck is None:
                raise SptError(f"run {run.id} has no final checkpoint (status {run.status}); pass `checkpoint` ID")
    if ck.kind != "adapter":
        raise SptError(f"checkpoint {ck.id} holds {ck.kind} weights, not a LoRA adapter; nothing to merge")
    if not (Path(ck.path) / "adapter_config.json").exists():
        raise SptError(f"checkpoint directory {ck.path} is missing; cannot merge")
    return run, ck


def merge_run(store: Any, run_id: str, checkpoint_id: str | None = None, out: str | Path | None = None,
              dtype: str = "float32") -> dict[str, Any]:
    """Merge a run's adapter checkpoint (default: the final one); returns the merged checkpoint as a dict."""

    from spt.models.load import adapter_base_path
    from spt.paths import artifacts_dir
    from spt.store import new_id
    from spt.store.models import Checkpoint

    if dtype not in DTYPES:
        raise SptError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    run, ck = _pick_checkpoint(store, run_id, checkpoint_id)
    target = (Path(out).expanduser().resolve() if out
              else artifacts_dir(store.path) / run.id / f"merged-{ck.id[-12:]}-{dtype}")
    with store.session() as s:
        existing = [c for c in queries.checkpoints(s, run.id, kind="merged")
                    if (c.meta or {}).get("source_checkpoint_id") == ck.id and (c.meta or {}).get("dtype") == dtype
                    and Path(c.path) == target and (target / "config.json").exists()]
    if existing:
        return {**_row(existing[0]), "reused": True}
    if out and target.exists() and any(target.iterdir()):
        raise SptError(f"`out` {target} exists and is not empty; choose a new directory")

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from spt.models import chat_template_hash, load_tokenizer
    from spt.models.fingerprint import weights_id
    from spt.models.load import quiet_transformers

    quiet_transformers()
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass
    base_path = adapter_base_path(ck.path)
    if not Path(base_path).exists():
        raise SptError(f"the adapter's base weights {base_path} are missing; cannot merge")
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, ck.path).merge_and_unload()
    merged = merged.to(getattr(torch, dtype))
    merged.config.dtype = dtype
    tok = load_tokenizer(ck.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    from spt.tmpfiles import remove_stale, tmp_name

    remove_stale(target)  # copies left by merges that were killed
    tmp = tmp_name(target)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        merged.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed or interrupted merge leaves no half copy
        raise
    meta = {"source_checkpoint_id": ck.id, "dtype": dtype, "base_path": base_path,
            "base_hash": (ck.meta or {}).get("base_hash") or weights_id(base_path),
            "adapter_hash": ck.content_hash, "chat_template_hash": chat_template_hash(tok)}
    row = Checkpoint(id=new_id(), run_id=run.id, step=ck.step, kind="merged", path=str(target),
                     content_hash=weights_id(target), is_final=False, meta=meta)
    with store.write() as s:
        s.add(row)
    return {**_row(row), "reused": False}


def _row(c: Any) -> dict[str, Any]:
    return {"checkpoint_id": c.id, "run_id": c.run_id, "step": c.step, "kind": c.kind, "path": c.path,
            "content_hash": c.content_hash, "meta": c.meta}
