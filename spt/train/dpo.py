"""DPO alignment (`spt finetune --stage align --method dpo`): the sigmoid DPO loss in spt's loop.

The preference data is HarmOR's train pairs used both ways (`spt.data.preferences`): a harmful request
prefers its refusal over a compliant reply, and its benign twin prefers the helpful answer over a
refusal, which teaches the model not to over-refuse. Loss (defenses.md §9a, TRL `DPOTrainer` default):

    −log σ(β·[(log π(y_w|x) − log π_ref(y_w|x)) − (log π(y_l|x) − log π_ref(y_l|x))]),  mean over pairs,

log-probs summed over the completion tokens. The reference log-probs are computed once, before the
first step; with a LoRA adapter the reference is the adapter-disabled model (no second copy of the
weights), with a full fine-tune it is the model before its first step. They are saved with the trainer
state, so a resumed run uses the same reference. Dropout is switched off, as TRL does by default
(`disable_dropout=True`): the policy and the reference then agree before the first step.

One step per micro-batch costs one forward without gradient (the sequences' log-probs) plus one
forward/backward of the standard packed completion loss with per-example weights −∂L/∂log π(y):
since log π(y) = −Σ_t CE_t, that weighted loss has exactly the DPO gradient, and it goes through the
same wrapped (DDP, autocast, chunked-head) path as SFT. `tests/test_align_defenses.py` checks the loss
and gradients against TRL's `DPOTrainer` on a tiny model.

`DPOMethod` has the hooks of a `spt.train.defenses.base.Defense` (the loop calls it in place of the
defense, which must be `none`); it is not in the defense registry because DPO replaces the training
objective rather than protecting it.
"""

from __future__ import annotations

import math
from typing import Any

from spt.errors import SptError
from spt.train.defenses.base import Batch, Defense, LogWindow, Option, StepStats

DPO_SALT = 13  # the preference stream's seed offset


