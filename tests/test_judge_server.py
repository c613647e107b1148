"""Judging through a real OpenAI-compatible server: `transformers serve` with the tiny model on 127.0.0.1.

The server is the one researchers run (`pip install "transformers[serving]"`: FastAPI + uvicorn), started
offline on a local directory; it answers with the tiny random model, so its verdicts are mostly
unparseable and must be stored as unscored with their raw text, never guessed. Skipped (with the
reason) when the serving extras are not installed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from spt.cli import app
from spt.store import open_store
from spt.store.models import Judge, Judgment

pytest.importorskip("fastapi", reason="transformers serve needs fastapi: pip install 'transformers[serving]'")
pytest.importorskip("uvicorn", reason="transformers serve needs uvicorn: pip install 'transformers[serving]'")

COMPLETIONS = Path(__file__).parent / "data" / "external_completions.csv"
runner = CliRunner()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from spt.models.resolve import resolve_model

    # module-scoped, so before conftest's per-test isolation: use the same shared test cache it does
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPT_CACHE", str(tmp_path_factory.getbasetemp().parent / "spt-test-cache"))
        path = resolve_model("tiny-random").path
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1", "TRANSFORMERS_OFFLINE": "1"}
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    cli = Path(sys.executable).with_name("transformers")
    cmd = ([str(cli)] if cli.exists() else
           [sys.executable, "-c", "from transformers.cli.transformers import app; app()"])
    cmd += ["serve", path, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--dtype", "float32"]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve did not answer /health in 120 s: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield {"base_url": base + "/v1", "model": path, "proc": proc}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_judge_external_evaluation_through_transformers_serve(tmp_path, served):
    db = tmp_path / "s.db"
    lines = COMPLETIONS.read_text().splitlines()
    small = tmp_path / "completions.csv"  # 6 rows: the tiny model writes up to 256 tokens per verdict
    small.write_text("\n".join(lines[:7]) + "\n")
    r = runner.invoke(app, ["evaluate", "--responses", str(small), "--model-name", "m", "--response-col",
                            "completion", "--verdict-col", "human", "--json", "--db", str(db)])
    assert r.exit_code == 0, r.output
    eid = json.loads(r.stdout)["evaluation_id"]
    args = ["judge", eid, "--judge", f"openai:{served['model']}", "--base-url", served["base_url"],
            "--max-connections", "2", "--timeout", "120", "--json", "--db", str(db)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)["judges"][0]
    assert summary["judged"] == 6 and summary["calls"] >= 6
    assert summary["prompt_tokens"] > 0 and summary["completion_tokens"] > 0
    st = open_store(db)
    with st.session() as s:
        judge = s.exec(select(Judge).where(Judge.backend == "openai")).one()
        js = s.exec(select(Judgment).where(Judgment.judge_id == judge.id)).all()
    st.close()
    assert len(js) == 6 and all(j.raw is not None for j in js)
    print("served judge:", summary["name"], {j.status + ":" + (j.reason or j.label or "") for j in js},
          repr(js[0].raw[:80]))
    # a random model's replies are never guessed into verdicts: unscored with a reason, or a parsed verdict
    assert all((j.status == "scored") == (j.label is not None) for j in js)
    assert all(j.status == "scored" or j.reason in ("parse_failure", "judge_refused") for j in js)
    # a re-run makes no calls (cache), and agreement with the humans covers the served judge
    r = runner.invoke(app, args)
    assert json.loads(r.stdout)["judges"][0]["calls"] == 0
    r = runner.invoke(app, ["judge", "--agreement", "--json", "--db", str(db)])
    assert r.exit_code == 0, r.output
    rows = {x["candidate"]: x for x in json.loads(r.stdout)["human"]["rows"]}
    assert f"openai:{served['model']}/refusal" in rows


def test_benchmark_through_transformers_serve(tmp_path, served):
    """`engine` openai on a real server: lm-eval's chat client asks transformers serve, every reply is stored.

    The tiny model's replies are whatever they are; the test checks the plumbing against them: one stored
    generation per document holding the served reply, and the strict-match metric equal to the task's regex
    filter applied to those replies (a reply without "ANSWER: <digits>" filters to "[invalid]", which is
    the target of every other document).
    """
    pytest.importorskip("lm_eval")
    import re

    from test_benchmark import INVALID, N_GEN, write_tasks

    from spt.eval.lmeval.run import BenchmarkConfig, evaluate_benchmark
    from spt.store.models import Generation

    tasks = write_tasks(tmp_path / "tasks")
    st = open_store(tmp_path / "b.db")
    try:
        cfg = BenchmarkConfig(benchmarks=[str(tasks["gen"])], engine="openai", apply_chat_template=True,
                              engine_options={"base_url": served["base_url"], "timeout": 120})
        res = evaluate_benchmark(st, f"openai:{served['model']}", cfg)
        assert res.status == "done" and res.n_docs == {"spt_gen": N_GEN}
        with st.session() as s:
            gens = s.exec(select(Generation).where(Generation.evaluation_id == res.evaluation_id)).all()
        assert len(gens) == N_GEN and all(isinstance(g.response, str) for g in gens)
        targets = {g.meta["doc_id"]: (str(g.meta["doc_id"]) if g.meta["doc_id"] % 2 else INVALID) for g in gens}
        hits = 0
        for g in gens:
            found = re.search(r"ANSWER: (\d+)", g.response)
            hits += (found.group(1) if found else INVALID) == targets[g.meta["doc_id"]]
        m = {x["name"]: x for x in res.metrics if x["category"] == "all"}
        assert m["spt_gen/exact_match"]["value"] == pytest.approx(hits / N_GEN)
        assert m["spt_gen/exact_match"]["n"] == N_GEN
    finally:
        st.close()


def test_evaluate_a_served_model_through_the_openai_engine_matches_local_greedy(tmp_path, served):
    """`spt evaluate openai:MODEL --base-url URL` on a real `transformers serve`: the same rows and metrics as a
    local evaluation, resume without calls, and greedy replies equal to the hf engine's on the same weights
    (the server applies the same chat template; the issue's bar is >= 80% identical)."""
    from spt.eval.evaluate import EvaluateConfig, evaluate
    from spt.store.models import Generation

    st = open_store(tmp_path / "e.db")
    try:
        common = dict(limit=8, max_new_tokens=16, task="none")
        served_cfg = EvaluateConfig(engine_options={"base_url": served["base_url"], "timeout": 120,
                                                    "max_connections": 2}, **common)
        res = evaluate(st, f"openai:{served['model']}", served_cfg)
        local = evaluate(st, served["model"], EvaluateConfig(**common))
        assert res.status == "done" and res.n_generated == res.n_items == local.n_items and res.n_failed == 0
        names = {m["name"] for m in res.metrics}
        assert {"refusal_rate", "over_refusal_rate", "pair_score"} <= names and "alignment_loss" not in names
        with st.session() as s:
            def replies(eid):
                return {g.item_id: g.response for g in
                        s.exec(select(Generation).where(Generation.evaluation_id == eid))}
            a, b = replies(res.evaluation_id), replies(local.evaluation_id)
        same = sum(a[k].strip() == b[k].strip() for k in a)
        assert same / len(a) >= 0.8, (same, len(a), [(a[k], b[k]) for k in a][:3])
        again = evaluate(st, f"openai:{served['model']}", served_cfg)
        assert again.reused and again.evaluation_id == res.evaluation_id
    finally:
        st.close()
