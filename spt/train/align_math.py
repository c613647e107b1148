"""The math of the alignment-stage methods: Vaccine, Booster and DPO, independent of the training loop.

Each function takes closures (`loss_fn()` runs one forward and returns a scalar loss), so the same
code serves `spt finetune --stage align`, the tests (which compare it with a direct computation) and
the benchmark. None of them touches `.grad` except through the final `backward` the caller passes, so
they are correct under gradient accumulation (the authors' `model.zero_grad()` between passes is not,
defenses.md §0 item 3 and §12 item 1).

- Vaccine (defenses.md §4, git-disl/Vaccine `VaccineTrainer`): pass 1 takes the gradient of the loss
  with respect to the output of every attention module (before the residual add); the perturbation
  ε_ℓ = ρ·g_ℓ / (‖g‖ + 1e-7), normalised jointly over all layers in fp32, is added to those outputs in
  pass 2 as a constant, and the weights get the gradient of pass 2.
- Booster (defenses.md §5a, git-disl/Booster `BoosterAlignmentTrainer`): gradient
  ∇f(θ) + λ·[∇h(θ) − ∇h(θ − α·∇h/‖∇h‖)], the step direction treated as a constant (first order, as in
  the authors' code); weights are restored from an exact copy, not by adding the step back.
- DPO (defenses.md §9a, TRL `DPOTrainer` sigmoid loss): −log σ(β·[(log π(y_w) − log π_ref(y_w)) −
  (log π(y_l) − log π_ref(y_l))]), log-probs summed over completion tokens, mean over pairs.

torch is imported at module level: this module is only imported by the training code, never by
`spt/cli.py` (the plug-ins import it inside their hooks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spt.errors import SptError

NORM_EPS = 1e-7  # the authors' constant in both Vaccine and Booster


# ------------------------------------------------------------------------------------------- Vaccine
def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The self-attention module of every decoder layer, matched by class-name suffix `Attention`.

    git-disl/Vaccine matches the exact classes LlamaAttention/OPTAttention and silently degrades into SFT
    at twice the cost on other architectures (§12 item 2), so an empty match is an error here. Modules
    nested inside an already selected attention module (e.g. a rotary helper) are skipped.
    """
    found: list[tuple[str, nn.Module]] = []
    for name, mod in model.named_modules():
        cls = type(mod).__name__
        if not cls.endswith("Attention"):
            continue
        if any(name.startswith(p + ".") for p, _ in found):
            continue
        found.append((name, mod))
    if not found:
        raise SptError(f"vaccine: no attention module (class name ending in 'Attention') in "
                       f"{type(model).__name__}; this architecture is not supported")
    return [m for _, m in found]


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def _replace_first(out: Any, new: torch.Tensor) -> Any:
    return (new, *out[1:]) if isinstance(out, tuple) else new


