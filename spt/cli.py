"""The `spt` command line: a typer app that registers one module per subcommand.

Keep this module and everything it imports free of torch/transformers/peft/trl/datasets/openai/
matplotlib at module level: `spt --help` must start in well under a second.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

try:  # typer ≥ 0.26 vendors click
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover - older typer on plain click
    from click.exceptions import UsageError

from spt import __version__
from spt.commands import (
    build_data,
    compare,
    data,
    db,
    demo,
    evaluate,
    finetune,
    frontier,
    import_db,
    judge,
    merge,
    persistence,
    runs,
    sweep,
    view,
)
from spt.commands._common import err_console
from spt.errors import SptError


class SptGroup(TyperGroup):
    """Turns SptError anywhere below into one red line on stderr and a non-zero exit, and checks every
    command's option values at parse time (`spt.commands._guard`) before the command runs."""

    def resolve_command(self, ctx, args):  # type: ignore[override]
        name, cmd, rest = super().resolve_command(ctx, args)
        if cmd is not None:
            from spt.commands._guard import guard

            guard(cmd)
        return name, cmd, rest

    def parse_args(self, ctx, args):  # type: ignore[override]
        from spt.commands._guard import record_raw_values

        record_raw_values(ctx, self, args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except SptError as e:
            print_error(cli_terms(str(e), self, ctx))
            raise typer.Exit(e.exit_code) from None
        except UsageError as e:  # a bad flag value or a missing argument: one line, not a usage panel
            where = e.ctx.command_path if e.ctx is not None else "spt"
            print_error(f"{e.format_message()} (see `{where} --help`)")
            raise typer.Exit(2) from None


_OPTION_REF = re.compile(r"`([a-z][a-z0-9_]*)`")


def cli_terms(message: str, group: Any, ctx: Any) -> str:
    """The library's message in the command line's terms: an option named `like_this` becomes its flag.

    Library errors name options as a Python caller knows them (`max_new_tokens`, `lam`); at the command
    line the same option is `--max-new-tokens`, `--lam`. Only back-quoted names that are options of the
    invoked command (or, failing that, of any command) are rewritten; other quoted text is left alone.
    """
    if "`" not in message:
        return message
    flags: dict[str, str] = {}
    everywhere: dict[str, str] = {}

    def collect(cmd: Any, into: dict[str, str]) -> None:
        for p in getattr(cmd, "params", []):
            longs = [o for o in getattr(p, "opts", []) if o.startswith("--")]
            if longs and p.name:
                into.setdefault(p.name, longs[0])
                into.setdefault(longs[0][2:].replace("-", "_"), longs[0])
        if hasattr(cmd, "list_commands"):
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                if sub is not None:
                    collect(sub, into)

    invoked = group.get_command(ctx, ctx.invoked_subcommand) if ctx.invoked_subcommand else None
    if invoked is not None:
        collect(invoked, flags)
    collect(group, everywhere)

    def flag(m: re.Match) -> str:
        name = m.group(1)
        return flags.get(name) or everywhere.get(name) or m.group(0)

    return _OPTION_REF.sub(flag, message)


def print_error(message: str) -> None:
    """One red `error:` line; the message is user text and is never parsed as rich markup."""
    from rich.text import Text

    line = " ".join(part.strip() for part in str(message).splitlines() if part.strip()) or "failed"
    err_console.print(Text.assemble(("error:", "red"), " ", line), highlight=False, soft_wrap=True)


app = typer.Typer(
    cls=SptGroup,
    name="spt",
    help="Measure how much safety fine-tuning costs, and which defense buys the most task "
    "performance per unit of safety. Results live in one SQLite store.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"spt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    db: Annotated[Path | None, typer.Option(
        "--db", envvar="SPT_DB", help="Store file for every command (env SPT_DB).", show_default=False)] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version.")] = False,
) -> None:
    from spt.commands._guard import check_params
    from spt.env import check_environment

    check_environment()  # a bad SPT_* value is one line before anything runs
    check_params(ctx)
    ctx.obj = {"db": db}


for _module in (build_data, data, finetune, merge, evaluate, judge, frontier, compare, persistence, runs, import_db,
                db, sweep, demo, view):
    _module.register(app)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
