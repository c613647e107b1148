"""`safelora`: after training, project LoRA updates toward the alignment subspace (IBM/SafeLoRA, defenses.md §6).

For every LoRA-adapted module i the alignment matrix is V_i = W_aligned − W_base, taken from the run's
lineage: the parent run (`--from`, an `align` run) holds the aligned weights, and its own starting
weights are the base. When the aligned run is itself a LoRA adapter, V_i = s_a·B_a·A_a (rank ≤ r_a): a
much narrower subspace than the chat-minus-base delta of the paper; the run records this
(`aligned_delta: lora`).

Projection (`safelora_mode`):
- `paper` (default): C_i = V_i V_iᵀ / ‖V_i‖_F as in the authors' code (not idempotent, not
  norm-preserving: it scales directions by σ_k²/‖V‖_F);
- `exact`: P_i = U Uᵀ, U the left singular vectors of V_i (numerical rank), an orthogonal projector.
  When V_i has full row rank (a full fine-tune alignment: d_out ≤ d_in) P_i is the identity and the
  projection does nothing: the run warns and records `projector_identity`.
Similarity s_i = cos(vec(C ΔW_i), vec(ΔW_i)) from r×r products (ΔW_i = s·B·A is never formed).
Selection (`safelora_select`):
- `number` (default, the authors' `select_layers_type="number"`): project the `safelora_layers`
  modules (default 10) with the lowest s_i (ties at the k-th value project too);
- `threshold`: project modules with s_i < τ (= --lam, default 0.5). Giving --lam without
  --safelora-select selects this mode, as recipes written before the selection existed expect.
Projected modules get B_i ← C_i B_i; lora_A and the scaling are untouched. Modules are matched to V
by full name, never by order. Recorded: per-module similarity, the relative change the projection
makes, which modules were projected, and a warning when the projection changes nothing.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from spt.errors import SptError
from spt.train.defenses.base import Defense, Option
from spt.train.defenses.proximal import lora_modules

_PEFT_PREFIX = "base_model.model."
NOOP_REL_CHANGE = 1e-3  # a projection that moves ΔW by less than this (relative) changes nothing


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


def projector_apply(V: Any, B: Any, mode: str) -> tuple[Any, bool]:
    """(P·B, P is the identity): P = C = V Vᵀ/‖V‖_F (paper) or the orthogonal projector onto span(V) (exact)."""
    import torch

    V = V.float()
    B32 = B.float()
    if mode == "paper":
        return (V @ (V.t() @ B32)) / torch.linalg.norm(V), False
    U, S, _ = torch.linalg.svd(V, full_matrices=False)
    keep = S > (S.max() * 1e-6 if S.numel() else 0)
    U = U[:, keep]
    return U @ (U.t() @ B32), int(keep.sum()) >= V.shape[0]


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


def rel_change(B: Any, PB: Any, A: Any) -> float:
    """‖P·B·A − B·A‖_F / ‖B·A‖_F from r×r Gram matrices (0: the projection leaves ΔW as it is)."""
    import torch

    G = A.float() @ A.float().t()
    D = PB.float() - B.float()
    num = ((D.t() @ D) * G).sum().clamp_min(0)
    den = ((B.float().t() @ B.float()) * G).sum().clamp_min(0)
    return 0.0 if float(den) <= 0 else float(torch.sqrt(num / den))


def select(sims: list[float], select_mode: str, k: int, tau: float) -> list[bool]:
    """Which modules to project: the k lowest similarities (ties at the k-th project too) or s < τ."""
    if select_mode == "threshold":
        return [s < tau for s in sims]
    if not sims or k <= 0:
        return [False] * len(sims)
    cut = sorted(sims)[min(k, len(sims)) - 1]
    return [s <= cut for s in sims]


def project_lora(model: Any, deltas: dict[str, Any], tau: float = 0.5, mode: str = "paper",
                 select_mode: str = "threshold", k: int = 10) -> dict[str, Any]:
    """Score every LoRA module once, pick the modules to project, project them in place; return the record."""
    import torch

    scored = []
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
            PB, ident = projector_apply(V.to(B.device), B, mode)
            scored.append((key, B, PB, similarity(B, PB, A), rel_change(B, PB, A), ident))
        if not scored:
            raise SptError("safelora: no LoRA module has an alignment delta in the lineage; check `lora_targets` "
                           "against the aligned run's changed modules")
        picks = select([s for _, _, _, s, _, _ in scored], select_mode, k, tau)
        layers = []
        for (key, B, PB, s, rc, ident), pick in zip(scored, picks, strict=True):
            if pick:
                B.copy_(PB.to(B.dtype))
            layers.append({"module": key, "similarity": round(s, 6), "rel_change": round(rc, 6),
                           "projector_identity": bool(ident), "projected": bool(pick)})
    projected = [x for x in layers if x["projected"]]
    noop = all(x["projector_identity"] or x["rel_change"] < NOOP_REL_CHANGE for x in projected)
    rec: dict[str, Any] = {
        "mode": mode, "select": select_mode, "tau": tau if select_mode == "threshold" else None,
        "k": k if select_mode == "number" else None, "n_modules": len(layers), "n_projected": len(projected),
        "projected": [x["module"] for x in projected], "layers": layers, "modules_without_delta": missing,
        "n_projector_identity": sum(1 for x in layers if x["projector_identity"]),
        "projector_identity": bool(layers) and all(x["projector_identity"] for x in layers), "no_op": noop,
    }
    if noop:
        why = ("the projector is the identity (the alignment delta has full row rank)"
               if rec["projector_identity"] else "no projected module moved by more than "
               f"{NOOP_REL_CHANGE:g} (relative)" if projected else "no module was selected")
        rec["warning"] = f"safelora changed nothing: {why}; try --safelora-mode paper or another selection"
        warnings.warn(rec["warning"], stacklevel=2)
    return rec


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


class SafeLoraDefense(Defense):
    name = "safelora"
    summary = "after training, project the LoRA update of the least-aligned modules onto the alignment subspace"
    paper = "SafeLoRA (Hsu et al., NeurIPS'24; IBM/SafeLoRA)"
    changes_weights_after_training = True
    lam = Option("lam", "float", 0.5, "similarity threshold τ of --safelora-select threshold (giving --lam "
                 "selects it): modules with cos(CΔW, ΔW) < τ are projected", range=(-1.0, 1.0), field="lam",
                 paper="threshold=0.5 in IBM/SafeLoRA config.py")
    options = (
        Option("mode", "str", "paper", "projection: paper (C = V Vᵀ/‖V‖_F) or exact (orthogonal projector "
               "onto span V; the identity after a full fine-tune alignment)", choices=("paper", "exact"),
               paper="C = V Vᵀ/‖V‖_F in IBM/SafeLoRA model.py"),
        Option("select", "str", None, "which modules to project: number (the --safelora-layers lowest "
               "similarities) or threshold (similarity < --lam); default number, or threshold when --lam "
               "is given", choices=("number", "threshold"), paper="select_layers_type=number"),
        Option("layers", "int", 10, "modules projected in number selection (q_proj and v_proj of a block "
               "count as two)", range=(1, 1 << 20), paper="num_proj_layers=10"),
    )

    @classmethod
    def resolve_options(cls, config: Any, explicit_lam: bool) -> None:
        if config.safelora_select is None:
            config.safelora_select = "threshold" if explicit_lam else "number"
        super().resolve_options(config, explicit_lam)
        if config.safelora_select == "number":
            config.lam = None  # τ means nothing when the k lowest modules are projected

    @classmethod
    def identity(cls, config: Any) -> dict[str, Any]:
        d = super().identity(config)
        if config.safelora_select != "number":
            d.pop("safelora_layers", None)
        return d

    @classmethod
    def validate_config(cls, config: Any) -> None:
        if not config.lora:
            raise SptError("safelora projects LoRA updates; it cannot run on a full fine-tune (drop --full)")

    @classmethod
    def validate_lineage(cls, config: Any, parent: Any | None) -> None:
        if parent is None or parent.kind != "align":
            raise SptError("safelora needs an aligned parent: pass `from_run` RUN_ID of a `stage` align run "
                           "(its weights minus its base define the alignment subspace)")

    @classmethod
    def describe_record(cls, record: dict[str, Any]) -> str | None:
        how = f"τ={record['tau']}" if record.get("select") == "threshold" else f"k={record.get('k')} lowest similarity"
        return (f"safelora ({record.get('mode')}) projected {record['n_projected']}/{record['n_modules']} modules "
                f"({how})")

    def post_train(self, ctx: Any) -> dict[str, Any] | None:
        names = sorted({_strip(n) for n, _, _ in lora_modules(ctx.model)})
        deltas, kind = aligned_deltas(ctx.parent_final, ctx.parent_start_path, names)
        o = self.opts
        tau = float(self.lam_value) if self.lam_value is not None else 0.0  # used by threshold selection only
        rec = project_lora(ctx.model, deltas, tau, o["mode"], o["select"], int(o["layers"]))
        rec["aligned_delta"] = kind
        rec["aligned_checkpoint_id"] = ctx.parent_final.id
        return rec
