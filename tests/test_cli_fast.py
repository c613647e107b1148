"""`spt --help` lists every subcommand, and the CLI loads no heavy library at start-up."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from typer.testing import CliRunner

from spt.cli import app

SUBCOMMANDS = ["build-data", "data", "finetune", "merge", "evaluate", "judge", "frontier", "runs", "import", "db",
               "sweep", "demo"]
HEAVY = ["torch", "transformers", "peft", "trl", "datasets", "openai", "matplotlib", "lm_eval"]


def test_help_lists_all_subcommands():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    commands_panel = result.stdout.split("Commands", 1)[1]  # rich's panel (options come before it)
    listed = set(re.findall(r"^[│|]?\s{0,2}([a-z][a-z-]*)\s", commands_panel, flags=re.M))
    missing = [c for c in SUBCOMMANDS if c not in listed]
    assert not missing, result.stdout


def test_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.startswith("spt ")


def _loaded_after(code: str, tmp_path) -> list[str]:
    env = {**os.environ, "SPT_HOME": str(tmp_path / "home")}
    env.pop("SPT_DB", None)
    script = (
        "import sys, json\n" + code + "\n"
        f"sys.stderr.write('LOADED=' + json.dumps([m for m in {HEAVY!r} if m in sys.modules]) + '\\n')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("LOADED=")][-1]
    return json.loads(line[len("LOADED="):])


def test_import_cli_loads_no_heavy_library(tmp_path):
    assert _loaded_after("import spt.cli", tmp_path) == []


def test_help_loads_no_heavy_library(tmp_path):
    code = (
        "sys.argv = ['spt', '--help']\n"
        "from spt.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
    )
    assert _loaded_after(code, tmp_path) == []


def test_db_and_import_commands_load_no_heavy_library(tmp_path):
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    code = (
        "from typer.testing import CliRunner\n"
        "from spt.cli import app\n"
        "r = CliRunner()\n"
        f"for args in (['--db', {str(a)!r}, 'db', 'status', '--json'], ['--db', {str(b)!r}, 'db', 'upgrade'],\n"
        f"             ['--db', {str(a)!r}, 'import', {str(b)!r}, '--json']):\n"
        "    res = r.invoke(app, args)\n"
        "    assert res.exit_code == 0, res.output\n"
    )
    assert _loaded_after(code, tmp_path) == []

