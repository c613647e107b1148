"""One current judgment per (judge, generation): re-judging, racing processes and killed runs.

A partial unique index on current judgments (what migration `judgment(judge_id, generation_id) WHERE
superseded_by IS NULL` adds) is created here too, so every write order is checked against it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from fake_openai_server import FakeOpenAI
from sqlalchemy import text
from sqlmodel import select
from test_judge import judgments, make_eval

from spt.judge import judge_evaluations
from spt.judge.backends import register
from spt.judge.backends.keyword import KeywordBackend
from spt.store.models import Judgment

INDEX = ("CREATE UNIQUE INDEX IF NOT EXISTS ux_test_judgment_current ON judgment (judge_id, generation_id) "
         "WHERE superseded_by IS NULL")


def _unique_current_index(store) -> None:
    with store.write() as s:
        s.execute(text(INDEX))


def _counts(store) -> tuple[int, int, int]:
    """(all judgments, current judgments, (judge, generation) pairs with more than one current)."""
    with store.session() as s:
        rows = s.exec(select(Judgment)).all()
    cur = Counter((j.judge_id, j.generation_id) for j in rows if j.superseded_by is None)
    return len(rows), sum(cur.values()), sum(1 for v in cur.values() if v > 1)


@pytest.fixture
def server():
    srv = FakeOpenAI().start()
    yield srv
    srv.stop()


ROWS = [("harmful", "c", "p1", "I cannot help with that."), ("harmful", "c", "p2", "Sure, here it is."),
        ("benign", "c", "p3", ""), ("benign", "c", "p4", "Here is a recipe.")]


def test_rejudge_only_unscored_and_fix_respect_a_unique_index_on_current_judgments(store):
    _unique_current_index(store)
    eid = make_eval(store, ROWS)
    judge_evaluations(store, [eid], judges=["keyword"])
    assert _counts(store) == (4, 4, 0)
    judge_evaluations(store, [eid], judges=["keyword"], rejudge=True)  # supersede first, then insert
    assert _counts(store) == (8, 4, 0)
    res = judge_evaluations(store, [eid], judges=["keyword"], only_unscored=True)  # the degenerate one
    assert res.judges[0].judged == 1 and _counts(store) == (9, 4, 0)
    wrong = judgments(store)["Sure, here it is."]
    with store.write() as s:  # a verdict stored by an older, buggier classifier
        s.execute(text("UPDATE judgment SET label = 'refusal', score = 1.0 WHERE id = :i"), {"i": wrong.id})
    res = judge_evaluations(store, [eid], judges=["keyword"], fix=True)
    assert res.judges[0].fixed == 1 and _counts(store) == (10, 4, 0)
    assert judgments(store)["Sure, here it is."].label == "compliance"


class _RacingKeyword(KeywordBackend):
    """A keyword judge that, before judging, lets "another process" judge the same generations first."""

    name = "racetest"
    usage = ""

    def __init__(self, store, evaluation_id: str, rejudge: bool):
        self.store, self.evaluation_id, self.rejudge, self.race = store, evaluation_id, rejudge, False

    def parse(self, spec, arg, rubric):
        js = super().parse(spec, arg, rubric)
        js.backend, js.config = self.name, {**js.config, "backend": self.name}
        return js

    def judge_batch(self, spec, pairs, ctx, emit):
        if self.race:
            self.race = False
            other = judge_evaluations(self.store, [self.evaluation_id], judges=["racetest"], rejudge=self.rejudge)
            assert other.judges[0].judged == len(pairs) and other.judges[0].dropped == 0
        return super().judge_batch(spec, pairs, ctx, emit)


@pytest.mark.parametrize("rejudge", [False, True])
def test_the_judgment_stored_first_wins_a_race(store, rejudge):
    from spt.judge.backends import _REGISTRY

    _unique_current_index(store)
    eid = make_eval(store, ROWS)
    backend = register(_RacingKeyword(store, eid, rejudge))
    try:
        if rejudge:
            judge_evaluations(store, [eid], judges=["racetest"])  # the judgments both runs will re-judge
        before = _counts(store)[0]
        backend.race = True
        res = judge_evaluations(store, [eid], judges=["racetest"], rejudge=rejudge)
    finally:
        _REGISTRY.pop("racetest", None)
    s = res.judges[0]
    assert s.judged == 4 and s.dropped == 4 and s.scored == 3  # all four lost to the other run
    total, current, doubled = _counts(store)
    assert current == 4 and doubled == 0 and total == before + 4  # only the winner's rows were stored


# the in-process re-runs: few connections and a few quick retries (a loaded CI machine can drop a connect)
RERUN = {"max_connections": 4, "max_retries": 3, "retry_base_s": 0.05, "timeout": 30}


def _cli(db, eid, base_url, *extra):
    return [sys.executable, "-m", "spt.cli", "--db", str(db), "judge", eid, "--judge", "openai:m", "--base-url",
            base_url, "--timeout", "30", "--json", *extra]


def _env():
    return {**os.environ, "SPT_JUDGE_RETRY_BASE_S": "0.01"}


def test_two_processes_judging_one_evaluation_leave_one_current_judgment_each(store, db_path, server):
    _unique_current_index(store)
    server.default = {"sleep": 6.0, "text": "VERDICT: REFUSAL"}
    eid = make_eval(store, [("harmful", "c", f"p{i}", f"r{i}") for i in range(8)])
    procs = [subprocess.Popen(_cli(db_path, eid, server.base_url, "--max-connections", "8"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    summaries = [json.loads(o[0])["judges"][0] for o in outs]
    assert server.calls > 8  # both judged some generations at once (16 when they start together)
    # each generation judged twice is stored once: the later writer drops its copy
    assert sum(s["dropped"] for s in summaries) == server.calls - 8
    assert _counts(store) == (8, 8, 0)


def _stored(db: Path) -> int:
    con = sqlite3.connect(Path(db).absolute().as_uri() + "?mode=ro", uri=True, timeout=30)
    try:
        return con.execute("SELECT count(*) FROM judgment").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0
    finally:
        con.close()


def test_sigkilled_judge_resumes_with_the_remaining_generations_only(store, db_path, server):
    _unique_current_index(store)
    n = 80
    server.script["r"] = [{"sleep": 0.2, "text": "VERDICT: REFUSAL"}]
    server.script["c"] = [{"sleep": 0.2, "text": "VERDICT: COMPLIANCE"}]
    eid = make_eval(store, [("harmful", "c", f"p{i}", f"FAKE[{'r' if i % 4 else 'c'}] {i}") for i in range(n)])
    rng = random.Random(18)
    kills = 0
    while kills < 5:  # five seeded kill points, each after the killed run stored something
        before = _stored(db_path)
        p = subprocess.Popen(_cli(db_path, eid, server.base_url, "--max-connections", "1"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
        deadline = time.monotonic() + 120
        while _stored(db_path) == before and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))  # a seeded point after some progress
        assert p.poll() is None, "the judge finished before it could be killed"
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
        kills += 1
        total, current, doubled = _counts(store)
        assert total == current and doubled == 0  # a kill never leaves a duplicate or a half-written row
    left = n - _stored(db_path)
    assert left > 0
    server.reset_counts()
    res = judge_evaluations(store, [eid], judges=["openai:m"], base_url=server.base_url, **RERUN)
    assert server.calls == left  # only the generations the killed runs did not store
    s = res.judges[0]
    assert (s.judged, s.cached, s.scored) == (left, n - left, n)
    assert _counts(store) == (n, n, 0)
    (rate,) = [m for m in s.metrics if m.name == "judge_refusal_rate"]
    assert rate.value == pytest.approx(60 / 80) and rate.n == n  # as an uninterrupted run


def test_sigterm_stores_every_reply_in_flight_exits_143_and_resumes(store, db_path, server):
    n = 40
    server.default = {"sleep": 0.3, "text": "VERDICT: REFUSAL"}
    eid = make_eval(store, [("harmful", "c", f"p{i}", f"r{i}") for i in range(n)])
    cmd = [a for a in _cli(db_path, eid, server.base_url, "--max-connections", "4") if a != "--json"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    deadline = time.monotonic() + 120
    while server.calls < 6 and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert p.poll() is None
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 143, err
    assert "interrupted by SIGTERM" in err and len(err.strip().splitlines()) == 1, err
    stored = _stored(db_path)
    assert 0 < stored < n
    assert server.calls == stored  # the replies in flight were stored: no paid call lost
    server.reset_counts()
    res = judge_evaluations(store, [eid], judges=["openai:m"], base_url=server.base_url, **RERUN)
    assert server.calls == n - stored and res.judges[0].cached == stored and _counts(store) == (n, n, 0)
