"""spt finetune: the CLI sequence, records in the store, loss equivalence, resume, bad inputs, accelerate."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from spt.cli import app
from spt.store import open_store
from spt.store.models import Checkpoint, Run, TrainLog
from spt.train import FinetuneConfig, finetune

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import FAST, mini_data  # noqa: E402

runner = CliRunner()


def _cli(db, *args):
    return runner.invoke(app, ["finetune", "--db", str(db), *args])


def test_cli_align_then_anchor_task(db_path):
    """The issue's must-show sequence on tiny-random with the default HarmOR and builtin:arithmetic data."""
    small = ("--batch-size", "4", "--max-length", "96")  # the commands, smaller rows for 2 shared cores
    r = _cli(db_path, "--model", "tiny-random", "--stage", "align", "--max-steps", "20", *small, "--json")
    assert r.exit_code == 0, r.output
    align = json.loads(r.stdout)
    r = _cli(db_path, "--from", align["run_id"], "--task", "builtin:arithmetic", "--poison", "0.1",
             "--defense", "anchor", "--lam", "0.3", "--max-steps", "20", *small, "--json")
    assert r.exit_code == 0, r.output
    task = json.loads(r.stdout)
    assert {"task_loss", "alignment_loss", "safety_loss"} <= set(task["final_losses"])
    with open_store(db_path) as st, st.session() as s:
        runs = {x.id: x for x in s.exec(select(Run)).all()}
        a, t = runs[align["run_id"]], runs[task["run_id"]]
        assert (a.kind, a.status, t.kind, t.status) == ("align", "done", "finetune", "done")
        assert t.parent_run_id == a.id and t.defense == "anchor" and t.lam == 0.3 and t.poison_ratio == 0.1
        assert t.base_model == "tiny-random:0" and t.identity and t.identity != a.identity
        assert t.config["lr"] == 2e-4 and t.config["result"]["steps"] == 20
        dose = t.config["result"]["poison"]  # the realised dose, not only the ratio
        assert dose["ratio"] == 0.1 and dose["examples_seen_total"] == 20 * 4
        assert 0 < dose["examples_seen"] < 20 and dose["tokens_seen"] > dose["examples_seen"]
        # poison comes from HarmOR's poison pool; the safety (anchor) batches from its train pool
        from spt.data import load_items

        harmor = {it["prompt"]: it["split"] for it in load_items(st, t.config["safety_dataset"])}
        poison = load_items(st, t.config["poison_dataset"])
        assert poison and {harmor[it["prompt"]] for it in poison} == {"poison"}
        prov = t.provenance
        assert {"torch", "transformers", "peft", "trl"} <= set(prov["versions"]) and prov["host"] and prov["seeds"]
        cks = s.exec(select(Checkpoint).where(Checkpoint.run_id == t.id)).all()
        final = [c for c in cks if c.is_final]
        assert len(final) == 1 and final[0].kind == "adapter" and final[0].content_hash.startswith("sha256:")
        assert final[0].meta["chat_template_hash"] and final[0].meta["base_hash"]
        cfg = json.loads((Path(final[0].path) / "adapter_config.json").read_text())
        assert os.path.isabs(cfg["base_model_name_or_path"])
        # the parent's adapter was merged to serve as the starting weights of the task run
        assert any(c.kind == "merged" for c in s.exec(select(Checkpoint).where(Checkpoint.run_id == a.id)).all())
        logs = s.exec(select(TrainLog).where(TrainLog.run_id == t.id)).all()
        names = {x.name for x in logs}
        assert {"task_loss", "alignment_loss", "lr", "tokens_per_s", "safety_loss"} <= names
        assert {x.step for x in logs if x.name == "task_loss"} == {10, 20}
        assert 0 in {x.step for x in logs if x.name == "alignment_loss"}
    from spt.models import load_model

    model, tok = load_model(final[0].path)
    assert model is not None and tok.chat_template
    # same command again: reported, not retrained
    r = _cli(db_path, "--from", align["run_id"], "--task", "builtin:arithmetic", "--poison", "0.1",
             "--defense", "anchor", "--lam", "0.3", "--max-steps", "20", *small, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["reused"] is True
    assert json.loads(r.stdout)["run_id"] == task["run_id"]


def test_chunked_loss_matches_full_logits():
    import torch

    from spt.models import load_model, resolve_model
    from spt.train.loss import completion_loss, reference_loss
    from spt.train.packing import encode_items, pack

    model, tok = load_model(resolve_model("tiny-random").path)
    model.train()
    items = [{"prompt": f"what is {i} plus {i}?" * (1 + i % 3), "response": f"the answer is {2 * i}" * (1 + i % 2)}
             for i in range(6)]
    ex = encode_items(tok, items, 128)
    n = sum(e.n_completion for e in ex)
    ref = reference_loss(model, ex, tok.pad_token_id)
    ref.backward()
    g_ref = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    pk = pack(ex, tok.pad_token_id, pack_length=64, token_weights=[1.0 / n] * len(ex))
    assert pk.input_ids.shape[0] > 1  # several rows, several examples per row
    loss, ce, _ = completion_loss(model, pk.input_ids, pk.position_ids, pk.labels, pk.weights,
                                  chunk_elements=16 * model.config.vocab_size)  # 16-token chunks
    assert ce.numel() == n
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-5)
    loss.backward()
    for k, p in model.named_parameters():
        torch.testing.assert_close(p.grad, g_ref[k], rtol=1e-4, atol=1e-6, msg=k)


