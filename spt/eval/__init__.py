"""Evaluation: batched generation, keyword refusal presets, teacher-forced losses, metrics.

Library API:
- `evaluate(store, target, EvaluateConfig(...), progress=None) -> dict`: the `spt evaluate` pipeline.
- `generate_batched(model, tokenizer, prompts, max_new_tokens, batch_size, ...) -> list[dict]`.
- `example_losses(model, tokenizer, [(prompt, response), ...]) -> list[dict]`: teacher-forced CE.
- `classify(text, preset="spt")` -> "refusal" | "compliance" | "degenerate"; `is_refusal`, `is_degenerate`,
  `PRESETS`: keyword refusal classification.

Importing this package does not import torch; the functions do.
"""

from spt.eval.evaluate import EvaluateConfig, evaluate, resolve_target, stored_metrics
from spt.eval.generate import generate_batched
from spt.eval.losses import example_losses
from spt.eval.refusal import PRESETS, RefusalPreset, classify, is_degenerate, is_refusal

__all__ = [
    "PRESETS", "EvaluateConfig", "RefusalPreset", "classify", "evaluate", "example_losses", "generate_batched",
    "is_degenerate", "is_refusal", "resolve_target", "stored_metrics",
]
