"""`lisa`: Lazy Safety Alignment, bi-state optimisation with a proximal term (git-disl/Lisa, defenses.md §3).

The task run alternates between an alignment state (K_a optimizer steps on HarmOR-train pairs:
harmful → refusal and benign look-alike → helpful answer; the task batch of those steps is not used)
and a fine-tune state (K_f steps on the task data), starting in the alignment state. Each state adds
(ρ/2)·‖θ − θ̃‖², θ̃ the trainable weights at the last switch of state (the end of the other state;
the start weights before the first switch), once more than `lisa_prox_after` of the run's steps are
done (the authors keep it off for the first 10%: it slows early convergence).

Steps are optimizer steps (the authors count micro-steps, which differ under gradient accumulation).
The state is a pure function of the step, and θ̃ is saved with every checkpoint, so a resumed run
continues exactly. Memory: one copy of the trainable parameters (the authors keep two; only the other
state's anchor is ever used). Under LoRA the norm runs over the LoRA factors, as in the authors' code.

Defaults: ρ = λ = 1 (`lisa_poison_ratio.sh`). K_a/K_f keep the authors' 1:9 split (100/900 steps) but
scale the cycle to the run when not given, as SafeTuneBed does: cycle = min(1000, max(2, T/2)) steps
for a run of T steps, K_a = max(1, round(cycle/10)), K_f = cycle − K_a (so a short run still switches).
"""

from __future__ import annotations

import math
from typing import Any

from spt.train.defenses.base import Batch, Defense, Option
from spt.train.defenses.proximal import sq_distance

ALIGN, TASK = "align", "task"
SAFETY_SALT = 11


def cycle_steps(total_steps: int, k_align: int | None, k_task: int | None) -> tuple[int, int]:
    """(K_a, K_f) with the defaults filled in for a run of `total_steps` optimizer steps."""
    if k_align and k_task:
        return int(k_align), int(k_task)
    if k_align:
        return int(k_align), 9 * int(k_align)
    if k_task:
        return max(1, round(int(k_task) / 9)), int(k_task)
    cycle = min(1000, max(2, total_steps // 2))
    ka = max(1, round(cycle / 10))
    return ka, max(1, cycle - ka)


def state_at(step: int, k_align: int, k_task: int) -> str:
    """The state of optimizer step `step` (1-based): the first K_a steps of every cycle align."""
    return ALIGN if (step - 1) % (k_align + k_task) < k_align else TASK


class LisaDefense(Defense):
    name = "lisa"
    summary = "alternate K_a alignment steps on HarmOR train and K_f task steps, each pulled toward the other state"
    paper = "Lisa (Huang et al., NeurIPS'24; git-disl/Lisa)"
    lam = Option("lam", "float", 1.0, "ρ: strength of the proximal term (ρ/2)·‖θ − θ̃_other‖²",
                 range=(0.0, math.inf), field="lam", paper="ρ=1 in lisa_poison_ratio.sh; 0.01 in Booster's baseline")
    options = (
        Option("align_steps", "int", None, "K_a: optimizer steps per alignment state (default: a tenth of "
               "the cycle, see the module docs)", range=(1, 1 << 30), paper="--alignment_step 100"),
        Option("task_steps", "int", None, "K_f: optimizer steps per fine-tune state (default: nine tenths "
               "of the cycle)", range=(1, 1 << 30), paper="--finetune_step 900"),
        Option("prox_after", "float", 0.1, "fraction of the run's steps before the proximal term switches on",
               range=(0.0, 1.0), paper="steps > 0.1·T in LisaTrainer"),
    )

    def setup(self, ctx: Any) -> None:
        self.k_align, self.k_task = cycle_steps(ctx.total_steps, self.opts["align_steps"], self.opts["task_steps"])
        self.prox_from = float(self.opts["prox_after"]) * ctx.total_steps
        self.params = ctx.trainable()
        start = ctx.start_state()
        self.anchor = {n: start[n].detach().clone() for n, _ in self.params}
        self.anchor_step = 0
        self.steps = {ALIGN: 0, TASK: 0}
        self.switches = 0
        ctx.safety_pairs()  # fail before the first step when the safety data has no pairs

    def state(self, step: int) -> str:
        return state_at(step, self.k_align, self.k_task)

    def batches(self, ctx: Any, step: int, micro: list[list[Any]]) -> list[Batch]:
        if self.state(step) == TASK:
            return super().batches(ctx, step, micro)
        pairs = ctx.safety_pairs()
        out: list[list[Any]] = []
        for m, ex in enumerate(micro):  # an alignment batch as large as the task batch it replaces
            k = max(1, (len(ex) + 1) // 2)
            sx: list[Any] = []
            for i in ctx.sample(len(pairs), step, m, k, SAFETY_SALT):
                sx += list(pairs[i])
            out.append(sx)
        w = 1.0 / max(1, sum(e.n_completion for sx in out for e in sx))
        return [Batch(sx, [w] * len(sx), groups=[1] * len(sx)) for sx in out]

    def extra_loss(self, ctx: Any, step: int) -> Any | None:
        if not self.lam_value or step <= self.prox_from:
            return None
        return 0.5 * float(self.lam_value) * sq_distance([(p, self.anchor[n]) for n, p in self.params])

    def after_step(self, ctx: Any, step: int) -> None:
        import torch

        self.steps[self.state(step)] += 1
        if step < ctx.total_steps and self.state(step + 1) != self.state(step):  # its last iterate anchors the next
            with torch.no_grad():
                for n, p in self.params:
                    self.anchor[n].copy_(p.detach())
            self.anchor_step = step
            self.switches += 1

    def log_values(self) -> dict[str, float]:
        return {"lisa_align_steps_done": float(self.steps[ALIGN]), "lisa_task_steps_done": float(self.steps[TASK])}

    def state_dict(self) -> dict[str, Any]:
        st: dict[str, Any] = {"anchor_step": self.anchor_step, "switches": self.switches,
                              "steps_align": self.steps[ALIGN], "steps_task": self.steps[TASK]}
        if self.anchor_step:  # before the first switch the anchor is the start weights (rebuilt on resume)
            st["anchor"] = {n: t.detach().cpu().clone() for n, t in self.anchor.items()}
        return st

    def load_state_dict(self, state: dict[str, Any]) -> None:
        import torch

        self.anchor_step = int(state.get("anchor_step", 0))
        self.switches = int(state.get("switches", 0))
        self.steps = {ALIGN: int(state.get("steps_align", 0)), TASK: int(state.get("steps_task", 0))}
        with torch.no_grad():
            for n, t in (state.get("anchor") or {}).items():
                self.anchor[n].copy_(t.to(self.anchor[n].device))

    def post_train(self, ctx: Any) -> dict[str, Any] | None:
        return {"align_steps": self.k_align, "task_steps": self.k_task, "rho": self.lam_value,
                "prox_from_step": math.floor(self.prox_from) + 1, "steps_align": self.steps[ALIGN],
                "steps_task": self.steps[TASK], "switches": self.switches}
