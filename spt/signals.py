"""Stopping long work cleanly on SIGTERM / SIGINT (Slurm preemption, Ctrl-C): training and judging.

`StopOnSignal` turns the signal into a flag that the work polls at its own safe points: `spt judge`
stops starting calls and stores the replies in flight; training stops at a step boundary as below.

While `finetune` trains, a SIGTERM or SIGINT only sets a flag. At the next step boundary the loop
saves a resumable checkpoint (weights, optimizer, scheduler, RNG state and step), marks the run
`interrupted` and raises `Interrupted` (an `SptError` whose exit code is 128 + the signal number, so
the CLI exits 143 for SIGTERM and 130 for SIGINT). `finetune(..., FinetuneConfig(resume=True))` /
`spt finetune --resume` continues it and ends with the weights of an uninterrupted run. A second
SIGINT while waiting for the step boundary aborts at once (KeyboardInterrupt).

Under `accelerate launch`, every process polls the flag at each step boundary and the processes agree
(a max over ranks), so all of them stop after the same step.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from spt.errors import SptError

INTERRUPTED = "interrupted"  # the run status of a run stopped by a signal (resumable)
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(SptError):
    """Training stopped by a signal after saving a resumable checkpoint; the run is `interrupted`."""

    def __init__(self, message: str, signum: int, step: int, run_id: str):
        super().__init__(message)
        self.signum, self.step, self.run_id = signum, step, run_id
        self.exit_code = 128 + int(signum)


class StopOnSignal:
    """Context manager: SIGTERM/SIGINT set `signum` instead of killing the process (main thread only)."""

    def __init__(self, signals: tuple[int, ...] = SIGNALS):
        self.signals = signals
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: do not wait for the step boundary
        self.signum = signum

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()

    def poll(self, accelerator: Any = None) -> int | None:
        """The signal to stop for, agreed across processes (None: keep training)."""
        mine = int(self.signum or 0)
        if accelerator is not None and accelerator.num_processes > 1:
            import torch
            import torch.distributed as dist

            t = torch.tensor([mine], device=accelerator.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            mine = int(t.item())
        return mine or None


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
