"""`anchor`: alignment-loss constraint, L = (1−λ)·L_task + λ·L_safety per optimizer step.

Each step takes a HarmOR-train safety batch holding both halves of each pair (harmful → refusal and
benign look-alike → helpful answer), so the model keeps refusing without learning to refuse
everything. The loop packs the task and safety examples into one forward pass with per-token weights
(1−λ)/N_task and λ/N_safety, which gives exactly the gradient of the weighted sum of the two mean
token losses (defenses.md §1(ii), single-forward form).
"""

from __future__ import annotations

from spt.train.defense_base import Defense, register


@register
class AnchorDefense(Defense):
    name = "anchor"
    default_lam = 0.1
    lam_range = (0.0, 1.0)
    lam_meaning = "weight of the safety loss"
    needs_safety_batches = True

    def task_weight(self) -> float:
        return 1.0 - float(self.lam)

    def safety_weight(self) -> float:
        return float(self.lam)
