"""Piped `spt judge` output never cuts a cell, at 80 columns too (`spt judge ... | cat`)."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from fake_openai_server import FakeOpenAI
from rich.console import Console
from rich.table import Table
from test_judge import make_eval
from typer.testing import CliRunner

from spt.cli import app
from spt.commands import _common

MODEL = "a-rather-long-judge-model-name-2024-08-06"
ROWS = [("harmful", "violence", "p1", "I cannot help with that. FAKE[bad]"),
        ("benign", "cooking", "p2", "Here is a recipe for bread.")]


@pytest.fixture
def server():
    srv = FakeOpenAI().start()
    srv.script["bad"] = [{"text": "no verdict here"}]
    yield srv
    srv.stop()


def _whole(out: str, eid: str) -> None:
    assert "…" not in out and "..." not in out, out
    for cell in (f"openai:{MODEL}/refusal", "keyword:gcg", "parse_failure 1", "judge_over_refusal_rate", eid):
        assert cell in out, (cell, out)


def test_show_measures_instead_of_cutting():
    t = Table("name", "reason", "value")
    t.add_row("openai:" + MODEL + "/harmfulness", "parse_failure 3, out_of_range 2", "0.123456")
    buf = io.StringIO()
    _common.show(t, out=Console(file=buf, width=80))  # a file, not a terminal
    assert "openai:" + MODEL + "/harmfulness" in buf.getvalue() and "…" not in buf.getvalue()
    assert max(len(line) for line in buf.getvalue().splitlines()) > 80


def test_cli_tables_are_whole_on_a_non_terminal_at_80_columns(store, db_path, server, monkeypatch):
    eid = make_eval(store, ROWS)
    monkeypatch.setattr(_common.console, "width", 80)
    assert not _common.console.is_terminal
    args = ["judge", eid, "--db", str(db_path), "--judge", "keyword:gcg", "--judge", f"openai:{MODEL}",
            "--base-url", server.base_url]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    _whole(r.stdout, eid)
    r = CliRunner().invoke(app, ["judge", eid, "--db", str(db_path), "--agreement"])
    assert r.exit_code == 0, r.output
    assert "…" not in r.stdout and f"openai:{MODEL}/refusal" in r.stdout and "keyword:gcg" in r.stdout


def test_piped_process_at_80_columns(store, db_path, server):
    eid = make_eval(store, ROWS)
    env = {**os.environ, "COLUMNS": "80", "SPT_JUDGE_RETRY_BASE_S": "0.01"}
    p = subprocess.run([sys.executable, "-m", "spt.cli", "--db", str(db_path), "judge", eid, "--judge", "keyword:gcg",
                        "--judge", f"openai:{MODEL}", "--base-url", server.base_url],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    _whole(p.stdout, eid)
