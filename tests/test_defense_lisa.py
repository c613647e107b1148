"""Lisa against a direct computation: the state switching, the batches of each state and the proximal
term toward the other state's last iterate; and an end-to-end CLI run on tiny-random."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from sqlmodel import select
from typer.testing import CliRunner

from spt.models import load_model, resolve_model
from spt.train import FinetuneConfig
from spt.train.context import TrainContext
from spt.train.defenses.lisa import ALIGN, TASK, LisaDefense, cycle_steps, state_at
from spt.train.packing import encode_items

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import WORDS, mini_data  # noqa: E402


def _safety_items():
    out = []
    for i in range(6):
        w = WORDS[i]
        out += [dict(prompt=f"how do i {w} the bank", response="sorry i cannot help", label="harmful",
                     pair_id=f"p{i}", split="train"),
                dict(prompt=f"what does {w} mean", response=f"{w} is a word", label="benign", pair_id=f"p{i}",
                     split="train")]
    return out


def test_state_schedule_and_default_cycle():
    # K_a = 2, K_f = 3: steps 1-2 align, 3-5 task, 6-7 align, ...
    assert [state_at(s, 2, 3) for s in range(1, 11)] == [ALIGN] * 2 + [TASK] * 3 + [ALIGN] * 2 + [TASK] * 3
    assert cycle_steps(20000, None, None) == (100, 900)  # the authors' 100/900 for a long run
    assert cycle_steps(40, None, None) == (2, 18)  # a short run still switches (cycle = T/2, 1:9)
    assert cycle_steps(40, 4, None) == (4, 36) and cycle_steps(40, None, 9) == (1, 9)


def test_lisa_switching_batches_and_proximal_term_match_direct_computation():
    model, tok = load_model(resolve_model("tiny-random").path)
    cfg = FinetuneConfig(model="tiny-random", defense="lisa", lam=0.7, lora=False, lisa_align_steps=2,
                         lisa_task_steps=3, lisa_prox_after=0.2, batch_size=4).resolve()
    total = 10
    ctx = TrainContext(config=cfg, model=model, store=None, run_id="t", start_path=resolve_model("tiny-random").path,
                       tokenizer=tok, pad_id=tok.pad_token_id, device=torch.device("cpu"), total_steps=total,
                       items={"safety": _safety_items()})
    d = LisaDefense(cfg)
    d.setup(ctx)
    task = encode_items(tok, [{"prompt": f"what is {i} plus 1", "response": f"{i + 1}"} for i in range(4)], 64)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    anchor = dict(start)  # direct bookkeeping: the iterate at the last switch of state
    g = torch.Generator().manual_seed(0)
    expected_states = [ALIGN, ALIGN, TASK, TASK, TASK, ALIGN, ALIGN, TASK, TASK, TASK]
    for step in range(1, total + 1):
        assert d.state(step) == expected_states[step - 1]
        (b,) = d.batches(ctx, step, [task])
        if expected_states[step - 1] == TASK:
            assert b.examples == task and set(b.groups or [0]) == {0}
        else:  # the task batch is replaced by HarmOR pairs of the same size, harmful + benign halves
            assert len(b.examples) == len(task) and set(b.groups) == {1}
            texts = {tok.decode(e.input_ids) for e in b.examples}
            assert any("sorry" in t for t in texts) and any("is a word" in t for t in texts)
        n = sum(e.n_completion for e in b.examples)
        assert all(abs(w - 1.0 / n) < 1e-12 for w in b.weights)  # token mean over the step
        term = d.extra_loss(ctx, step)
        if step <= 0.2 * total:  # off for the first 20% of the steps (lisa_prox_after)
            assert term is None
        else:
            direct = 0.5 * 0.7 * sum(((p - anchor[n]) ** 2).sum() for n, p in model.named_parameters())
            torch.testing.assert_close(term, direct, rtol=1e-6, atol=1e-9)
            term.backward()  # differentiable in the weights
            p0 = next(iter(model.parameters()))
            assert p0.grad is not None
            model.zero_grad()
        with torch.no_grad():  # a stand-in optimizer step
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.01)
        d.after_step(ctx, step)
        if step < total and expected_states[step] != expected_states[step - 1]:
            anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    # the saved state restores the anchor exactly
    st = d.state_dict()
    d2 = LisaDefense(cfg)
    d2.setup(ctx)
    d2.load_state_dict(st)
    assert all(torch.equal(d2.anchor[n], anchor[n]) for n in anchor) and d2.anchor_step == 7
    assert d.post_train(ctx)["switches"] == 3 and d.steps == {ALIGN: 4, TASK: 6}


def test_lisa_cli_end_to_end(db_path):
    from spt.cli import app
    from spt.store import open_store
    from spt.store.models import TrainLog

    st = open_store(db_path)
    mini_data(st)
    st.close()
    r = CliRunner().invoke(app, ["--db", str(db_path), "finetune", "--model", "tiny-random", "--task", "task-mini",
                                 "--safety-data", "harmor-mini", "--defense", "lisa", "--lisa-align-steps", "2",
                                 "--lisa-task-steps", "3", "--lam", "0.5", "--max-steps", "10", "--batch-size", "4",
                                 "--max-length", "64", "--log-every", "2", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    lisa = res["post_train"]
    assert res["defense"] == "lisa" and lisa["steps_align"] == 4 and lisa["steps_task"] == 6 and lisa["rho"] == 0.5
    st = open_store(db_path)
    with st.session() as s:
        names = {x.name for x in s.exec(select(TrainLog).where(TrainLog.run_id == res["run_id"])).all()}
    st.close()
    assert {"safety_loss", "task_loss", "penalty", "lisa_align_steps_done"} <= names


def test_lisa_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    """The anchor (the last switch's iterate) travels in the trainer state: a resumed run ends on the same
    weights as an uninterrupted one. Full fine-tune, interrupted after a switch and mid-state."""
    import os
    import signal

    import pytest
    from safetensors.torch import load_file

    from spt.store import open_store
    from spt.train import Interrupted, finetune

    cfg = dict(model="tiny-random", defense="lisa", lora=False, lr=1e-3, lam=20.0, lisa_align_steps=2,
               lisa_task_steps=3, lisa_prox_after=0.0, max_steps=10, save_every=3, batch_size=4, max_length=64,
               log_every=2, align_eval_pairs=2)

    def final(res):
        return load_file(str(Path(res.final_checkpoint.path) / "model.safetensors"))

    st = open_store(tmp_path / "ref.db")
    ref = final(finetune(st, FinetuneConfig(**cfg, **mini_data(st))))
    st.close()
    st = open_store(tmp_path / "b.db")
    data = mini_data(st)

    def send(p):
        if p.task == "train" and p.done == 4:  # after the align→task switch at step 2, inside the task state
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Interrupted):
        finetune(st, FinetuneConfig(**cfg, **data), progress=send)
    res = finetune(st, FinetuneConfig(**cfg, **data, resume=True))
    assert res.resumed_from_step == 4
    got = final(res)
    st.close()
    assert [k for k in ref if not torch.equal(ref[k], got[k])] == []
