"""Shared pieces of the commands: the --db option, consoles, JSON output, progress, errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from spt.errors import SptError

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

DbOption = Annotated[
    Path | None,
    typer.Option("--db", help="Store file (default: $SPT_DB, else $SPT_HOME/spt.db, else user data dir).",
                 show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def db_path(ctx: typer.Context | None, db: Path | None = None) -> Path:
    """The store path: this command's --db, else the global --db, else the default location."""
    if db is not None:
        return Path(db).expanduser()
    root = ctx.find_root() if ctx is not None else None
    if root is not None and root.obj and root.obj.get("db"):
        return Path(root.obj["db"]).expanduser()
    from spt.paths import default_db_path

    return default_db_path()


def get_store(ctx: typer.Context | None, db: Path | None = None, *, create: bool = True):
    """Open the store for a command (creating and migrating it as needed)."""
    from spt.store import open_store

    return open_store(db_path(ctx, db), create=create)


def add_row(table: Any, *cells: str) -> None:
    """A table row whose text is shown literally (names like "[base]" are not rich markup)."""
    from rich.markup import escape

    table.add_row(*[escape(c) for c in cells])


def print_json(obj: Any) -> None:
    """Write JSON to stdout without rich markup or wrapping."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = 2) -> None:
    """Raise a one-line user error."""
    raise SptError(message)


def not_implemented(name: str) -> None:
    err_console.print(f"error: `spt {name}` is not implemented yet")
    raise typer.Exit(3)


@contextmanager
def progress(description: str, total: int | None = None, *, quiet: bool = False) -> Iterator[Any]:
    """A rich progress bar with counts and rate; silent when stderr is not a terminal or `quiet`.

    Yields an `advance(n=1, **fields)` callable.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    enabled = err_console.is_terminal and not quiet
    prog = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=err_console, disable=not enabled, transient=False,
    )
    with prog:
        task = prog.add_task(description, total=total, rate="")

        def advance(n: int = 1, **fields: Any) -> None:
            t = prog.tasks[0]
            rate = f"{(t.completed + n) / t.elapsed:.1f}/s" if t.elapsed else ""
            prog.update(task, advance=n, rate=fields.pop("rate", rate), **fields)

        yield advance


def show(renderable: Any, *, out: Console | None = None) -> None:
    """Print a table without ever cutting a cell when piped.

    On a terminal the table fits the window as usual. Piped or redirected, it is printed as wide as
    its widest row needs (measured, not a fixed width), so `spt runs | cat` keeps whole ids, names,
    reasons and numbers at any $COLUMNS.
    """
    import io

    from rich.measure import Measurement

    target = out or console
    if target.is_terminal:
        target.print(renderable)
        return
    probe = Console(width=1_000_000, file=io.StringIO())
    need = Measurement.get(probe, probe.options, renderable).maximum
    Console(width=max(target.width, need), soft_wrap=True, file=target.file).print(renderable)


def num(v: Any, spec: str = ".4g", missing: str = "") -> str:
    """A number for a table cell (`spec`: a format spec such as .3f); `missing` stands for None."""
    return missing if v is None else format(v, spec)


def with_ci(v: Any, lo: Any, hi: Any, spec: str = ".4g", missing: str = "") -> str:
    """`value [low, high]`, or the value alone when the interval is missing."""
    s = num(v, spec, missing)
    return s if lo is None or hi is None else f"{s} [{num(lo, spec)}, {num(hi, spec)}]"
