"""Real kills of `spt finetune`: SIGKILL a real process at seeded random points, resume each time with
`--resume`, and end with the weights and loss curve of an uninterrupted run: one run row, no TrainLog row
lost or duplicated, one checkpoint row per saved step, no unregistered or temporary folder left."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from sqlmodel import select

from spt.paths import artifacts_dir
from spt.store import open_store
from spt.store.models import Checkpoint, Run, TrainLog
from spt.train import FinetuneConfig, FinetuneResult, finetune

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import FAST, mini_data  # noqa: E402

STEPS, SAVE = 80, 8
KILLS = 5


def _cmd(db):
    return [sys.executable, "-m", "spt.cli", "--db", str(db), "finetune", "--model", "tiny-random", "--task",
            "task-mini", "--safety-data", "harmor-mini", "--batch-size", "4", "--max-length", "64",
            "--log-every", "2", "--max-steps", str(STEPS), "--save-every", str(SAVE), "--resume", "--json"]


def _progress(db):
    """(run status, newest checkpoint step, TrainLog rows) read without touching the store's content."""
    con = sqlite3.connect(Path(db).absolute().as_uri() + "?mode=ro", uri=True, timeout=30)
    try:
        run = con.execute("SELECT id, status FROM run").fetchone()
        ck = con.execute("SELECT max(step) FROM checkpoint").fetchone()[0]
        n = con.execute("SELECT count(*) FROM train_log").fetchone()[0]
    finally:
        con.close()
    return (run[1] if run else None), ck, n


def _tensors(path):
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "adapter_model.safetensors"))


