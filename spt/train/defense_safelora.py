"""`safelora`: after training, project LoRA updates onto the alignment subspace (IBM/SafeLoRA, defenses.md §6).

For every LoRA-adapted module i the alignment matrix is V_i = W_aligned − W_base, taken from the
run's lineage: the parent run (`--from`, an `align` run) holds the aligned weights, and its own
starting weights are the base. When the aligned run is itself a LoRA adapter, V_i = s_a·B_a·A_a
(rank ≤ r_a): a much narrower subspace than the chat-minus-base delta of the paper; the run records
this (`aligned_delta: lora`).

Projection (`safelora_mode`):
- `exact` (default): P_i = U Uᵀ, U the left singular vectors of V_i (numerical rank), an orthogonal
  projector (idempotent, never lengthens an update);
- `paper`: C_i = V_i V_iᵀ / ‖V_i‖_F as in the authors' code (not idempotent).
Similarity s_i = cos(vec(P ΔW_i), vec(ΔW_i)) from r×r products (ΔW_i = s·B·A is never formed);
modules with s_i < τ (= --lam, default 0.5) get B_i ← P_i B_i; lora_A and the scaling are untouched.
Modules are matched to V by full name, never by order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from spt.errors import SptError
from spt.train.defense_base import Defense, register

_PEFT_PREFIX = "base_model.model."


def _strip(name: str) -> str:
    return name[len(_PEFT_PREFIX):] if name.startswith(_PEFT_PREFIX) else name


class TensorReader:
    """Lazy reads of named tensors from a model directory's safetensors (single file or sharded)."""

    def __init__(self, directory: str | Path):
        d = Path(directory)
        idx = d / "model.safetensors.index.json"
        if idx.exists():
            wm = json.loads(idx.read_text())["weight_map"]
            self.files = {k: d / v for k, v in wm.items()}
        else:
            from safetensors import safe_open

            files = [d / "model.safetensors"] if (d / "model.safetensors").exists() else sorted(d.glob("*.safetensors"))
            if not files:
                raise SptError(f"{d} holds no safetensors weights (needed by safelora)")
            self.files = {}
            for f in files:
                with safe_open(str(f), framework="pt") as h:
                    for k in h.keys():
                        self.files[k] = f

    def get(self, key: str) -> Any | None:
        from safetensors import safe_open

        f = self.files.get(key)
        if f is None:
            return None
        with safe_open(str(f), framework="pt") as h:
            return h.get_tensor(key).float()


def adapter_deltas(adapter_dir: str | Path) -> dict[str, Any]:
    """{module name (no peft prefix): s·B·A} for a saved LoRA adapter directory."""
    import torch
    from safetensors.torch import load_file

    d = Path(adapter_dir)
    cfg = json.loads((d / "adapter_config.json").read_text())
    r, alpha = cfg["r"], cfg["lora_alpha"]
    s = alpha / (r ** 0.5) if cfg.get("use_rslora") else alpha / r
    sd = load_file(str(d / "adapter_model.safetensors"))
    out: dict[str, Any] = {}
    for k, a in sd.items():
        if not k.endswith("lora_A.weight"):
            continue
        mod = _strip(k[: -len(".lora_A.weight")])
        b = sd.get(k.replace("lora_A.weight", "lora_B.weight"))
        if b is not None:
            out[mod] = s * (b.float() @ a.float()).to(torch.float32)
    return out


def projector_apply(V: Any, B: Any, mode: str) -> Any:
    """P·B (exact orthogonal projector onto span(V)) or C·B with C = V Vᵀ/‖V‖_F (paper)."""
    import torch

    V = V.float()
    B32 = B.float()
    if mode == "paper":
        return (V @ (V.t() @ B32)) / torch.linalg.norm(V)
    U, S, _ = torch.linalg.svd(V, full_matrices=False)
    keep = S > (S.max() * 1e-6 if S.numel() else 0)
    U = U[:, keep]
    return U @ (U.t() @ B32)


