"""`tokenwise`: token-wise constrained SFT (Qi et al., ICLR'25; Unispac/shallow-vs-deep-alignment, defenses.md §7).

For completion token t (t = 0 the first response token), Δ_t = log π_θ(y_t|·) − log π_0(y_t|·) with π_0
the start (aligned) model, and the loss is −Σ_t (2/β_t)·log σ(β_t·Δ_t) / N over the step's completion
tokens. Its gradient is the SFT gradient with per-token weights w_t = 2·(1 − σ(β_t·Δ_t)) ∈ (0, 2), which
is what the authors' code trains on: −Σ clamp(detach(w_t), 1e-3)·log π_θ(y_t) / N. At θ = θ_0, w_t = 1
(plain SFT); once a token's log-prob rises above the aligned model's, its weight decays, fastest
where β_t is large: on the first response tokens, which is where shallow alignment lives.

β schedule (authors' README command): β_0 = β·first_factor (0.1·5 = 0.5), β_1..β_{length−1} =
β·bias_factor (0.1·20 = 2), later tokens β (0.1). β is λ.

π_0's log-probs are computed once, before the first step, in one no-grad pass over the task examples
the run will see (under LoRA: the model with its adapter disabled; full fine-tune: the start weights),
and kept on the host; the weights w_t use the token losses of the training forward itself, so a step
costs one pass like plain SFT. The authors also train with AdamW β1 = 0.5 and dropout off; here the
optimizer is the run's, and LoRA dropout makes w_t ≠ 1 at the first step (set lora_dropout 0 to match).
"""

from __future__ import annotations

import math
from typing import Any

from spt.train.defenses.base import Batch, Defense, Option

MIN_WEIGHT = 1e-3  # the authors' clamp


def beta_schedule(pos: Any, beta: float, first_factor: float, bias_factor: float, bias_length: int) -> Any:
    """β_t for response positions `pos` (a long tensor, 0 = first response token)."""
    import torch

    b = torch.full(pos.shape, float(beta), dtype=torch.float32, device=pos.device)
    b = torch.where(pos < int(bias_length), torch.full_like(b, beta * bias_factor), b)
    return torch.where(pos == 0, torch.full_like(b, beta * first_factor), b)


def token_weights(logp: Any, ref_logp: Any, beta_t: Any) -> Any:
    """w_t = clamp(2·(1 − σ(β_t·(log π_θ − log π_0))), 1e-3), detached."""
    import torch

    return torch.clamp(2.0 * (1.0 - torch.sigmoid(beta_t * (logp.float() - ref_logp.float()))),
                       min=MIN_WEIGHT).detach()


class TokenwiseDefense(Defense):
    name = "tokenwise"
    summary = "token-wise constrained SFT: per-token weights that pin the first response tokens to the aligned model"
    paper = "Qi et al., Safety alignment should be made more than just a few tokens deep (ICLR'25)"
    lam = Option("lam", "float", 0.1, "β: strength of the pull toward the aligned model's token log-probs "
                 "(0: plain SFT)", range=(0.0, math.inf), field="lam", paper="beta=0.1")
    options = (
        Option("first_factor", "float", 5.0, "β of the first response token = β × this", range=(0.0, math.inf),
               paper="first_token_bias_factor=5"),
        Option("bias_factor", "float", 20.0, "β of response tokens 2..length = β × this", range=(0.0, math.inf),
               paper="bias_factor=20"),
        Option("bias_length", "int", 5, "how many leading response tokens get the larger β", range=(0, 1 << 20),
               paper="bias_length=5"),
    )

    def setup(self, ctx: Any) -> None:
        self.ref: dict[int, Any] = {}  # id(Encoded) -> π_0 log-probs of its completion tokens (host)
        self._wsum, self._wn = 0.0, 0
        self.ref = reference_logprobs(ctx, ctx.visited_examples())

    def batches(self, ctx: Any, step: int, micro: list[list[Any]]) -> list[Batch]:
        import torch

        base = super().batches(ctx, step, micro)
        o = self.opts
        beta = float(self.lam_value or 0.0)
        out = []
        for b in base:
            refs = [self.ref[id(e)] for e in b.examples]
            width = max([r.numel() for r in refs] + [1])
            R = torch.zeros(len(refs), width)
            for i, r in enumerate(refs):
                R[i, : r.numel()] = r
            R = R.to(ctx.device)

            def fn(ce: Any, ex: Any, pos: Any, R: Any = R) -> Any:
                bt = beta_schedule(pos, beta, o["first_factor"], o["bias_factor"], o["bias_length"])
                w = token_weights(-ce, R[ex, pos], bt)
                self._wsum += float(w.sum())
                self._wn += int(w.numel())
                return w

            out.append(Batch(b.examples, b.weights, fn, b.groups))
        return out

    def log_values(self) -> dict[str, float]:
        if not self._wn:
            return {}
        v = {"tokenwise_mean_weight": self._wsum / self._wn}
        self._wsum, self._wn = 0.0, 0
        return v

    def post_train(self, ctx: Any) -> dict[str, Any] | None:
        o = self.opts
        return {"beta": self.lam_value, "first_factor": o["first_factor"], "bias_factor": o["bias_factor"],
                "bias_length": o["bias_length"], "n_reference_examples": len(self.ref)}


def reference_logprobs(ctx: Any, examples: list[Any], per_pass: int = 16) -> dict[int, Any]:
    """{id(example): log π_0 of each completion token} from one no-grad pass (packed, `per_pass` examples)."""
    import contextlib

    import torch

    from spt.train.context import token_index
    from spt.train.loss import completion_loss
    from spt.train.packing import pack

    model = ctx.model
    unique = list({id(e): e for e in examples}.values())
    if ctx.config.lora:
        ref_ctx: Any = model.disable_adapter()
        ref_model = model
    elif ctx.start_step == 0:
        ref_ctx, ref_model = contextlib.nullcontext(), model
    else:  # a resumed full fine-tune: the model holds trained weights; π_0 is the start directory
        from transformers import AutoModelForCausalLM

        ref_model = AutoModelForCausalLM.from_pretrained(ctx.start_path, dtype=torch.float32).to(ctx.device)
        ref_ctx = contextlib.nullcontext()
    out: dict[int, Any] = {}
    was_training = model.training
    ref_model.eval()
    autocast = ctx.autocast if ctx.autocast is not None else contextlib.nullcontext()
    try:
        with torch.no_grad(), ref_ctx:
            for s in range(0, len(unique), per_pass):
                chunk = unique[s:s + per_pass]
                pk = pack(chunk, ctx.pad_id, ctx.config.pack_length, [0.0] * len(chunk))
                dev = ctx.device
                with autocast:
                    _, ce, _ = completion_loss(ref_model, pk.input_ids.to(dev), pk.position_ids.to(dev),
                                               pk.labels.to(dev), pk.weights.to(dev))
                ex, pos = token_index(pk)
                lp = (-ce.float()).cpu()
                for i, e in enumerate(chunk):
                    m = ex == i
                    vals = torch.zeros(int(m.sum()))
                    vals[pos[m]] = lp[m]
                    out[id(e)] = vals
    finally:
        if was_training:
            model.train()
    return out