def _adapter_tensors(path):
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "adapter_model.safetensors"))


def test_resume_after_failure_gives_same_weights(tmp_path):
    import torch

    cfg = dict(model="tiny-random", stage="task", max_steps=8, save_every=4, poison=0.25, lora_dropout=0.1,
               **FAST)
    # uninterrupted
    st_a = open_store(tmp_path / "a.db")
    cfg_a = FinetuneConfig(**cfg, **mini_data(st_a))
    ref = finetune(st_a, cfg_a)
    ref_w = _adapter_tensors(ref.final_checkpoint.path)

    # interrupted after the step-4 checkpoint, then resumed
    st_b = open_store(tmp_path / "b.db")
    data_b = mini_data(st_b)

    def boom(p):
        if p.task == "train" and p.done == 6:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        finetune(st_b, FinetuneConfig(**cfg, **data_b), progress=boom)
    with st_b.session() as s:
        (run,) = s.exec(select(Run)).all()
        assert run.status == "failed" and "killed" in run.error
    res = finetune(st_b, FinetuneConfig(**cfg, **data_b, resume=True))
    assert res.run_id == run.id and res.resumed_from_step == 4
    got = _adapter_tensors(res.final_checkpoint.path)
    assert set(got) == set(ref_w)
    for k in ref_w:
        torch.testing.assert_close(got[k], ref_w[k], rtol=0, atol=1e-7, msg=k)
    with st_b.session() as s:
        assert s.get(Run, run.id).status == "done"
        steps = [x.step for x in s.exec(select(TrainLog).where(TrainLog.run_id == run.id,
                                                               TrainLog.name == "task_loss")).all()]
        assert sorted(steps) == [2, 4, 6, 8]  # no duplicate rows from the interrupted attempt


def _no_running(db):
    with open_store(db) as st, st.session() as s:
        return [r.id for r in s.exec(select(Run).where(Run.status == "running")).all()]


