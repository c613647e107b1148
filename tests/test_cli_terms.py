"""Library errors name options as a Python caller knows them; the command line shows its flags instead."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from spt.cli import app, cli_terms
from spt.data.harmor import build_harmor
from spt.errors import SptError

runner = CliRunner()


def _group_ctx(sub: str):
    group = typer.main.get_command(app)
    ctx = group.make_context("spt", [sub, "--help"], resilient_parsing=True)
    ctx.invoked_subcommand = sub
    return group, ctx


def test_library_message_uses_the_keyword_the_caller_passed():
    with pytest.raises(SptError) as info:
        build_harmor(per_category=0)
    assert "`per_category`" in str(info.value) and "--per-category" not in str(info.value)


def test_the_same_error_at_the_command_line_names_the_flag(tmp_path):
    r = runner.invoke(app, ["--db", str(tmp_path / "s.db"), "build-data", "--per-category", "0"])
    assert r.exit_code != 0
    assert "--per-category must be" in r.output and "`" not in r.output and "per_category" not in r.output


def test_only_option_names_are_rewritten():
    group, ctx = _group_ctx("evaluate")
    msg = "`max_new_tokens` must be at least 1; see `spt runs` and `not_an_option`; `limit` too"
    assert cli_terms(msg, group, ctx) == ("--max-new-tokens must be at least 1; see `spt runs` and "
                                          "`not_an_option`; --limit too")
    # a library name that differs from the flag's spelling maps through the parameter name
    group, ctx = _group_ctx("finetune")
    assert cli_terms("`from_run` and `lam`", group, ctx) == "--from and --lam"
