"""Real kills of `spt evaluate`, `spt judge` and `spt import`: SIGKILL a real subprocess at ≥ 5 seeded random
points each (polling the store read-only for progress, so the kill lands mid-work), re-run it each time,
and compare with an uninterrupted run: 0 lost rows, 0 duplicated rows, the same final metrics, and for
import a row-identical target (finetune has its own file, tests/test_kill_finetune.py).

Why row-identical and not byte-identical for import: an SQLite file's bytes depend on page allocation
(b-tree splits, free pages, the WAL checkpoint), and two *uninterrupted* imports already differ in their
`import_log` row (a fresh id and time per import). The canonical dump compares every row of every table,
with its rowid (so even the physical insertion order matches), and the import_log row with everything but
its event stamps (id, imported_at, finished_at); the per-table counts must match too.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import sys
import time
from pathlib import Path

import pytest
from kill_helpers import kill_when, query, spt_cmd

sys.path.insert(0, str(Path(__file__).parent))
from test_eval import make_run, make_safety_dataset, tiny_path  # noqa: E402,F401  (tiny_path: a fixture)

KILLS = 5


def _copy(src: Path, dst: Path) -> Path:
    con = sqlite3.connect(src)
    con.execute("VACUUM INTO ?", (str(dst),))
    con.close()
    return dst


def _kill_points(rng: random.Random, db: Path, cmd: list[str], progress, final: int, env=None,
                 jitter: float = 0.15, upto: float = 0.85) -> list[dict]:
    """KILLS kills: the first at a random moment of start-up, then each a random delay (up to `jitter` s) after
    the process has committed a seeded amount of new work (so every attempt both makes progress and dies
    mid-work). Targets stay below `upto` of the work, so the kill lands before the process finishes."""
    points = []
    targets = sorted(rng.sample(range(1, int(final * upto)), KILLS - 1))
    for i in range(KILLS):
        if i == 0:
            t0, wait = time.monotonic(), rng.uniform(0.2, 0.8)
            k = kill_when(cmd, lambda: time.monotonic() - t0 >= wait, env=env)  # noqa: B023
        else:
            target = max(targets[i - 1], progress() + 1)
            assert target < final, (target, final, points)
            seen: list[int] = []

            def ready(seen: list[int] = seen, target: int = target) -> bool:
                seen.append(progress())
                return seen[-1] >= target

            k = kill_when(cmd, ready, delay=rng.uniform(0.0, jitter), env=env)
        assert k["killed"] and k["rc"] == -9, (k, points)
        points.append({"after_s": k["after_s"], "progress": progress(),
                       **({"target": target, "seen": seen[-3:]} if i else {})})
    print("kill points:", points)
    assert len(points) >= KILLS
    return points


# ------------------------------------------------------------------------------------------------ evaluate


def test_kill_evaluate_at_random_points_then_rerun(tmp_path, tiny_path):  # noqa: F811
    from spt.store import open_store

    base = tmp_path / "base.db"
    with open_store(base) as st:
        make_safety_dataset(st, n_pairs=30)
        run_id, _ = make_run(st, tiny_path)
    args = ["evaluate", run_id, "--dataset", "mini-harmor", "--limit", "60", "--max-new-tokens", "24",
            "--batch-size", "2", "--json"]
    ref_db, db = _copy(base, tmp_path / "ref.db"), _copy(base, tmp_path / "k.db")
    import subprocess

    ref = subprocess.run(spt_cmd(ref_db, *args), capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    ref_out = json.loads(ref.stdout)

    gens = lambda: query(db, "SELECT count(*) FROM generation") or 0  # noqa: E731
    points = _kill_points(random.Random(11), db, spt_cmd(db, *args), gens, 60, upto=0.6)
    assert any(0 < p["progress"] < 60 for p in points)
    done = subprocess.run(spt_cmd(db, *args), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)

    def rows(path):
        with sqlite3.connect(path) as con:
            evs = con.execute("SELECT status, lease_owner FROM evaluation").fetchall()
            g = con.execute("SELECT item_id, response, count(*) OVER (PARTITION BY item_id) FROM generation "
                            "ORDER BY item_id").fetchall()
        return evs, g

    evs, g = rows(db)
    ref_evs, ref_g = rows(ref_db)
    assert evs == [("done", None)] == ref_evs  # one evaluation, finished, its lease released
    assert len(g) == 60 and all(n == 1 for _, _, n in g)  # 0 lost, 0 duplicated
    assert [(i, r) for i, r, _ in g] == [(i, r) for i, r, _ in ref_g]  # the same (greedy) responses
    assert out["n_reused"] + out["n_generated"] == 60 and out["n_reused"] > 0
    assert out["metrics"] == ref_out["metrics"]  # values, intervals, n and n_unscored


# ------------------------------------------------------------------------------------------------ judge


N_JUDGED = 400


@pytest.fixture
def server():
    from fake_openai_server import FakeOpenAI

    srv = FakeOpenAI().start()
    srv._httpd.handle_error = lambda *a: None  # a killed client resets its connections: not an error here
    # per generation a fixed verdict (score 1..5, some unparseable), each after a short wait
    for k in range(N_JUDGED):
        text = f"#thescore: {k % 5 + 1}" if k % 11 else "no score here"
        srv.script[f"g{k}"] = [{"sleep": 0.03, "text": text}]
    yield srv
    srv.stop()


def test_kill_judge_at_random_points_then_rerun(tmp_path, server):
    import subprocess

    from test_judge import make_eval

    from spt.judge.metrics import compute_judge_metrics
    from spt.store import open_store

    base = tmp_path / "base.db"
    with open_store(base) as st:
        eid = make_eval(st, [("harmful" if k % 2 else "benign", f"c{k % 3}", f"prompt {k}", f"reply FAKE[g{k}]")
                             for k in range(N_JUDGED)])
    ref_db, db = _copy(base, tmp_path / "ref.db"), _copy(base, tmp_path / "k.db")
    args = ["judge", eid, "--judge", "openai:m", "--rubric", "harmfulness", "--base-url", server.base_url,
            "--max-connections", "2", "--max-retries", "0", "--timeout", "10", "--json"]
    env = {**os.environ, "SPT_JUDGE_RETRY_BASE_S": "0.01"}
    ref = subprocess.run(spt_cmd(ref_db, *args), capture_output=True, text=True, timeout=300, env=env)
    assert ref.returncode == 0, ref.stderr

    judged = lambda: query(db, "SELECT count(*) FROM judgment") or 0  # noqa: E731
    # judgments are committed 64 at a time: a kill up to 0.5 s after a commit lands mid-batch (calls answered,
    # verdicts not yet committed, so they are asked again)
    _kill_points(random.Random(22), db, spt_cmd(db, *args), judged, N_JUDGED, env=env, jitter=0.5)
    done = subprocess.run(spt_cmd(db, *args), capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr

    def verdicts(path):
        with sqlite3.connect(path) as con:
            cur = con.execute("SELECT g.item_id, j.status, j.reason, j.score, j.label FROM judgment j "
                              "JOIN generation g ON g.id = j.generation_id WHERE j.superseded_by IS NULL "
                              "ORDER BY g.item_id").fetchall()
            total = con.execute("SELECT count(*) FROM judgment").fetchone()[0]
            jid = con.execute("SELECT id FROM judge").fetchone()[0]
        return cur, total, jid

    got, total, jid = verdicts(db)
    want, ref_total, ref_jid = verdicts(ref_db)
    assert total == ref_total == N_JUDGED  # 0 duplicated (no second row for a generation), 0 lost
    assert len({g for g, *_ in got}) == N_JUDGED and got == want
    with open_store(db) as a, open_store(ref_db) as b:
        ma = compute_judge_metrics(a, eid, jid, write=False)
        mb = compute_judge_metrics(b, eid, ref_jid, write=False)
    assert ma == mb and ma  # the same metrics, with n and n_unscored


# ------------------------------------------------------------------------------------------------ import


def _canonical(path: Path) -> dict[str, list[tuple]]:
    """Every row of every table with its rowid; import_log rows without their event stamps."""
    con = sqlite3.connect(path)
    try:
        out = {}
        for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"):
            cols = [r[1] for r in con.execute(f'PRAGMA table_info("{name}")')]
            if name == "import_log":
                cols = [c for c in cols if c not in ("id", "imported_at", "finished_at")]
            sel = ", ".join(f'"{c}"' for c in cols)
            rowid = "" if name == "import_log" else "rowid, "
            out[name] = con.execute(f'SELECT {rowid}{sel} FROM "{name}" ORDER BY {rowid or ""}{sel}').fetchall()
        return out
    finally:
        con.close()


def test_kill_import_at_random_points_then_rerun(tmp_path):
    import subprocess

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from store_scale import build_store

    from spt.store import open_store

    source = tmp_path / "colleague.db"
    build_store(source, 150, 15_000)
    base = tmp_path / "base.db"  # the target already holds rows of its own, and a few of the source's
    build_store(base, 20, 400, seed=5)
    with sqlite3.connect(base) as con:
        con.execute("ATTACH ? AS s", (str(source),))
        con.execute("INSERT OR IGNORE INTO item SELECT * FROM s.item LIMIT 30")
    con.close()
    open_store(base).close()
    ref_db, db = _copy(base, tmp_path / "ref.db"), _copy(base, tmp_path / "k.db")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "SPT_IMPORT_CHUNK_ROWS": "25", "TMPDIR": str(tmp)}
    args = ["import", str(source), "--json"]
    ref = subprocess.run(spt_cmd(ref_db, *args), capture_output=True, text=True, timeout=300, env=env)
    assert ref.returncode == 0, ref.stderr
    assert list(tmp.iterdir()) == []  # its source copy removed on success
    final = sum(query(ref_db, f"SELECT count(*) FROM {t}") for t in ("generation", "judgment", "metric"))

    merged = lambda: query(db, "SELECT (SELECT count(*) FROM generation) + (SELECT count(*) FROM judgment) "  # noqa: E731
                           "+ (SELECT count(*) FROM metric)") or 0
    start = merged()
    # 25-row chunks: ~1 200 commits, a few seconds of merging; targets in its first half, kills within 50 ms
    points = _kill_points(random.Random(33), db, spt_cmd(db, *args), lambda: merged() - start, final - start,
                          env=env, jitter=0.05, upto=0.5)
    assert any(p["progress"] > 0 for p in points)
    assert query(db, "SELECT count(*) FROM import_log WHERE finished_at IS NULL") == 1  # one resumable import
    assert len(list(tmp.iterdir())) >= 1  # copies of killed imports are left in TMPDIR...
    done = subprocess.run(spt_cmd(db, *args), capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert list(tmp.iterdir()) == []  # ...and removed by the next import (their pids are dead)

    got, want = _canonical(db), _canonical(ref_db)
    assert got.keys() == want.keys()
    for table in want:
        assert got[table] == want[table], table
    assert json.loads(done.stdout)["counts"] == json.loads(ref.stdout)["counts"]
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    shutil.rmtree(tmp, ignore_errors=True)
