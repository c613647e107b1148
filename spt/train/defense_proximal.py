"""`proximal`: alignment-parameter constraint, L = L_task + (λ/2)·‖θ − θ_start‖².

Full fine-tuning: the squared distance of every trainable parameter to a snapshot taken before the
first step. LoRA: the starting weights are the frozen base, so the deviation of an adapted linear
layer is ΔW = s·B·A and ‖ΔW‖²_F = s²·Σ((BᵀB) ⊙ (AAᵀ)) from two r×r Gram matrices; ΔW itself is never
materialised (defenses.md §2a).
"""

from __future__ import annotations

from typing import Any

from spt.train.defense_base import Defense, register


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


@register
class ProximalDefense(Defense):
    name = "proximal"
    default_lam = 0.1
    lam_range = (0.0, float("inf"))
    lam_meaning = "strength of the pull back to the starting (aligned) weights"

    def setup(self, ctx: Any) -> None:
        model = ctx.model
        self.lora = bool(ctx.config.lora)
        if self.lora:
            self.modules = lora_modules(model)
            if not self.modules:
                from spt.errors import SptError

                raise SptError("proximal: the model has no LoRA layers; check --lora-targets")
        else:
            self.anchor = [(p, p.detach().clone()) for p in model.parameters() if p.requires_grad]

    def penalty(self, model: Any) -> Any:
        """Σ‖θ − θ_start‖² over trainable parameters (LoRA: Σ‖ΔW‖²)."""
        if self.lora:
            return sum(lora_delta_sq_norm(m, a) for _, m, a in self.modules)
        return sum(((p - p0) ** 2).sum() for p, p0 in self.anchor)

    def extra_loss(self, model: Any) -> Any | None:
        if not self.lam:
            return None
        return 0.5 * float(self.lam) * self.penalty(model)
