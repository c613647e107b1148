"""`anchor`: alignment-loss constraint, L = (1−λ)·L_task + λ·L_safety per optimizer step (defenses.md §1(ii)).

Each step takes a HarmOR-train safety batch holding both halves of each pair (harmful → refusal and
benign look-alike → helpful answer), so the model keeps refusing without learning to refuse
everything. Task and safety examples share one packed forward with per-token weights
(1−λ)/N_task and λ/N_safety, which gives exactly the gradient of the weighted sum of the two mean
token losses (single-forward form).
"""

from __future__ import annotations

from typing import Any

from spt.errors import SptError
from spt.train.defenses.base import Batch, Defense, Option

SAFETY_SALT = 7  # the safety stream's seed offset (kept: it fixes which pairs a step sees)


class AnchorDefense(Defense):
    name = "anchor"
    summary = "mix a HarmOR safety batch into every step: (1−λ)·L_task + λ·L_safety"
    paper = "SafeInstr (Bianchi et al., ICLR'24) / Booster repo's weighted safety loss"
    lam = Option("lam", "float", 0.1, "weight of the safety loss", range=(0.0, 1.0), field="lam",
                 paper="λ=0.1 as in the Booster repo")
    options = (
        Option("safety_batch_size", "int", None, "safety examples per micro-batch (both halves of each HarmOR "
               "pair; default: --batch-size)", range=(2, 1 << 20), field="safety_batch_size"),
    )

    @classmethod
    def resolve_options(cls, config: Any, explicit_lam: bool) -> None:
        super().resolve_options(config, explicit_lam)
        if config.safety_batch_size is None:
            config.safety_batch_size = config.batch_size
        if config.safety_batch_size < 2:
            raise SptError("safety_batch_size must be ≥ 2 (both halves of a HarmOR pair)")

    def batches(self, ctx: Any, step: int, micro: list[list[Any]]) -> list[Batch]:
        pairs = ctx.safety_pairs()
        k = max(1, int(self.config.safety_batch_size) // 2)
        safe: list[list[Any]] = []
        for m in range(len(micro)):
            sx: list[Any] = []
            for i in ctx.sample(len(pairs), step, m, k, SAFETY_SALT):
                sx += list(pairs[i])
            safe.append(sx)
        lam = float(self.lam_value)
        wt = (1.0 - lam) / max(1, sum(e.n_completion for ex in micro for e in ex))
        ws = lam / max(1, sum(e.n_completion for sx in safe for e in sx))
        return [Batch(ex + sx, [wt] * len(ex) + [ws] * len(sx), groups=[0] * len(ex) + [1] * len(sx))
                for ex, sx in zip(micro, safe, strict=True)]
