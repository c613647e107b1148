"""`proximal`: alignment-parameter constraint, L = L_task + (λ/2)·‖θ − θ_start‖² (L2-SP, defenses.md §2a).

θ_start is always the weights the run started from (the aligned parent for a task run), never the
weights of a resume checkpoint: a resumed run pulls toward the same point as an uninterrupted one.

Full fine-tuning: the squared distance of every trainable parameter to the start weights, read from
the start directory (`TrainContext.start_state`). LoRA: the starting weights are the frozen base, so the
deviation of an adapted linear layer is ΔW = s·B·A and ‖ΔW‖²_F = s²·Σ((BᵀB) ⊙ (AAᵀ)) from two r×r Gram
matrices; ΔW itself is never materialised.
"""

from __future__ import annotations

import math
from typing import Any

from spt.errors import SptError
from spt.train.defenses.base import Defense, Option


def lora_modules(model: Any) -> list[tuple[str, Any, str]]:
    """(name, module, adapter) for every LoRA-adapted layer with an active adapter."""
    out = []
    for name, mod in model.named_modules():
        a = getattr(mod, "lora_A", None)
        if a is None or not hasattr(mod, "scaling"):
            continue
        for adapter in a.keys():
            out.append((name, mod, adapter))
    return out


def lora_delta_sq_norm(mod: Any, adapter: str = "default") -> Any:
    """‖s·B·A‖²_F from the r×r products (differentiable)."""
    A = mod.lora_A[adapter].weight  # r × in
    B = mod.lora_B[adapter].weight  # out × r
    s = float(mod.scaling[adapter])
    return (s * s) * ((B.t() @ B) * (A @ A.t())).sum()


def sq_distance(params: list[tuple[Any, Any]]) -> Any:
    """Σ‖p − p0‖² over (parameter, anchor) pairs (differentiable in p)."""
    return sum(((p - p0) ** 2).sum() for p, p0 in params)


class ProximalDefense(Defense):
    name = "proximal"
    summary = "pull the weights back to the start (aligned) weights: + (λ/2)·‖θ − θ_start‖²"
    paper = "L2-SP (Li et al., ICML'18); the proximal term of Lisa (Huang et al., NeurIPS'24)"
    stages = ("align", "task")
    lam = Option("lam", "float", 0.1, "strength of the pull back to the starting (aligned) weights",
                 range=(0.0, math.inf), field="lam", paper="ρ=1 in Lisa, 0.01 in Booster's Lisa baseline")

    def setup(self, ctx: Any) -> None:
        self.lora = bool(ctx.config.lora)
        if self.lora:
            self.modules = lora_modules(ctx.model)
            if not self.modules:
                raise SptError("proximal: the model has no LoRA layers; check `lora_targets`")
        else:
            start = ctx.start_state()
            self.anchor = [(p, start[n]) for n, p in ctx.trainable()]

    def penalty(self) -> Any:
        """Σ‖θ − θ_start‖² over trainable parameters (LoRA: Σ‖ΔW‖²)."""
        if self.lora:
            return sum(lora_delta_sq_norm(m, a) for _, m, a in self.modules)
        return sq_distance(self.anchor)

    def extra_loss(self, ctx: Any, step: int) -> Any | None:
        if not self.lam_value:
            return None
        return 0.5 * float(self.lam_value) * self.penalty()