def test_sigkill_finetune_at_random_points_then_resume(tmp_path):
    import torch

    ref_store = open_store(tmp_path / "ref.db")
    cfg = dict(model="tiny-random", stage="task", max_steps=STEPS, save_every=SAVE, lora_dropout=0.05, **FAST)
    ref = finetune(ref_store, FinetuneConfig(**cfg, **mini_data(ref_store)))
    ref_w = _tensors(ref.final_checkpoint.path)
    with ref_store.session() as s:
        ref_log = sorted((r.step, r.name, r.value) for r in s.exec(select(TrainLog)).all()
                         if r.name in ("task_loss", "alignment_loss"))
    ref_store.close()

    db = tmp_path / "k.db"
    st = open_store(db)
    mini_data(st)
    st.close()
    rng = random.Random(1234)
    # seeded kill points: one during start-up (import, planning), the rest a random moment after a random
    # checkpoint (mid-step, mid-log flush or mid-checkpoint write), later each time as the run resumes
    targets = [None, *sorted(rng.sample(range(SAVE, STEPS - SAVE, SAVE), KILLS - 1))]
    points = []
    for target in targets:
        p = subprocess.Popen(_cmd(db), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ})
        jitter = rng.uniform(0.0, 0.5)
        if target is None:
            time.sleep(rng.uniform(0.5, 3.0))
        else:
            while p.poll() is None and (_progress(db)[1] or 0) < target:
                time.sleep(0.02)
            time.sleep(jitter)
        assert p.poll() is None, p.communicate()  # the kill lands before the run ends
        p.send_signal(signal.SIGKILL)
        p.communicate()
        points.append((target, round(jitter, 2), *_progress(db)))
    print("kill points (after checkpoint, + s, status, last checkpoint step, train_log rows):", points)
    done = subprocess.run(_cmd(db), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    res = FinetuneResult.from_dict(json.loads(done.stdout))

    with open_store(db) as st2, st2.session() as s:
        runs = s.exec(select(Run)).all()
        cks = s.exec(select(Checkpoint)).all()
        log = sorted((r.step, r.name, r.value) for r in s.exec(select(TrainLog)).all()
                     if r.name in ("task_loss", "alignment_loss"))
    assert len(runs) == 1 and runs[0].status == "done" and res.run_id == runs[0].id
    steps = sorted(c.step for c in cks)
    assert len(steps) == len(set(steps)) and steps[-1] == STEPS  # one row per saved step
    assert set(range(SAVE, STEPS, SAVE)) <= set(steps)
    # no row lost or duplicated, and the same curve as the uninterrupted run
    assert [(a, b) for a, b, _ in log] == [(a, b) for a, b, _ in ref_log]
    for (_, _, got), (_, _, want) in zip(log, ref_log, strict=True):
        assert abs(got - want) < 1e-5
    got_w = _tensors(res.final_checkpoint.path)
    for k in ref_w:
        torch.testing.assert_close(got_w[k], ref_w[k], rtol=0, atol=1e-7, msg=k)
    run_dir = artifacts_dir(db) / runs[0].id
    on_disk = sorted(d.name for d in run_dir.iterdir())
    assert on_disk == sorted(Path(c.path).name for c in cks)  # nothing unregistered, no temporary copies
    assert len(points) >= KILLS, points


def test_full_ft_proximal_killed_and_resumed_equals_uninterrupted(tmp_path):
    """Full fine-tune with `proximal`: SIGKILL after a checkpoint, `--resume`, and the final weights equal an
    uninterrupted run's bit for bit: the anchor is the start (aligned) weights, never the resume checkpoint."""
    import torch
    from safetensors.torch import load_file

    steps, save = 16, 4
    args = ["--full", "--defense", "proximal", "--lam", "50", "--lr", "1e-3", "--max-steps", str(steps),
            "--save-every", str(save)]
    ref_store = open_store(tmp_path / "ref.db")
    ref = finetune(ref_store, FinetuneConfig(model="tiny-random", lora=False, defense="proximal", lam=50.0, lr=1e-3,
                                             max_steps=steps, save_every=save, **FAST, **mini_data(ref_store)))
    ref_store.close()
    ref_w = load_file(str(Path(ref.final_checkpoint.path) / "model.safetensors"))

    db = tmp_path / "k.db"
    st = open_store(db)
    mini_data(st)
    st.close()
    p = subprocess.Popen(_cmd(db)[:-6] + args + ["--resume", "--json"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while p.poll() is None and (_progress(db)[1] or 0) < save and time.monotonic() < deadline:
        time.sleep(0.02)
    assert p.poll() is None, p.communicate()
    p.send_signal(signal.SIGKILL)
    p.communicate()
    status, killed_at, _ = _progress(db)
    assert status == "running" and save <= killed_at < steps
    done = subprocess.run(_cmd(db)[:-6] + args + ["--resume", "--json"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    res = FinetuneResult.from_dict(json.loads(done.stdout))
    assert res.resumed_from_step == killed_at
    got = load_file(str(Path(res.final_checkpoint.path) / "model.safetensors"))
    assert set(got) == set(ref_w)
    diff = [k for k in ref_w if not torch.equal(got[k], ref_w[k])]
    assert not diff, diff


def test_a_precision_left_by_another_trainer_does_not_leak_into_spt_training(tmp_path):
    """A TRL/transformers Trainer earlier in the same process leaves bf16 in accelerate's process-wide state;
    spt's in-process run must still train in float32, equal to a clean process's run bit for bit."""
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    steps = 4
    cmd = [*_cmd(tmp_path / "clean.db")]
    cmd[cmd.index("--max-steps") + 1] = str(steps)
    st = open_store(tmp_path / "clean.db")
    mini_data(st)
    st.close()
    clean = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert clean.returncode == 0, clean.stderr
    want = _tensors([c for c in json.loads(clean.stdout)["checkpoints"] if c["is_final"]][0]["path"])

    AcceleratorState._reset_state(reset_partial_state=True)  # earlier in-process runs of this session
    Accelerator(cpu=True, mixed_precision="bf16")  # what a Trainer(bf16=True) leaves behind
    try:
        assert AcceleratorState._shared_state["_mixed_precision"] == "bf16"
        st = open_store(tmp_path / "inproc.db")
        cfg = dict(model="tiny-random", task="task-mini", safety_data="harmor-mini", batch_size=4, max_length=64,
                   log_every=2, max_steps=steps, save_every=SAVE)
        mini_data(st)
        res = finetune(st, FinetuneConfig(**cfg))
        st.close()
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    got = _tensors(res.final_checkpoint.path)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0, msg=k)
