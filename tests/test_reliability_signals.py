"""SIGTERM / SIGINT during finetune: checkpoint at the next step boundary, run `interrupted`, exit non-zero;
`--resume` continues it to the weights of an uninterrupted run. Crash leftovers are cleaned on resume, and
trainer states load with `weights_only=True`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlmodel import select

from spt.errors import SptError
from spt.paths import artifacts_dir
from spt.store import open_store
from spt.store.models import Checkpoint, Run, TrainLog
from spt.train import INTERRUPTED, FinetuneConfig, FinetuneResult, Interrupted, finetune

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import FAST, mini_data  # noqa: E402

CFG = dict(model="tiny-random", stage="task", poison=0.25, lora_dropout=0.1, **FAST)


def _adapter(path):
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "adapter_model.safetensors"))


def _final(res):
    return _adapter(res.final_checkpoint.path)


def _same(a, b):
    import torch

    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-7, msg=k)


def _reference(tmp_path, **cfg):
    st = open_store(tmp_path / "ref.db")
    res = finetune(st, FinetuneConfig(**{**CFG, **cfg}, **mini_data(st)))
    st.close()
    return _final(res)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_checkpoints_marks_interrupted_and_resume_matches(tmp_path, signum):
    cfg = dict(max_steps=10, save_every=4)
    ref = _reference(tmp_path, **cfg)
    st = open_store(tmp_path / "b.db")
    data = mini_data(st)

    def send(p):
        if p.task == "train" and p.done == 6:  # a real signal to this process, between two step boundaries' checkpoints
            os.kill(os.getpid(), signum)

    with pytest.raises(Interrupted) as ei:
        finetune(st, FinetuneConfig(**CFG, **cfg, **data), progress=send)
    assert ei.value.exit_code == 128 + signum and ei.value.step == 6
    with st.session() as s:
        (run,) = s.exec(select(Run)).all()
        steps = sorted(c.step for c in s.exec(select(Checkpoint)).all())
    assert run.status == INTERRUPTED and "step 6/10" in run.error
    assert steps == [4, 6]  # the regular step-4 checkpoint and the one at the interruption
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))
    res = finetune(st, FinetuneConfig(**CFG, **cfg, **data, resume=True))
    assert res.run_id == run.id and res.resumed_from_step == 6
    _same(_final(res), ref)
    with st.session() as s:
        assert s.get(Run, run.id).status == "done"
        logged = [x.step for x in s.exec(select(TrainLog).where(TrainLog.run_id == run.id,
                                                                TrainLog.name == "task_loss")).all()]
    assert sorted(logged) == [2, 4, 6, 8, 10]  # no row lost or duplicated across the interruption
    st.close()


def _spt(db, *args, **kw):
    cmd = [sys.executable, "-m", "spt.cli", "--db", str(db), "finetune", "--model", "tiny-random",
           "--task", "task-mini", "--safety-data", "harmor-mini", "--poison", "0.25", "--poison-data", "poison-mini",
           "--batch-size", "4", "--max-length", "64", "--log-every", "2", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, **kw)


def test_kill_term_subprocess_then_resume_gives_same_weights(tmp_path):
    """`kill -TERM` a real `spt finetune` process mid-training, then `spt finetune --resume`."""
    ref = _reference(tmp_path, max_steps=120, save_every=10, lora_dropout=0.05)  # the CLI's default dropout
    db = tmp_path / "b.db"
    st = open_store(db)
    mini_data(st)
    st.close()
    args = ["--max-steps", "120", "--save-every", "10"]
    p = _spt(db, *args)
    art = artifacts_dir(db)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and p.poll() is None:  # wait for the first checkpoint on disk
        if art.exists() and any(d.name.startswith("step-") for r in art.iterdir() for d in r.iterdir()):
            break
        time.sleep(0.02)
    assert p.poll() is None, p.communicate()
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=240)
    assert p.returncode == 128 + signal.SIGTERM, (out, err)
    assert "interrupted by SIGTERM" in err and len(err.strip().splitlines()) == 1, err
    with open_store(db) as st2, st2.session() as s:
        (run,) = s.exec(select(Run)).all()
        cks = s.exec(select(Checkpoint)).all()
    assert run.status == INTERRUPTED and cks and not any(c.is_final for c in cks)
    stopped_at = max(c.step for c in cks)
    assert 10 <= stopped_at < 120
    p2 = _spt(db, *args, "--resume", "--json")
    out2, err2 = p2.communicate(timeout=300)
    assert p2.returncode == 0, err2
    import json

    res = FinetuneResult.from_dict(json.loads(out2))
    assert res.run_id == run.id and res.resumed_from_step == stopped_at
    _same(_final(res), ref)


def test_resume_cleans_leftovers_and_refuses_foreign_state(tmp_path):
    st = open_store(tmp_path / "b.db")
    data = mini_data(st)
    cfg = dict(max_steps=6, save_every=2)

    def boom(p):
        if p.task == "train" and p.done == 3:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        finetune(st, FinetuneConfig(**CFG, **cfg, **data), progress=boom)
    with st.session() as s:
        (run,) = s.exec(select(Run)).all()
        (ck,) = s.exec(select(Checkpoint)).all()
    run_dir = artifacts_dir(st.path) / run.id
    # what a kill leaves: a temporary copy of a dead writer, a folder renamed without its row
    (run_dir / ".step-000004.tmp-999999999").mkdir()
    (run_dir / "step-000004").mkdir()
    # a trainer state that needs unpickling code is refused
    import torch

    good = Path(ck.meta["state_path"]).read_bytes()
    torch.save({"step": 2, "evil": SptError("x")}, ck.meta["state_path"])
    with pytest.raises(SptError, match="refusing to load"):
        finetune(st, FinetuneConfig(**CFG, **cfg, **data, resume=True))
    Path(ck.meta["state_path"]).write_bytes(good)
    res = finetune(st, FinetuneConfig(**CFG, **cfg, **data, resume=True))
    assert res.resumed_from_step == 2 and res.status == "done"
    names = sorted(d.name for d in run_dir.iterdir())
    assert names == ["final", "step-000002", "step-000004"]  # step-4 rewritten by the resumed run, registered
    with st.session() as s:
        assert sorted(c.step for c in s.exec(select(Checkpoint)).all()) == [2, 4, 6]
    st.close()
