"""The embedded default model (SmolLM2-135M-Instruct from the packaged GGUF), for real: slow."""

from __future__ import annotations

import pytest

from spt.eval import EvaluateConfig, evaluate
from spt.models import load_model, render_prompt, resolve_model
from spt.train import FinetuneConfig, finetune

pytestmark = pytest.mark.slow


def test_default_model_converts_generates_trains_and_evaluates(store):
    ref = resolve_model("smollm2-135m")
    model, tok = load_model(ref.path)
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert render_prompt(tok, "hi").endswith("<|im_start|>assistant\n")

    base = evaluate(store, "smollm2-135m", EvaluateConfig(limit=4, max_new_tokens=8, task="none"))
    assert base.n_generated == 4
    names = {m["name"] for m in base.metrics}
    assert {"refusal_rate", "over_refusal_rate", "alignment_loss"} <= names

    res = finetune(store, FinetuneConfig(model="smollm2-135m", stage="align", max_steps=2, batch_size=2,
                                         max_length=64, log_every=1))
    assert res.status == "done" and res.checkpoints[-1].is_final
    aligned = evaluate(store, res.run_id, EvaluateConfig(limit=4, max_new_tokens=8, task="none"))
    assert aligned.n_generated == 4 and aligned.run_id == res.run_id
