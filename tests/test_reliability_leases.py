"""Leases on running runs: a live one is never adopted, an expired one is shown stale, reaped and resumed;
one running row per identity (unique index); concurrent workers on one store train a configuration once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import select
from typer.testing import CliRunner

from spt.cli import app
from spt.store import open_store
from spt.store.lease import Heartbeat, is_stale, my_owner
from spt.store.models import Run, utcnow
from spt.train import FinetuneConfig, finetune
from spt.train.loop import LeaseHeld

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import FAST, mini_data  # noqa: E402

runner = CliRunner()
CFG = dict(model="tiny-random", stage="task", max_steps=6, save_every=2, **FAST)


def _ago(seconds: float) -> str:
    return (datetime.now(timezone.utc) - timedelta(seconds=seconds)).isoformat(timespec="microseconds")


def _set(st, run_id, **fields):
    with st.write() as s:
        r = s.get(Run, run_id)
        for k, v in fields.items():
            setattr(r, k, v)
        s.add(r)


def _failed_run(st, data):
    def boom(p):
        if p.task == "train" and p.done == 3:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        finetune(st, FinetuneConfig(**CFG, **data), progress=boom)
    with st.session() as s:
        (run,) = s.exec(select(Run)).all()
    assert run.status == "failed" and run.lease_owner is None  # ending the run released its lease
    return run


def test_live_lease_is_not_adopted_expired_one_is_reaped_and_resumed(db_path):
    st = open_store(db_path)
    data = mini_data(st)
    run = _failed_run(st, data)
    # another machine is training it right now (a worker that crashed after marking... or a race)
    _set(st, run.id, status="running", lease_owner="gpu-node-7:4242:x", lease_heartbeat=utcnow())
    with pytest.raises(LeaseHeld, match="being trained by gpu-node-7 pid 4242"):
        finetune(st, FinetuneConfig(**CFG, **data, resume=True))
    res = runner.invoke(app, ["--db", str(db_path), "runs", "--json"])
    assert json.loads(res.output)[0]["stale"] is False
    # ... and then goes silent: its heartbeat is older than the lease timeout
    _set(st, run.id, lease_heartbeat=_ago(3600))
    res = runner.invoke(app, ["--db", str(db_path), "runs"])
    assert "running (stale)" in res.output and "spt runs reap" in res.output
    res = runner.invoke(app, ["--db", str(db_path), "runs", "reap", "--dry-run", "--json"])
    assert [r["id"] for r in json.loads(res.output)["runs"]] == [run.id]
    with st.session() as s:
        assert s.get(Run, run.id).status == "running"  # a dry run changes nothing
    res = runner.invoke(app, ["--db", str(db_path), "runs", "reap"])
    assert res.exit_code == 0 and f"interrupted {run.id}" in res.output
    with st.session() as s:
        assert s.get(Run, run.id).status == "interrupted"
    out = finetune(st, FinetuneConfig(**CFG, **data, resume=True))
    assert out.run_id == run.id and out.resumed_from_step == 2 and out.status == "done"
    st.close()


def test_dead_owner_on_this_host_is_stale_at_once(db_path):
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    owner = f"{socket.gethostname()}:{p.pid}:x"
    assert is_stale(owner, utcnow(), timeout=3600)
    assert not is_stale(my_owner(), _ago(10), timeout=3600)
    assert is_stale("elsewhere:1:x", _ago(120), timeout=60) and not is_stale("elsewhere:1:x", _ago(5), timeout=60)


def test_one_running_row_per_identity(store):
    with store.write() as s:
        s.add(Run(kind="finetune", model_ref="m", identity="sha256:x", status="running"))
        s.add(Run(kind="finetune", model_ref="m", identity="sha256:x", status="failed"))
    with pytest.raises(IntegrityError):
        with store.write() as s:
            s.add(Run(kind="finetune", model_ref="m", identity="sha256:x", status="running"))


def test_heartbeat_renews_only_its_own_lease(store):
    run = Run(kind="finetune", model_ref="m", identity="sha256:y", status="running", lease_owner=my_owner(),
              lease_heartbeat=_ago(1000))
    other = Run(kind="finetune", model_ref="m", identity="sha256:z", status="running", lease_owner="b:1:x",
                lease_heartbeat=_ago(1000))
    with store.write() as s:
        s.add_all([run, other])
    hb = Heartbeat(store, run.id, interval=0.05)
    with hb:
        import time

        time.sleep(0.4)
    assert hb.beats >= 2
    with store.session() as s:
        assert not is_stale(s.get(Run, run.id).lease_owner, s.get(Run, run.id).lease_heartbeat, timeout=60)
    Heartbeat(store, other.id).beat()  # not the owner: nothing renewed
    with store.session() as s:
        assert s.get(Run, other.id).lease_heartbeat == other.lease_heartbeat


def test_concurrent_workers_train_a_configuration_once(tmp_path):
    """Four `spt finetune --resume` processes on one store with the same settings: one run row, trained once."""
    db = tmp_path / "w.db"
    st = open_store(db)
    mini_data(st)
    st.close()
    cmd = [sys.executable, "-m", "spt.cli", "--db", str(db), "finetune", "--model", "tiny-random", "--task",
           "task-mini", "--safety-data", "harmor-mini", "--batch-size", "4", "--max-length", "64",
           "--max-steps", "30", "--save-every", "10", "--resume", "--json"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ}) for _ in range(4)]
    outs = [p.communicate(timeout=600) for p in procs]
    trained = reused = held = 0
    for p, (out, err) in zip(procs, outs, strict=True):
        assert "database is locked" not in err
        if p.returncode == 0:
            res = json.loads(out)
            trained += not res["reused"]
            reused += bool(res["reused"])
        else:
            assert p.returncode == 2 and "is being trained by" in err, err
            held += 1
    assert trained == 1 and trained + reused + held == 4
    with open_store(db) as st2, st2.session() as s:
        runs = s.exec(select(Run)).all()
    assert len(runs) == 1 and runs[0].status == "done"


def test_stale_evaluations_are_listed_and_reaped_live_ones_kept(store):
    """Evaluation leases (migration 0005): a running evaluation whose owner process is gone is stale and
    `reap_evaluations` marks it failed (the next `spt evaluate` resumes from its generations); one whose
    owner is alive with a fresh heartbeat is left alone; the index allows one running row per identity."""
    from spt.store.lease import reap_evaluations, stale_evaluations
    from spt.store.models import Evaluation

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with store.write() as s:
        run = Run(kind="base", model_ref="m", status="done")
        s.add(run)
        s.flush()
        gone = Evaluation(run_id=run.id, identity="A", status="running",
                          lease_owner=f"{socket.gethostname()}:{dead.pid}:x", lease_heartbeat=utcnow())
        live = Evaluation(run_id=run.id, identity="B", status="running", lease_owner=my_owner(),
                          lease_heartbeat=utcnow())
        s.add_all([gone, live])
    assert [e["id"] for e in stale_evaluations(store)] == [gone.id]
    assert [e["id"] for e in reap_evaluations(store, dry_run=True)] == [gone.id]
    with store.session() as s:
        assert s.get(Evaluation, gone.id).status == "running"  # dry run changed nothing
    assert [e["id"] for e in reap_evaluations(store)] == [gone.id]
    with store.session() as s:
        g, li = s.get(Evaluation, gone.id), s.get(Evaluation, live.id)
        assert g.status == "failed" and "reaped" in g.error and g.lease_owner is None
        assert li.status == "running" and li.lease_owner == my_owner()
    with pytest.raises(IntegrityError), store.write() as s:
        s.add(Evaluation(run_id=run.id, identity="B", status="running"))
    # the heartbeat renews an evaluation's lease, and only while this process owns it
    with store.session() as s:
        before = s.get(Evaluation, live.id).lease_heartbeat
    Heartbeat(store, live.id, table="evaluation").beat()
    Heartbeat(store, gone.id, table="evaluation").beat()  # released by the reap: nothing to renew
    with store.session() as s:
        assert s.get(Evaluation, live.id).lease_heartbeat > before
        assert s.get(Evaluation, gone.id).lease_heartbeat is None
    with pytest.raises(ValueError):
        Heartbeat(store, live.id, table="judgment")
