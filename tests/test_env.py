"""Environment variables: every SPT_* value is parsed in one place; a bad one is one line and exit 2."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from spt.cli import app
from spt.env import VARIABLES, env_float, env_int

runner = CliRunner()


@pytest.fixture
def afile(tmp_path):
    f = tmp_path / "plain.txt"
    f.write_text("x")
    return f


def _bad_values(name: str, afile, tmp_path) -> list[str]:
    kind = VARIABLES[name][0]
    if kind.startswith(("int", "float")):
        return ["nan", "inf", "-1", "abc", "1e400"] + (["0", "2.5"] if kind.startswith("int") else [])
    values = [str(afile / "under"), str(afile / "x" / "y")]
    if kind == "file":
        values.append(str(tmp_path))  # a directory is not a store file
    if kind == "dir":
        values.append(str(afile))
    if kind == "existing-dir":
        values.append(str(tmp_path / "missing"))
    return values


@pytest.mark.parametrize("name", sorted(VARIABLES))
def test_a_bad_value_is_one_line_naming_the_variable(name, afile, tmp_path, monkeypatch):
    db = tmp_path / "s.db"
    for value in _bad_values(name, afile, tmp_path):
        monkeypatch.setenv(name, value)
        r = runner.invoke(app, ["runs", "--db", str(db)])
        assert r.exit_code == 2, (name, value, r.output)
        assert r.exception is None or isinstance(r.exception, SystemExit), (name, value, r.exception)
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and name in lines[0] and "unset it" in lines[0], (name, value, r.output)
        assert not db.exists()  # refused before anything was created
        monkeypatch.delenv(name)


def test_empty_means_unset_and_good_values_parse(monkeypatch, tmp_path):
    monkeypatch.setenv("SPT_BUSY_TIMEOUT_MS", "")
    assert env_int("SPT_BUSY_TIMEOUT_MS", 7) == 7
    monkeypatch.setenv("SPT_BUSY_TIMEOUT_MS", " 250 ")
    assert env_int("SPT_BUSY_TIMEOUT_MS", 7) == 250
    monkeypatch.setenv("SPT_JUDGE_RETRY_BASE_S", "0")
    assert env_float("SPT_JUDGE_RETRY_BASE_S", 1.0) == 0.0
    monkeypatch.setenv("SPT_HOME", str(tmp_path / "new-home"))  # a folder that does not exist yet is fine
    r = runner.invoke(app, ["db", "path"])
    assert r.exit_code == 0 and "new-home" in r.output
