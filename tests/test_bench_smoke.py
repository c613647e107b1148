"""The benchmarks in bench/ run at their smallest sizes and print the JSON they promise.

No timing is asserted (the numbers depend on the machine); only that each script runs, reports its
keys, and that its correctness checks pass: a re-run of `spt judge` makes no call, greedy outputs of
spt's generation equal plain `generate()`, and `spt import` of the same store twice skips everything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"


def run_bench(script: str, *args: str, timeout: int = 300) -> dict:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TOKENIZERS_PARALLELISM": "false"}
    p = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, env=env,
                       timeout=timeout, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout)


def test_judge_throughput_smoke():
    r = run_bench("judge_throughput.py", "--n", "40", "--baseline-n", "10", "--latency-ms", "5")
    for key in ("sequential", "spt", "rerun", "ratio", "targets", "verdict_mismatches"):
        assert key in r
    assert r["spt"]["judgments"] == 40 and r["spt"]["calls"] == 40
    assert r["sequential"]["judgments"] == 10
    assert r["rerun"]["calls"] == 0 and r["rerun"]["reported_calls"] == 0
    assert r["rerun"]["cached"] == 40
    assert r["targets"]["rerun_zero_calls"] is True
    assert r["verdict_mismatches"] == 0
    assert r["spt"]["judgments_per_s"] > 0 and r["sequential"]["judgments_per_s"] > 0


def test_store_scale_smoke():
    r = run_bench("store_scale.py", "--runs", "200", "--judgments", "5000", "--no-cli")
    for key in ("build", "import_empty", "import_full", "frontier", "runs", "targets"):
        assert key in r
    rows = r["build"]["total_rows"]
    assert r["build"]["rows"]["run"] == 200 and r["build"]["rows"]["judgment"] == 5000
    assert r["import_empty"]["rows_inserted"] == rows
    assert r["import_full"]["rows_inserted"] == 0
    assert r["import_full"]["rows_skipped"] == rows and r["import_full"]["rows_conflicting"] == 0
    assert r["frontier"]["runs"] == 200 and r["frontier"]["points"] == 200
    assert r["runs"]["runs"] == 200


def test_generate_throughput_smoke():
    r = run_bench("generate_throughput.py", "--model", "tiny-random", "--n", "6", "--max-new-tokens", "6",
                  "--batch-size", "4")
    for key in ("single", "batched", "spt", "ratios", "mismatches", "outputs_identical"):
        assert key in r
    assert r["mismatches"] == {"spt_vs_single": 0, "batched_vs_single": 0}
    assert r["outputs_identical"] is True
    assert r["spt"]["new_tokens"] == r["single"]["new_tokens"] == r["batched"]["new_tokens"]


def test_generate_engines_smoke():
    r = run_bench("generate_engines.py", "--model", "tiny-random", "--n", "6", "--max-new-tokens", "6",
                  "--batch-size", "4", "--engines", "hf")
    assert r["hf"]["failed"] == 0 and r["hf"]["new_tokens"] > 0
    assert r["batched_generate"]["new_tokens_per_s"] > 0 and r["hf"]["speedup_vs_batched_generate"] > 0


@pytest.mark.slow
def test_train_throughput_smoke():
    r = run_bench("train_throughput.py", "--shape", "tiny", "--steps", "1", "--batch-size", "2",
                  "--max-length", "64", "--defenses", "none,proximal", timeout=600)
    assert "error" not in r["spt"], r["spt"]
    assert "error" not in r["trl"], r["trl"]
    assert r["spt"]["tokens"] > 0 and r["trl"]["tokens"] > 0
    assert "ratio_tokens_per_s" in r and "proximal" in r["defenses"]
