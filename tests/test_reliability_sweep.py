"""Four `spt sweep` workers on one store over the same plan (sweeps resume by default): every configuration
is trained exactly once, evaluated once and judged once, and no process ever reports "database is locked".

The workers race on everything at once: planning the same runs (one running row per identity), training
(a live lease is skipped, not adopted), evaluating the same checkpoints (one running evaluation per identity:
a second worker waits for the first), judging the same generations (one current judgment per judge and
generation), and writing train logs, generations and judgments to one SQLite file.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest

from spt.store import open_store

WORKERS = 4
PLAN = ["sweep", "--model", "tiny-random", "--defense", "none,anchor", "--lam", "0.1,0.3", "--poison", "0.1",
        "--seeds", "0", "--max-steps", "4", "--set", "batch_size=2", "--set", "save_every=2", "--eval-set",
        "limit=4", "--eval-set", "max_new_tokens=4", "--judge", "keyword", "--no-frontier", "--json"]


@pytest.mark.slow
def test_four_sweep_workers_train_each_configuration_once(tmp_path):
    db = tmp_path / "shared.db"
    open_store(db).close()
    env = {**os.environ, "SPT_BUSY_TIMEOUT_MS": "2000"}  # short lock waits: contention shows up as retries
    procs = [subprocess.Popen([sys.executable, "-m", "spt.cli", "--db", str(db), *PLAN], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(WORKERS)]
    outs = [p.communicate(timeout=900) for p in procs]
    summaries = []
    for p, (out, err) in zip(procs, outs, strict=True):
        assert "database is locked" not in out + err, err[-2000:]
        assert "Traceback" not in err, err[-3000:]
        assert p.returncode == 0, err[-2000:]
        summaries.append(json.loads(out))

    n_configs = len(summaries[0]["configs"])
    assert n_configs >= 3 and all(len(s["configs"]) == n_configs for s in summaries)
    # every configuration was trained by exactly one worker; the others reused or skipped it
    for i in range(n_configs):
        trained = [s["configs"][i] for s in summaries if s["configs"][i].get("trained")]
        assert len(trained) == 1, [s["configs"][i] for s in summaries]
        assert all(s["configs"][i]["status"] in ("done", "reused", "skipped") for s in summaries)

    con = sqlite3.connect(db)
    try:
        q = lambda sql: con.execute(sql).fetchall()  # noqa: E731
        runs = q("SELECT identity, status FROM run WHERE kind = 'finetune'")
        assert len(runs) == n_configs and {s for _, s in runs} == {"done"}  # one row per configuration
        assert len({i for i, _ in runs}) == n_configs
        # one training curve per run: no step logged twice (two trainers would each log every step)
        assert q("SELECT run_id, step, name, count(*) FROM train_log GROUP BY run_id, step, name "
                 "HAVING count(*) > 1") == []
        assert q("SELECT identity FROM evaluation GROUP BY identity HAVING count(*) > 1") == []
        assert q("SELECT status FROM evaluation WHERE status <> 'done'") == []
        assert q("SELECT evaluation_id, item_id FROM generation GROUP BY 1, 2 HAVING count(*) > 1") == []
        assert q("SELECT judge_id, generation_id FROM judgment GROUP BY 1, 2 HAVING count(*) > 1") == []
        assert q("SELECT count(*) FROM judgment")[0][0] == q("SELECT count(*) FROM generation")[0][0] > 0
    finally:
        con.close()