class DPOMethod(Defense):
    """DPO on HarmOR preference pairs, with the Defense hooks the loop calls."""

    name = "dpo"
    summary = "DPO on HarmOR pairs both ways (refusal ≻ compliance; helpful answer ≻ refusal)"
    paper = "DPO (Rafailov et al., NeurIPS'23) as in bplaut/safety-persists-llm-agents (TRL DPOTrainer)"
    stages = ("align",)
    lam = None
    options = (
        Option("beta", "float", 0.1, "DPO temperature β (strength of the pull toward the reference model)",
               range=(1e-6, math.inf), paper="β=0.1, TRL default and bplaut/safety-persists-llm-agents"),
        Option("both_ways", "bool", True, "also train the benign twin to prefer the answer over a refusal "
               "(false: harmful → refusal pairs only, as peers' data)"),
        # the dataset's content id enters the run identity (spt.train.plan), not its name
        Option("preferences", "str", None, "train on this preference dataset (`spt build-data --preferences`: "
               "agent trajectories, chosen ≻ rejected) instead of HarmOR pairs; pairs longer than --max-length "
               "are dropped, not truncated", field="preferences", identity=False),
    )

    @classmethod
    def validate_config(cls, config: Any) -> None:
        if config.stage != "align":
            raise SptError("`method` dpo applies to `stage` align (it aligns the model on HarmOR preference pairs)")
        if config.defense != "none":
            raise SptError(f"`method` dpo runs without a defense (got `defense` {config.defense}); "
                           "use `defense` none, or `method` sft with the defense")

    def setup(self, ctx: Any) -> None:
        from torch import nn

        from spt.data.items import load_items
        from spt.data.preferences import preference_pairs
        from spt.train import data as tdata

        if getattr(self.config, "preferences", None):
            self.pairs = self._dataset_pairs(ctx)
        else:
            ds = tdata.resolve_safety(ctx.store, self.config.safety_data, build=False)
            self.pairs = preference_pairs(load_items(ctx.store, ds), seed=int(self.config.seed),
                                          both_ways=bool(self.opts["both_ways"]))
        self.chosen = ctx.encode([{"prompt": p.prompt, "response": p.chosen} for p in self.pairs], 1)
        self.rejected = ctx.encode([{"prompt": p.prompt, "response": p.rejected} for p in self.pairs], 2)
        for m in ctx.model.modules():  # TRL's disable_dropout: policy = reference before the first step
            if isinstance(m, nn.Dropout):
                m.p = 0.0
        self.ref: tuple[Any, Any] | None = None
        self._win = LogWindow()

    def _dataset_pairs(self, ctx: Any) -> list[Any]:
        """The pairs of the `preferences` dataset, without those over `max_length` tokens (as the published
        pipeline filters them: a truncated trajectory loses the actions that made it chosen or rejected)."""
        from spt.data.items import load_items
        from spt.data.preferences import PreferencePair

        items = load_items(ctx.store, resolve_preferences(ctx.store, self.config.preferences).id)
        pairs = [PreferencePair(x["prompt"], x["response"], (x.get("meta") or {}).get("rejected") or "", "agentic")
                 for x in items if x.get("split", "train") == "train" and x.get("response")]
        limit = int(self.config.max_length)
        probe = ctx.tokenizer
        from spt.models.chat import encode_example

        def fits(prompt: str, completion: str) -> bool:
            return len(encode_example(probe, prompt, completion, limit + 1)["input_ids"]) <= limit

        kept = [p for p in pairs if p.rejected and fits(p.prompt, p.chosen) and fits(p.prompt, p.rejected)]
        self.n_dropped = len(pairs) - len(kept)
        if not kept:
            raise SptError(f"every pair of preference dataset {self.config.preferences!r} is longer than --max-length "
                           f"{limit} tokens ({len(pairs)} pairs); raise --max-length")
        return kept

    def _reference(self, ctx: Any) -> tuple[Any, Any]:
        """Summed completion log-probs of every pair under the reference, once, through the same forward as
        training (same autocast and kernels, so policy = reference exactly before the first LoRA step)."""
        if self.ref is None:
            import contextlib

            import torch

            if ctx.start_step > 0 and not self.config.lora:
                raise SptError("this resumed full-fine-tune DPO run has no saved reference log-probs; "
                               "start it again without `resume`")
            model = ctx.model
            off = model.disable_adapter() if self.config.lora and hasattr(model, "disable_adapter") \
                else contextlib.nullcontext()
            k = max(1, int(self.config.batch_size))
            # only the pairs this run will sample (the stream is a pure function of seed and step), so a
            # 30-step run pays for its 240 pairs, not all of HarmOR train; the others stay NaN, never read
            need = self._pairs_needed(ctx, k) if ctx.total_steps else list(range(len(self.pairs)))
            ref_c = torch.full((len(self.pairs),), float("nan"))
            ref_r = torch.full((len(self.pairs),), float("nan"))
            with torch.no_grad(), off:
                for s in range(0, len(need), k):
                    idx = need[s:s + k]
                    ex = [self.chosen[i] for i in idx] + [self.rejected[i] for i in idx]
                    _, ce, flat, pk = ctx.forward(Batch(ex, [1.0] * len(ex)))
                    lp = -_per_example_sum(ce, flat, pk, len(ex)).cpu()
                    ref_c[idx] = lp[:len(idx)]
                    ref_r[idx] = lp[len(idx):]
            self.ref = (ref_c, ref_r)
        return self.ref

    def _pairs_needed(self, ctx: Any, k: int) -> list[int]:
        """The pair indices `train_step` will draw over the whole run (every step and micro-batch)."""
        n_micro = max(1, int(self.config.grad_accum))
        return sorted({i for step in range(1, int(ctx.total_steps) + 1) for m in range(n_micro)
                       for i in ctx.sample(len(self.pairs), step, m, k, DPO_SALT)})

    def train_step(self, ctx: Any, step: int, batches: list[Batch]) -> StepStats | None:
        import torch

        from spt.train.align_math import dpo_loss

        ref_c, ref_r = self._reference(ctx)
        k = int(self.config.batch_size)
        n_micro = len(batches)
        total = StepStats()
        agg: dict[str, float] = {}
        for m in range(n_micro):
            idx = ctx.sample(len(self.pairs), step, m, k, DPO_SALT)
            ex = [self.chosen[i] for i in idx] + [self.rejected[i] for i in idx]
            with torch.no_grad():
                _, ce, flat, pk = ctx.forward(Batch(ex, [1.0] * len(ex)))
            lp = -_per_example_sum(ce, flat, pk, len(ex))
            pc = lp[:k].clone().requires_grad_(True)
            pr = lp[k:].clone().requires_grad_(True)
            ii = torch.tensor(idx)
            loss, st = dpo_loss(pc, pr, ref_c[ii].to(pc.device), ref_r[ii].to(pr.device), float(self.opts["beta"]))
            gc, gr = torch.autograd.grad(loss / n_micro, [pc, pr])  # ∂L_step/∂log π(y) per sequence
            # log π(y) = −Σ CE, so weights −∂L/∂log π on the token CE give the DPO gradient exactly
            w = (-torch.cat([gc, gr])).tolist()
            s = ctx.forward_backward(Batch(ex, w, groups=[1] * k + [2] * k), sync=m == n_micro - 1)
            # the weighted CE is not a loss worth logging: report the mean DPO loss per pair as the step's loss
            total.add(StepStats(sums={0: float(loss.detach()) * k}, counts={0: k}, tokens=s.tokens))
            for key, v in st.items():
                agg[key] = agg.get(key, 0.0) + v / n_micro
        self._win.add_step(agg)
        return total

    def log_values(self) -> dict[str, float]:
        return self._win.mean()

    def state_dict(self) -> dict[str, Any]:
        if self.ref is None:
            return {}
        return {"ref_chosen": self.ref[0].clone(), "ref_rejected": self.ref[1].clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "ref_chosen" in state:
            self.ref = (state["ref_chosen"].float().cpu(), state["ref_rejected"].float().cpu())


def _per_example_sum(ce: Any, flat: Any, pk: Any, n: int) -> Any:
    """Σ token CE per packed example (detached), from one forward's per-token CE."""
    import torch

    seg = pk.seg.reshape(-1).to(flat.device)
    tseg = torch.full_like(seg, -1)
    tseg[:-1] = seg[1:]
    ex = tseg.index_select(0, flat)
    return torch.zeros(n, dtype=torch.float32, device=ce.device).index_add_(0, ex.to(ce.device), ce.float())


def resolve_preferences(store: Any, name: str) -> Any:
    """The preference dataset called `name` (id, prefix or name); SptError unless it is one."""
    from spt.data import resolve_dataset

    ds = resolve_dataset(store, name)
    if ds.kind != "preference":
        raise SptError(f"dataset {name!r} holds {ds.kind} items, not preference pairs; build them with `spt build-data "
                       "--preferences --from EVALUATION --from EVALUATION`")
    return ds


# The method registry lives in spt.train.methods; these names stay importable from here.
from spt.train.methods import check_method, method_for, method_identity, resolve_method  # noqa: E402,F401