def similarity(B: Any, PB: Any, A: Any) -> float:
    """cos(vec(P·B·A), vec(B·A)) from r×r Gram matrices."""
    import torch

    G = A.float() @ A.float().t()
    B = B.float()
    num = ((B.t() @ PB) * G).sum()
    den = torch.sqrt(((PB.t() @ PB) * G).sum().clamp_min(0)) * torch.sqrt(((B.t() @ B) * G).sum().clamp_min(0))
    if float(den) <= 0:
        return 1.0
    return float(num / den)


def project_lora(model: Any, deltas: dict[str, Any], tau: float, mode: str = "exact") -> dict[str, Any]:
    """Project the LoRA B of every module with similarity below τ in place; return the record."""
    import torch

    from spt.train.defense_proximal import lora_modules

    layers = []
    missing = []
    with torch.no_grad():
        for name, mod, adapter in lora_modules(model):
            key = _strip(name)
            V = deltas.get(key)
            if V is None or float(torch.linalg.norm(V)) == 0.0:
                missing.append(key)
                continue
            A = mod.lora_A[adapter].weight
            B = mod.lora_B[adapter].weight
            if tuple(V.shape) != (B.shape[0], A.shape[1]):
                raise SptError(f"safelora: aligned delta of {key} has shape {tuple(V.shape)}, the adapter "
                               f"{(B.shape[0], A.shape[1])}; the lineage does not match this model")
            PB = projector_apply(V.to(B.device), B, mode)
            s = similarity(B, PB, A)
            projected = s < tau
            if projected:
                B.copy_(PB.to(B.dtype))
            layers.append({"module": key, "similarity": round(s, 6), "projected": bool(projected)})
    if not layers:
        raise SptError("safelora: no LoRA module has an alignment delta in the lineage; check --lora-targets "
                       "against the aligned run's changed modules")
    return {
        "mode": mode, "tau": tau, "n_modules": len(layers),
        "n_projected": sum(1 for x in layers if x["projected"]),
        "projected": [x["module"] for x in layers if x["projected"]],
        "layers": layers, "modules_without_delta": missing,
    }


def aligned_deltas(parent_final: Any, parent_start_path: str | None, module_names: list[str]) -> tuple[dict, str]:
    """V per module from the aligned run's final checkpoint (adapter: s·B·A; full: aligned − base)."""
    path = Path(parent_final.path)
    if (path / "adapter_config.json").exists():
        return adapter_deltas(path), "lora"
    if not parent_start_path:
        raise SptError("safelora: the aligned run does not record its starting weights; re-run the align stage")
    aligned, base = TensorReader(path), TensorReader(parent_start_path)
    out = {}
    for m in module_names:
        a, b = aligned.get(m + ".weight"), base.get(m + ".weight")
        if a is not None and b is not None:
            out[m] = a - b
    return out, "full"


@register
class SafeLoraDefense(Defense):
    name = "safelora"
    default_lam = 0.5
    lam_range = (-1.0, 1.0)
    lam_meaning = "similarity threshold τ: modules with cos(PΔW, ΔW) < τ are projected"

    @classmethod
    def validate_config(cls, config: Any) -> None:
        if not config.lora:
            raise SptError("safelora projects LoRA updates; it cannot run on a full fine-tune (drop --full)")
        if config.stage != "task":
            raise SptError("safelora needs --stage task from an aligned run (--from ALIGN_RUN)")

    @classmethod
    def validate_lineage(cls, config: Any, parent: Any | None) -> None:
        if parent is None or parent.kind != "align":
            raise SptError("safelora needs an aligned parent: pass --from RUN_ID of an `--stage align` run "
                           "(its weights minus its base define the alignment subspace)")

    def post_train(self, ctx: Any) -> dict[str, Any] | None:
        from spt.train.defense_proximal import lora_modules

        names = sorted({_strip(n) for n, _, _ in lora_modules(ctx.model)})
        deltas, kind = aligned_deltas(ctx.parent_final, ctx.parent_start_path, names)
        rec = project_lora(ctx.model, deltas, float(self.lam), self.config.safelora_mode)
        rec["aligned_delta"] = kind
        rec["aligned_checkpoint_id"] = ctx.parent_final.id
        return rec
