"""`vaccine`: perturbation-aware alignment (Huang et al., NeurIPS'24; git-disl/Vaccine), alignment stage.

Every step on the alignment data runs two passes per micro-batch (defenses.md §4):

1. the gradient g_ℓ of the loss with respect to the output of each layer's self-attention module (before
   the residual add), by `torch.autograd.grad` on zero shifts, so no weight gradient is formed and
   `.grad` is untouched (correct under gradient accumulation, unlike the authors' `zero_grad`);
2. the same batch with ε_ℓ = ρ·g_ℓ / (‖g‖ + 1e-7) added as a constant to those outputs, ‖g‖ the joint
   norm over all layers in fp32; its gradient is the step's gradient.

So the aligned model is trained to keep refusing under a worst-case drift of its hidden embeddings, the
drift harmful fine-tuning causes later. ρ = 0 is plain SFT (bit for bit, at twice the cost). The task
stage afterwards is plain fine-tuning from the Vaccine-aligned parent. Logged per log step: the clean
and perturbed losses and ‖g‖. The attention modules are found by class-name suffix; none found is an
error (the authors' exact-class match silently degrades to SFT on non-Llama models, §12 item 2).
"""

from __future__ import annotations

import math
from typing import Any

from spt.train.defenses.base import Batch, Defense, LogWindow, Option, StepStats


class VaccineDefense(Defense):
    name = "vaccine"
    summary = "perturbation-aware alignment: train on attention outputs shifted by the worst-case ε, ‖ε‖ = ρ"
    paper = "Vaccine (Huang et al., NeurIPS'24), git-disl/Vaccine"
    stages = ("align",)
    lam = None
    options = (
        Option("rho", "float", 2.0, "norm ρ of the perturbation added to the attention outputs of all layers "
               "(joint L2 norm over layers); 0 is plain SFT", range=(0.0, math.inf),
               paper="ρ=2 in git-disl/Vaccine; 5 in the Booster repo, 0.1 in SafeTuneBed: sweep it"),
    )

    @classmethod
    def validate_config(cls, config: Any) -> None:
        if getattr(config, "compile", False):
            from spt.errors import SptError

            raise SptError("vaccine shifts attention outputs with forward hooks in each pass; run it without "
                           "`compile`")

    def setup(self, ctx: Any) -> None:
        from spt.train.align_math import attention_modules

        self.modules = attention_modules(ctx.model)
        self._win = LogWindow()

    def train_step(self, ctx: Any, step: int, batches: list[Batch]) -> StepStats | None:
        import contextlib

        from spt.train.align_math import perturbed_forward, vaccine_perturbation
        from spt.train.context import stats_add

        rho = float(self.opts["rho"])
        total = StepStats()
        pert = gnorm = 0.0
        no_sync = ctx.no_sync_fn or (lambda sync: contextlib.nullcontext())
        for i, b in enumerate(batches):
            last = i == len(batches) - 1
            seen: dict[str, Any] = {}

            def loss_fn(b: Batch = b, seen: dict[str, Any] = seen) -> Any:
                loss, ce, flat, pk = ctx.forward(b)
                seen.setdefault("clean", (ce, flat, pk))  # the first call is the unperturbed pass
                return loss

            with no_sync(False):  # pass 1: activation gradients only, never all-reduced
                eps, st = vaccine_perturbation(loss_fn, self.modules, rho)
            with no_sync(last):  # pass 2: the step's gradient
                loss = perturbed_forward(loss_fn, self.modules, eps)
                ctx.backward_fn(loss)
            ce, flat, pk = seen["clean"]
            s = StepStats(tokens=pk.n_tokens)
            stats_add(s, b, pk, ce, flat)  # the logged loss is the clean one (the model as it is)
            total.add(s)
            pert += float(loss.detach())
            gnorm += st["act_grad_norm"] / len(batches)
        # per step: the perturbed objective (sum over micro-batches of the step-normalised losses) and ‖g‖
        self._win.add_step({"vaccine_loss_perturbed": pert, "vaccine_act_grad_norm": gnorm})
        return total

    def log_values(self) -> dict[str, float]:
        return self._win.mean()
