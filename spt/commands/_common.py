"""Shared pieces of the commands: the --db option, consoles, JSON output, progress, errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

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


def cli_message(text: str) -> str:
    """A library message that is shown rather than raised, in the command line's terms (`spt.cli.cli_terms`)."""
    import click

    from spt.cli import cli_terms

    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return text
    root = ctx.find_root()
    return cli_terms(text, root.command, root)


class ProgressDisplay:
    """Draws the library's `Progress` reports: one rich bar per counter, with counts, a rate and times.

    Silent when stderr is not a terminal or `quiet` (JSON output). A report from a new scope (the next
    configuration of a sweep, the next stage of a demo) removes the bars of scopes it is not inside, so
    a long sweep shows its own bar and the running configuration's bars, not hundreds of finished ones.
    The rate column says what the numbers mean: tokens/s for generation, loss and tokens/s while
    training, calls/s, tokens and cost while judging, else units/s.
    """

    def __init__(self, quiet: bool = False, *, transient: bool = False):
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as Bars

        self.enabled = err_console.is_terminal and not quiet
        self.bars = Bars(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                         TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                         console=err_console, disable=not self.enabled, transient=transient)
        self._tasks: dict[tuple[str, ...], Any] = {}
        self._started: dict[tuple[str, ...], tuple[float, int, int]] = {}  # when, done and tokens at the first report
        self._last: dict[tuple[str, ...], dict[str, Any]] = {}

    def __enter__(self) -> ProgressDisplay:
        self.bars.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.__exit__(*exc)

    def print(self, text: str) -> None:
        """A line above the bars (printed also when the bars are hidden, e.g. piped)."""
        self.bars.console.print(text, highlight=False)

    def __call__(self, p: Any) -> None:
        import time

        key = p.key
        for old in [k for k in self._tasks if k[:-1] != p.scope[:len(k) - 1] and k != key]:
            self.bars.remove_task(self._tasks.pop(old))
            self._started.pop(old, None)
            self._last.pop(old, None)
        last = self._last.setdefault(key, {})
        last.update(p.info)
        if key not in self._tasks:
            self._tasks[key] = self.bars.add_task(" › ".join(key), total=p.total, rate="")
            self._started[key] = (time.perf_counter(), p.done, int(last.get("new_tokens") or 0))
        t0, done0, tok0 = self._started[key]
        self.bars.update(self._tasks[key], completed=p.done, total=p.total,
                         rate=_rate(p, last, max(time.perf_counter() - t0, 1e-9), p.done - done0,
                                    int(last.get("new_tokens") or 0) - tok0))


def _rate(p: Any, last: dict[str, Any], seconds: float, done: int, tokens: int) -> str:
    """The rate column of one counter (see `ProgressDisplay`)."""
    parts = []
    loss = next((last[k] for k in ("task_loss", "loss", "align_loss") if isinstance(last.get(k), (int, float))), None)
    if loss is not None:
        parts.append(f"loss {loss:.3f}")
    if last.get("tokens_per_s"):
        parts.append(f"{last['tokens_per_s']:.0f} tok/s")
    elif tokens:
        parts.append(f"{tokens / seconds:.0f} tok/s")
    elif done:
        parts.append(f"{done / seconds:.1f} {p.unit}/s")
    if last.get("tokens_total"):
        parts.append(f"{last['tokens_total']:,} tok")
    if "cost_usd" in last:
        parts.append(f"${last['cost_usd']:.4f}")
    return " · ".join(parts)


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
