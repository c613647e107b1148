"""Writers wait out long transactions: a write that finds the lock held past the busy timeout retries
with backoff (reported, bounded by $SPT_WRITE_WAIT_S) instead of raising "database is locked"."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from sqlmodel import select

import spt.store.engine as engine_mod
from spt.errors import SptError
from spt.store import open_store
from spt.store.models import Run


def _hold_lock(path, seconds, ready):
    con = sqlite3.connect(str(path), isolation_level=None)
    con.execute("BEGIN IMMEDIATE")
    ready.set()
    time.sleep(seconds)
    con.execute("COMMIT")
    con.close()


def test_write_waits_past_the_busy_timeout(db_path, monkeypatch, capfd):
    monkeypatch.setattr(engine_mod, "BUSY_TIMEOUT_MS", 200)
    st = open_store(db_path)
    ready = threading.Event()
    t = threading.Thread(target=_hold_lock, args=(db_path, 1.5, ready))
    t.start()
    ready.wait()
    t0 = time.monotonic()
    with st.write() as s:
        s.add(Run(kind="base", model_ref="m", status="done"))
    waited = time.monotonic() - t0
    t.join()
    assert waited >= 1.0
    with st.session() as s:
        assert len(s.exec(select(Run)).all()) == 1
    err = capfd.readouterr().err
    assert "is locked by another writer" in err and "got the write lock" in err
    st.close()


def test_write_wait_is_bounded(db_path, monkeypatch):
    monkeypatch.setattr(engine_mod, "BUSY_TIMEOUT_MS", 100)
    monkeypatch.setenv("SPT_WRITE_WAIT_S", "0.5")
    st = open_store(db_path)
    ready = threading.Event()
    t = threading.Thread(target=_hold_lock, args=(db_path, 2.0, ready))
    t.start()
    ready.wait()
    with pytest.raises(SptError, match="stayed locked by another writer"):
        with st.write() as s:
            s.add(Run(kind="base", model_ref="m", status="done"))
    t.join()
    with st.write() as s:  # the store is usable again once the lock is released
        s.add(Run(kind="base", model_ref="m2", status="done"))
    st.close()


def test_finetune_survives_a_long_foreign_transaction(tmp_path):
    """A real `spt finetune` process keeps training while another process holds the write lock for longer
    than its busy timeout (what a large `spt import` or gather does), and finishes."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from train_helpers import mini_data

    db = tmp_path / "t.db"
    st = open_store(db)
    mini_data(st)
    st.close()
    cmd = [sys.executable, "-m", "spt.cli", "--db", str(db), "finetune", "--model", "tiny-random", "--task",
           "task-mini", "--safety-data", "harmor-mini", "--batch-size", "4", "--max-length", "64",
           "--log-every", "1", "--max-steps", "40", "--save-every", "5", "--json"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "SPT_BUSY_TIMEOUT_MS": "300"})
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and p.poll() is None:  # training has started writing
        con = sqlite3.connect(db.absolute().as_uri() + "?mode=ro", uri=True)
        n = con.execute("SELECT (SELECT count(*) FROM checkpoint) + (SELECT count(*) FROM train_log)").fetchone()[0]
        con.close()
        if n:
            break
        time.sleep(0.05)
    assert p.poll() is None
    ready = threading.Event()
    # 20× the busy timeout, and longer than the trainer's log flush interval (5 s), so a write lands in it
    _hold_lock(db, 6.0, ready)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert json.loads(out)["status"] == "done"
    assert "is locked by another writer" in err and "got the write lock" in err


def test_killed_import_leftovers_are_removed(tmp_path):
    import subprocess
    import sys

    from spt.store.merge import clean_import_leftovers

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / f"spt-import-{dead.pid}-abc").mkdir()
        (tmp_path / f"spt-import-{dead.pid}-abc" / "source.db").write_bytes(b"x" * 10)
        (tmp_path / f"spt-import-{live.pid}-def").mkdir()
        (tmp_path / "spt-import-oldstyle").mkdir()
        assert clean_import_leftovers(tmp_path) == [f"spt-import-{dead.pid}-abc"]
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"spt-import-{live.pid}-def",
                                                                     "spt-import-oldstyle"])
    finally:
        live.kill()
        live.wait()


@pytest.mark.slow  # ~100 s on an idle 2-core machine (a 60k-judgment store and 150 training steps)
def test_finetune_keeps_writing_while_a_large_import_runs(tmp_path):
    """`spt import` of a large store while `spt finetune` trains on the same store: the import commits in
    chunks, so training commits its logs *between* the import's chunks (it never waits out a busy timeout,
    here 1 s) and finishes; the import finishes too, with every row."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from store_scale import build_store
    from train_helpers import mini_data

    source = tmp_path / "colleague.db"
    built = build_store(source, 150, 60_000)
    db = tmp_path / "t.db"
    st = open_store(db)
    mini_data(st)
    st.close()
    env = {**os.environ, "SPT_BUSY_TIMEOUT_MS": "1000", "SPT_IMPORT_CHUNK_ROWS": "5000"}
    cmd = [sys.executable, "-m", "spt.cli", "--db", str(db), "finetune", "--model", "tiny-random", "--task",
           "task-mini", "--safety-data", "harmor-mini", "--batch-size", "4", "--max-length", "64",
           "--log-every", "1", "--max-steps", "150", "--save-every", "10", "--json"]
    train = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def q(sql):
        con = sqlite3.connect(db.absolute().as_uri() + "?mode=ro", uri=True, timeout=30)
        try:
            return con.execute(sql).fetchone()
        finally:
            con.close()

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and train.poll() is None and not q("SELECT count(*) FROM checkpoint")[0]:
        time.sleep(0.05)
    assert train.poll() is None, train.communicate()
    imp = subprocess.Popen([sys.executable, "-m", "spt.cli", "--db", str(db), "import", str(source), "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    logs_in_window, in_window = [], False
    while imp.poll() is None:  # while the import's chunks are being merged, training rows keep arriving
        row = q("SELECT finished_at IS NULL, (SELECT count(*) FROM train_log) FROM import_log "
                f"WHERE source_path = '{source.resolve()}'")
        if row and row[0]:
            in_window = True
            logs_in_window.append(row[1])
        time.sleep(0.05)
    out, err = imp.communicate()
    assert imp.returncode == 0, err
    t_out, t_err = train.communicate(timeout=600)
    assert train.returncode == 0, t_err[-2000:]
    assert json.loads(t_out)["status"] == "done"
    assert "database is locked" not in t_err + err and "is locked by another writer" not in t_err
    assert in_window and logs_in_window[-1] > logs_in_window[0], logs_in_window  # trained during the import
    counts = json.loads(out)["counts"]
    assert counts["judgment"]["inserted"] == built["judgment"] and counts["generation"]["inserted"] == built[
        "generation"]