class _Hooks:
    """Forward hooks on a list of modules, removed on exit even when the forward raises."""

    def __init__(self, modules: Sequence[nn.Module], fn: Callable[[int, Any], Any]):
        self.modules, self.fn, self.handles = modules, fn, []

    def __enter__(self) -> _Hooks:
        for i, m in enumerate(self.modules):
            self.handles.append(m.register_forward_hook(lambda _m, _i, out, i=i: self.fn(i, out)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def vaccine_perturbation(loss_fn: Callable[[], torch.Tensor], modules: Sequence[nn.Module],
                         rho: float) -> tuple[list[list[torch.Tensor]], dict[str, float]]:
    """Pass 1: ε_ℓ = ρ·g_ℓ/(‖g‖+1e-7) for each call of each module, with g_ℓ = ∂L/∂(attention output ℓ).

    A zero tensor that requires grad is added to every attention output, and `torch.autograd.grad` asks for
    the loss's gradient with respect to those zeros only: the weight-gradient GEMMs are skipped and `.grad`
    is not touched (GA-safe). Returns ε per module (a list per module: one entry per call in the forward)
    and stats (the clean loss, ‖g‖, ‖ε‖).
    """
    zeros: list[list[torch.Tensor]] = [[] for _ in modules]

    def add_zero(i: int, out: Any) -> Any:
        o = _first(out)
        z = torch.zeros_like(o, requires_grad=True)
        zeros[i].append(z)
        return _replace_first(out, o + z)

    with _Hooks(modules, add_zero):
        loss = loss_fn()
    flat = [z for zs in zeros for z in zs]
    if not flat:
        raise SptError("vaccine: the attention modules were not called in the forward pass")
    grads = torch.autograd.grad(loss, flat, allow_unused=True)
    grads = [torch.zeros_like(z) if g is None else g for z, g in zip(flat, grads, strict=True)]
    norm = torch.sqrt(sum(g.float().pow(2).sum() for g in grads))
    scale = float(rho) / (float(norm) + NORM_EPS)
    eps_flat = [(g.float() * scale).to(g.dtype) for g in grads]
    out: list[list[torch.Tensor]] = []
    k = 0
    for zs in zeros:
        out.append(eps_flat[k:k + len(zs)])
        k += len(zs)
    eps_norm = float(torch.sqrt(sum(e.float().pow(2).sum() for e in eps_flat)))
    return out, {"loss_clean": float(loss.detach()), "act_grad_norm": float(norm), "eps_norm": eps_norm}


def perturbed_forward(loss_fn: Callable[[], Any], modules: Sequence[nn.Module],
                      eps: list[list[torch.Tensor]]) -> Any:
    """Pass 2: run `loss_fn` with ε added (as a constant) to every attention output; returns its result."""
    calls = [0] * len(modules)

    def shift(i: int, out: Any) -> Any:
        j = calls[i]
        calls[i] += 1
        if j >= len(eps[i]):
            raise SptError("vaccine: the second pass called an attention module more often than the first")
        return _replace_first(out, _first(out) + eps[i][j])

    with _Hooks(modules, shift):
        return loss_fn()


def vaccine_step(loss_fn: Callable[[], torch.Tensor], modules: Sequence[nn.Module], rho: float,
                 backward: Callable[[torch.Tensor], None] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """One Vaccine micro-step: perturbation from pass 1, then backward of the perturbed loss (pass 2).

    `loss_fn` must be deterministic across the two calls (same batch; dropout makes the two passes see
    different masks, as in the authors' code). Returns the perturbed loss and stats.
    """
    eps, stats = vaccine_perturbation(loss_fn, modules, rho)
    loss = perturbed_forward(loss_fn, modules, eps)
    (backward or (lambda t: t.backward()))(loss)
    stats["loss_perturbed"] = float(loss.detach())
    return loss, stats


# ------------------------------------------------------------------------------------------- Booster
def booster_harm_delta(params: Sequence[torch.Tensor], harm_loss_fn: Callable[[], torch.Tensor],
                       alpha: float) -> tuple[list[torch.Tensor], dict[str, float]]:
    """∇h(θ) − ∇h(θ̃) with θ̃ = θ − α·∇h(θ)/‖∇h(θ)‖ (global norm over `params`, fp32), and h(θ), h(θ̃).

    Two passes on the harmful batch. The weights are moved in place and then restored from an exact copy
    (subtracting and adding the step back is not exact in low precision, §5a pitfalls). `.grad` is not
    touched. The difference h(θ) − h(θ̃) is the drop in harmful loss one normalised harmful step of size α
    achieves; Booster minimises it.
    """
    params = list(params)
    h0 = harm_loss_fn()
    g1 = torch.autograd.grad(h0, params, allow_unused=True)
    g1 = [torch.zeros_like(p) if g is None else g for p, g in zip(params, g1, strict=True)]
    norm = torch.sqrt(sum(g.float().pow(2).sum() for g in g1))
    step = float(alpha) / (float(norm) + NORM_EPS)
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            for p, g in zip(params, g1, strict=True):
                p.sub_((g.float() * step).to(p.dtype))
        h1 = harm_loss_fn()
        g2 = torch.autograd.grad(h1, params, allow_unused=True)
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)
    delta = [a - (torch.zeros_like(a) if b is None else b) for a, b in zip(g1, g2, strict=True)]
    stats = {"harm_loss": float(h0.detach()), "harm_loss_perturbed": float(h1.detach()),
             "harm_grad_norm": float(norm)}
    stats["harm_drop"] = stats["harm_loss"] - stats["harm_loss_perturbed"]
    return delta, stats


def add_to_grad_(params: Sequence[torch.Tensor], delta: Sequence[torch.Tensor], lam: float) -> None:
    """p.grad += λ·δ_p for every trainable parameter (creating .grad when a parameter has none yet)."""
    with torch.no_grad():
        for p, d in zip(params, delta, strict=True):
            if p.grad is None:
                p.grad = (float(lam) * d).to(p.dtype)
            else:
                p.grad.add_(d.to(p.grad.dtype), alpha=float(lam))


def booster_step(params: Sequence[torch.Tensor], align_loss_fn: Callable[[], torch.Tensor],
                 harm_loss_fn: Callable[[], torch.Tensor], lam: float, alpha: float,
                 backward: Callable[[torch.Tensor], None] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """One Booster step (GA = 1): harmful passes, alignment backward, then .grad += λ·(∇h(θ) − ∇h(θ̃)).

    Returns the alignment loss and stats, including the Booster objective f + λ·(h(θ) − h(θ̃)).
    """
    params = list(params)
    delta, stats = booster_harm_delta(params, harm_loss_fn, alpha)
    loss = align_loss_fn()
    (backward or (lambda t: t.backward()))(loss)
    add_to_grad_(params, delta, lam)
    stats["align_loss"] = float(loss.detach())
    stats["booster_objective"] = stats["align_loss"] + float(lam) * stats["harm_drop"]
    return loss, stats


# ------------------------------------------------------------------------------------------- DPO
def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1) -> tuple[torch.Tensor, dict[str, float]]:
    """Sigmoid DPO loss (mean over pairs) as TRL's `DPOTrainer` computes it, plus reward statistics."""
    chosen_lr = policy_chosen - ref_chosen.to(policy_chosen.dtype)
    rejected_lr = policy_rejected - ref_rejected.to(policy_rejected.dtype)
    per_pair = -F.logsigmoid(float(beta) * (chosen_lr - rejected_lr))
    rc, rr = (float(beta) * chosen_lr.detach()), (float(beta) * rejected_lr.detach())
    stats = {"dpo_loss": float(per_pair.detach().mean()), "reward_chosen": float(rc.mean()),
             "reward_rejected": float(rr.mean()), "reward_margin": float((rc - rr).mean()),
             "reward_accuracy": float((rc > rr).float().mean())}
    return per_pair.mean(), stats


def token_logps(model: Any, input_ids: torch.Tensor, position_ids: torch.Tensor, labels: torch.Tensor,
                chunk_elements: int = 1 << 24) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p of each completion token, its flat position), differentiable, on packed rows.

    Position t predicts labels[t+1] (as in `spt.train.loss.completion_loss`); only positions with a real
    next label are evaluated, and the head + log-softmax run in chunks under activation checkpointing so
    no full [tokens × vocab] block is kept for backward.
    """
    from torch.utils.checkpoint import checkpoint

    from spt.train.loss import completion_states

    head, h, y, flat = completion_states(model, input_ids, position_ids, labels)
    chunk = max(64, chunk_elements // max(head.weight.shape[0], 1))

    def _chunk(hc: torch.Tensor, yc: torch.Tensor) -> torch.Tensor:
        return -F.cross_entropy(head(hc).float(), yc, reduction="none")

    parts = []
    for s in range(0, h.shape[0], chunk):
        if torch.is_grad_enabled() and h.requires_grad:
            parts.append(checkpoint(_chunk, h[s:s + chunk], y[s:s + chunk], use_reentrant=False))
        else:
            parts.append(_chunk(h[s:s + chunk], y[s:s + chunk]))
    return (torch.cat(parts) if parts else h.new_zeros(0, dtype=torch.float32)), flat


def sequence_logps(model: Any, packed: Any, n_seq: int, device: Any = None) -> torch.Tensor:
    """Σ log p over each packed example's completion tokens ([n_seq], differentiable)."""
    dev = device if device is not None else next(model.parameters()).device
    lp, flat = token_logps(model, packed.input_ids.to(dev), packed.position_ids.to(dev), packed.labels.to(dev))
    seg = packed.seg.reshape(-1).to(dev)
    tgt_seg = torch.full_like(seg, -1)
    tgt_seg[:-1] = seg[1:]
    ex = tgt_seg.index_select(0, flat)
    return torch.zeros(n_seq, dtype=lp.dtype, device=dev).index_add(0, ex, lp)


def pair_logps(model: Any, chosen: Sequence[Any], rejected: Sequence[Any], pad_id: int,
               pack_length: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probs of the chosen and rejected encodings (`spt.train.packing.Encoded`),
    in one packed forward."""
    from spt.train.packing import pack

    allx = list(chosen) + list(rejected)
    lp = sequence_logps(model, pack(allx, pad_id, pack_length), len(allx))
    return lp[:len(chosen)], lp[len(chosen):]


def reference_pair_logps(model: Any, chosen: Sequence[Any], rejected: Sequence[Any], pad_id: int,
                         batch_pairs: int = 8, pack_length: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference log-probs of every pair, computed once up front (no grad, eval mode).

    With a LoRA (peft) model the reference is the same model with its adapter disabled, so no second copy
    of the weights is held (TRL does the same with `ref_model=None`). Without an adapter the reference is
    the model as it is now, i.e. before the first step: call this before training.
    """
    was_training = model.training
    model.eval()
    ctx = model.disable_adapter() if hasattr(model, "disable_adapter") and hasattr(model, "peft_config") \
        else _null()
    cs, rs = [], []
    try:
        with torch.no_grad(), ctx:
            for s in range(0, len(chosen), batch_pairs):
                c, r = pair_logps(model, chosen[s:s + batch_pairs], rejected[s:s + batch_pairs], pad_id, pack_length)
                cs.append(c.float().cpu())
                rs.append(r.float().cpu())
    finally:
        model.train(was_training)
    if not cs:
        return torch.zeros(0), torch.zeros(0)
    return torch.cat(cs), torch.cat(rs)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None
