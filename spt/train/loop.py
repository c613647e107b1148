"""`spt finetune` as a library call: plan on rank 0, broadcast, train under a lease and signal handling.

The parts live beside this module: `plan` (settings, lineage, identity, the run row and its lease),
`checkpoint` (save, resume state, weights hash, leftovers), `steps` (data, model and the step loop with
the defense hooks), `context` (what defenses see) and `defenses/` (one module per defense).
"""

from __future__ import annotations

from typing import Any

from spt.errors import SptError
from spt.progress import ProgressFn
from spt.signals import Interrupted, StopOnSignal
from spt.train.checkpoint import STATE_FILE, mark
from spt.train.config import FinetuneConfig
from spt.train.context import TrainContext
from spt.train.plan import ALGO_VERSION, LeaseHeld, Plan, plan_run, provenance
from spt.train.result import FinetuneResult, reused_result

__all__ = ["ALGO_VERSION", "STATE_FILE", "LeaseHeld", "Plan", "TrainContext", "finetune", "plan_run", "provenance"]


def _broadcast(obj: Any, accelerator: Any) -> Any:
    if accelerator.num_processes == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _fresh_precision() -> None:
    """Forget a mixed precision another library left in accelerate's process-wide state.

    accelerate keeps one `AcceleratorState` per process: a TRL or transformers Trainer created earlier in
    the same process (a notebook, a test) leaves e.g. bf16 there, and every later `Accelerator()` trains
    in it. spt trains in the precision its run identity records (float32 weights, no autocast), so a
    single-process state with another precision is reset; under `accelerate launch` it is left alone.
    """
    from accelerate.state import AcceleratorState

    st = AcceleratorState._shared_state
    if st.get("_mixed_precision") not in (None, "no") and st.get("num_processes", 1) == 1:
        AcceleratorState._reset_state(reset_partial_state=True)


def finetune(store: Any, config: FinetuneConfig, progress: ProgressFn | None = None) -> FinetuneResult:
    """Run (or resume, or report) one fine-tuning run: the run, its checkpoints and final losses.

    `progress` gets one `Progress("train", step, total_steps, "steps")` per optimizer step (with the
    logged losses on logging steps).

    Under `accelerate launch` every process calls this; rank 0 plans, writes and reports.
    """
    import torch
    from accelerate import Accelerator

    _fresh_precision()
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="no")
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
        return reused_result(store, plan.run_id)
    try:
        with StopOnSignal() as stop, _heartbeat(store, plan.run_id, rank0):
            from spt.train.methods import uses_own_loop

            if uses_own_loop(FinetuneConfig(**plan.config)):
                if world > 1:
                    raise SptError("GRPO runs in one process here; launch it without `accelerate launch`")
                from spt.train.grpo import train_grpo

                return train_grpo(store, plan, progress, stop)
            from spt.train.steps import train

            return train(store, plan, accelerator, progress, stop)
    except Interrupted:
        raise  # the run is already marked interrupted, with a resumable checkpoint
    except BaseException as e:
        if rank0:
            err = f"{type(e).__name__}: {e}".strip()
            try:
                mark(store, plan.run_id, status="failed", error=err.splitlines()[0][:500] if err else "failed")
            except Exception:  # noqa: BLE001 - never mask the original error
                pass
        raise


def _heartbeat(store: Any, run_id: str, rank0: bool) -> Any:
    """Rank 0 renews the run's lease while it trains (see spt.store.lease)."""
    from spt.store.lease import Heartbeat

    return Heartbeat(store, run_id) if rank0 else _nullcontext()


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None