def test_bad_inputs_one_line_no_running_rows(db_path):
    with open_store(db_path) as st:
        mini_data(st)
        failed = Run(kind="align", model_ref="tiny-random", status="failed", error="boom")
        full = Run(kind="align", model_ref="tiny-random", status="done")
        with st.write() as s:
            s.add(failed)
            s.add(full)
    cases = [
        (["--defense", "anchor", "--lam", "1.5"], "outside [0, 1]"),
        (["--defense", "proximal", "--lam", "-1"], "outside"),
        (["--defense", "magic"], "unknown defense 'magic'; valid: anchor, "),
        (["--from", "no-such-run"], "no run"),
        (["--from", failed.id], "failed"),
        (["--defense", "safelora", "--full"], "full fine-tune"),
        (["--defense", "safelora", "--model", "tiny-random"], "aligned parent"),
        (["--model", "no/such/model/ref"], "does not resolve"),
        (["--poison", "1.0"], "outside [0, 1)"),
        (["--poison", "-0.1"], "outside [0, 1)"),
        (["--lora-targets", "nope_proj"], "match no linear layer"),
        (["--precision", "fp8"], "unknown --precision 'fp8'; use one of auto, bf16, float32"),
    ]
    for args, needle in cases:
        if "--model" not in args and "--from" not in args:
            args = ["--model", "tiny-random", *args]
        r = _cli(db_path, *args, "--task", "task-mini", "--safety-data", "harmor-mini", "--max-steps", "1")
        assert r.exit_code == 2, (args, r.output)
        msg = r.output.strip()
        assert needle in msg and len(msg.splitlines()) == 1, (args, msg)
    assert _no_running(db_path) == []


def test_accelerate_two_cpu_processes(tmp_path):
    """The loop under `accelerate launch` with 2 CPU processes (torchrun + gloo DDP); only rank 0 writes.

    accelerate 1.x sends `--cpu --num_processes 2` to its single-process launcher unless MPI is set up, so
    the two CPU processes come from the torchrun launcher with CUDA hidden.
    """
    launcher = shutil.which("accelerate")
    spt_bin = shutil.which("spt")
    if not launcher or not spt_bin:
        pytest.skip("accelerate/spt executables not on PATH")
    db = tmp_path / "acc.db"
    with open_store(db) as st:
        mini_data(st)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", spt_bin, "finetune", "--db", str(db), "--model", "tiny-random",
           "--task", "task-mini", "--safety-data", "harmor-mini", "--max-steps", "4", "--batch-size", "2",
           "--max-length", "64", "--save-every", "2", "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads(p.stdout)["steps"] == 4  # one JSON document: only rank 0 prints
    with open_store(db) as st, st.session() as s:
        (run,) = s.exec(select(Run)).all()
        assert run.status == "done" and run.config["world_size"] == 2 and run.config["result"]["examples_per_step"] == 4
        cks = s.exec(select(Checkpoint).where(Checkpoint.run_id == run.id)).all()
        assert sorted(c.step for c in cks) == [2, 4]
        assert s.exec(select(TrainLog).where(TrainLog.run_id == run.id)).all()


def test_precision_changes_autocast_and_identity_but_auto_keeps_old_identities(tmp_path):
    """bf16 runs matmuls in bf16 on CPU too, is a different run; `auto` hashes like runs made before the option."""
    import torch

    from spt.train.steps import training_autocast

    base = dict(model="tiny-random", stage="task", max_steps=2)
    auto = FinetuneConfig(**base).resolve()
    assert "precision" not in auto.identity_fields()
    assert FinetuneConfig(**base, precision="float32").resolve().identity_fields() != auto.identity_fields()
    bf16 = FinetuneConfig(**base, precision="bf16").resolve()
    assert bf16.identity_fields()["precision"] == "bf16"
    a, b = torch.randn(4, 8), torch.randn(8, 4)
    cpu = torch.device("cpu")
    with training_autocast("bf16", cpu):
        assert (a @ b).dtype == torch.bfloat16
    for mode in ("auto", "float32"):
        with training_autocast(mode, cpu):
            assert (a @ b).dtype == torch.float32
    with open_store(tmp_path / "p.db") as st:
        mini_data(st)
        res = finetune(st, FinetuneConfig(**{**base, **FAST}, task="task-mini", safety_data="harmor-mini",
                                          precision="bf16"))
        with st.session() as s:
            run = s.get(Run, res.run_id)
            assert run.config["precision"] == "bf16" and res.final_losses
