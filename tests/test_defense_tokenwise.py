"""Token-wise constrained SFT against a direct computation on tiny-random: the β schedule, the per-token
weights and the gradient of −Σ w_t·log π_θ(y_t)/N with full logits; and an end-to-end CLI run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from sqlmodel import select
from typer.testing import CliRunner

from spt.models import load_model, resolve_model
from spt.models.chat import IGNORE_INDEX
from spt.train import FinetuneConfig
from spt.train.context import TrainContext
from spt.train.defenses.tokenwise import TokenwiseDefense, beta_schedule
from spt.train.loss import LossModule
from spt.train.packing import encode_items

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import mini_data  # noqa: E402


def test_beta_schedule_matches_the_authors_defaults():
    b = beta_schedule(torch.arange(8), 0.1, 5.0, 20.0, 5)
    torch.testing.assert_close(b, torch.tensor([0.5, 2.0, 2.0, 2.0, 2.0, 0.1, 0.1, 0.1]))


def _token_logps(model, examples, pad_id):
    """Per example: log π(y_t) of each completion token, from a padded batch with full logits."""
    L = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), L), pad_id)
    att = torch.zeros((len(examples), L), dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, : len(e.input_ids)] = torch.tensor(e.input_ids)
        att[i, : len(e.input_ids)] = 1
    logp = F.log_softmax(model(input_ids=ids, attention_mask=att).logits.float(), -1)
    out = []
    for i, e in enumerate(examples):
        lab = torch.tensor(e.labels)
        t = (lab[1:] != IGNORE_INDEX).nonzero().squeeze(1)  # position t predicts labels[t+1]
        out.append(logp[i, t, lab[1:][t]])
    return out


def test_tokenwise_weights_and_gradient_match_direct_computation():
    model, tok = load_model(resolve_model("tiny-random").path)
    ref_model, _ = load_model(resolve_model("tiny-random").path)
    cfg = FinetuneConfig(model="tiny-random", defense="tokenwise", lam=0.3, lora=False, batch_size=3).resolve()
    ex = encode_items(tok, [{"prompt": f"what is {i} plus 2", "response": f"it is {i + 2} " * (2 + i)}
                            for i in range(3)], 96)
    wrapped = LossModule(model)
    ctx = TrainContext(config=cfg, model=model, store=None, run_id="t", start_path=resolve_model("tiny-random").path,
                       tokenizer=tok, pad_id=tok.pad_token_id, device=torch.device("cpu"), total_steps=1,
                       train=ex, forward_fn=wrapped, eval_forward_fn=wrapped, backward_fn=lambda loss: loss.backward())
    d = TokenwiseDefense(cfg)
    d.setup(ctx)  # reference log-probs of the start model
    torch.manual_seed(0)
    with torch.no_grad():  # move away from the start so that Δ_t ≠ 0 and the weights differ from 1
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)

    # direct: w_t = clamp(2(1 − σ(β_t Δ_t)), 1e-3), loss = −Σ detach(w_t) log π_θ(y_t) / N
    ref = [x.detach() for x in _token_logps(ref_model, ex, tok.pad_token_id)]
    cur = _token_logps(model, ex, tok.pad_token_id)
    n = sum(x.numel() for x in cur)
    ws, loss = [], 0.0
    for lp, rp in zip(cur, ref, strict=True):
        pos = torch.arange(lp.numel())
        bt = torch.where(pos == 0, torch.tensor(0.3 * 5), torch.where(pos < 5, torch.tensor(0.3 * 20),
                                                                       torch.tensor(0.3)))
        w = torch.clamp(2 * (1 - torch.sigmoid(bt * (lp.detach() - rp))), min=1e-3)
        ws.append(w)
        loss = loss - (w * lp).sum() / n
    model.zero_grad()
    loss.backward()
    g_direct = {k: p.grad.clone() for k, p in model.named_parameters()}
    w_direct = torch.cat(ws)
    assert (w_direct - 1).abs().max() > 1e-3  # the test would not notice unweighted SFT otherwise

    for e, r in zip(ex, ref, strict=True):  # the cached reference log-probs are π_0's
        torch.testing.assert_close(d.ref[id(e)], r, rtol=1e-4, atol=1e-5)
    (b,) = d.batches(ctx, 1, [ex])
    model.zero_grad()
    stats = ctx.forward_backward(b)
    g = {k: p.grad.clone() for k, p in model.named_parameters()}
    for k in g:
        torch.testing.assert_close(g[k], g_direct[k], rtol=1e-4, atol=1e-6, msg=k)
    assert abs(d._wsum / d._wn - float(w_direct.mean())) < 1e-5
    assert stats.counts[0] == n


def test_tokenwise_cli_end_to_end(db_path):
    from spt.cli import app
    from spt.store import open_store
    from spt.store.models import TrainLog

    st = open_store(db_path)
    mini_data(st)
    st.close()
    r = CliRunner().invoke(app, ["--db", str(db_path), "finetune", "--model", "tiny-random", "--task", "task-mini",
                                 "--safety-data", "harmor-mini", "--defense", "tokenwise", "--tokenwise-bias-length",
                                 "3", "--max-steps", "4", "--batch-size", "4", "--max-length", "64",
                                 "--log-every", "2", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["post_train"]["bias_length"] == 3 and res["post_train"]["beta"] == 0.1
    assert res["post_train"]["n_reference_examples"] >= 4
    st = open_store(db_path)
    with st.session() as s:
        w = [x.value for x in s.exec(select(TrainLog).where(TrainLog.run_id == res["run_id"],
                                                            TrainLog.name == "tokenwise_mean_weight")).all()]
    st.close()
    assert len(w) == 2 and all(0 < v < 2 for v in w)
