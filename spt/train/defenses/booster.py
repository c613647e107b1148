"""`booster`: attenuating harmful perturbation (Huang et al., ICLR'25; git-disl/Booster), alignment stage.

The objective (defenses.md §5a) is

    L = f(θ) + λ·[h(θ) − h(θ − α·∇h(θ)/‖∇h(θ)‖)]

with f the alignment loss (HarmOR train: refusals and helpful answers) and h the loss on harmful
requests with compliant completions. The bracket is how much one normalised harmful fine-tuning step
of size α would lower the harmful loss; minimising it makes the aligned model a poor starting point for
harmful fine-tuning. As in the authors' code the gradient is first order, ∇f + λ·[∇h(θ) − ∇h(θ̃)]:
two passes on a harmful batch (the second at θ̃, the weights restored from an exact copy afterwards),
then the usual passes on the alignment micro-batches; λ·(∇h(θ) − ∇h(θ̃)) is added to `.grad` once per
optimizer step, before clipping (the authors clip the combined gradient too).

The harmful set is the poison data (`--poison-data`, default `builtin:harmor-comply`: HarmOR's poison
pool with redacted compliant answers) or an imported harmful set; a set sharing a prompt with the test
split of the safety dataset or of the stored default HarmOR (the evaluated pools) is refused. λ = 0 is
plain SFT (bit for bit, at three times the cost). Logged: h(θ), h(θ̃), their difference and ‖∇h‖.
"""

from __future__ import annotations

import math
from typing import Any

from spt.errors import SptError
from spt.train.defenses.base import Batch, Defense, LogWindow, Option, StepStats

HARM_SALT = 11  # the harmful stream's seed offset (fixes which harmful examples a step sees)


class BoosterDefense(Defense):
    name = "booster"
    summary = "attenuate harmful perturbation: f + λ·[h(θ) − h(θ − α·∇h/‖∇h‖)] on a harmful batch"
    paper = "Booster (Huang et al., ICLR'25), git-disl/Booster"
    stages = ("align",)
    lam = Option("lam", "float", 5.0, "weight of the harmful-loss drop h(θ) − h(θ − α·∇h/‖∇h‖)",
                 range=(0.0, math.inf), field="lam", paper="λ=5 in git-disl/Booster smooth_align.sh")
    options = (
        Option("alpha", "float", 0.1, "size α of the simulated (normalised) harmful step",
               range=(0.0, math.inf), paper="α=0.1 in git-disl/Booster smooth_align.sh"),
        Option("harmful_batch_size", "int", 10, "harmful examples per step for h",
               range=(1, 1 << 20), paper="10, hard-coded in git-disl/Booster"),
    )

    @classmethod
    def identity(cls, config: Any) -> dict[str, Any]:
        """λ, α, the harmful batch size and the harmful data set (it shapes the weights)."""
        out = super().identity(config)
        out["booster_harmful_data"] = config.poison_data
        return out

    def setup(self, ctx: Any) -> None:
        from spt.data.preferences import harmful_set

        self.harm = ctx.harmful_examples()
        evaluated = list(ctx.items.get("safety", []))
        if ctx.store is not None:  # the default HarmOR test pool is what `spt evaluate` scores by default
            from spt.train import data as tdata

            try:
                hid = tdata.resolve_safety(ctx.store, "harmor", build=False)
            except SptError:
                hid = None
            if hid is not None:
                evaluated += tdata.load_items(ctx.store, hid, split="test")
        harmful_set(ctx.items.get("harmful", []), evaluated)  # refuses prompts of the evaluated pool
        self.params = [p for _, p in ctx.trainable()]
        self._win = LogWindow()

    def train_step(self, ctx: Any, step: int, batches: list[Batch]) -> StepStats | None:
        import contextlib

        from spt.train.align_math import add_to_grad_, booster_harm_delta

        k = min(int(self.opts["harmful_batch_size"]), len(self.harm))
        ex = [self.harm[i] for i in ctx.sample(len(self.harm), step, 0, k, HARM_SALT)]
        w = 1.0 / max(1, sum(e.n_completion for e in ex))
        hb = Batch(ex, [w] * len(ex), groups=[2] * len(ex))
        no_sync = ctx.no_sync_fn or (lambda sync: contextlib.nullcontext())
        with no_sync(False):
            delta, st = booster_harm_delta(self.params, lambda: ctx.forward(hb)[0], float(self.opts["alpha"]))
        if ctx.world > 1:  # the harmful term is per rank: average it like the DDP gradient
            import torch.distributed as dist

            for d in delta:
                dist.all_reduce(d)
                d.div_(ctx.world)
        total = StepStats()
        for i, b in enumerate(batches):
            total.add(ctx.forward_backward(b, sync=i == len(batches) - 1))
        add_to_grad_(self.params, delta, float(self.lam_value or 0.0))
        self._win.add_step({k: st[k] for k in ("harm_loss", "harm_loss_perturbed", "harm_drop", "harm_grad_norm")})
        return total

    def log_values(self) -> dict[str, float]:
        return self._win.mean("booster_")
