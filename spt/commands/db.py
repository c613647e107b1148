"""`spt db path|status|backup|upgrade`: where the store is and what it holds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from spt.commands._common import DbOption, JsonOption, console, db_path, get_store, print_json, show


def register(app: typer.Typer) -> None:
    db_app = typer.Typer(help="The store: path, status, backup, upgrade.", no_args_is_help=True)
    app.add_typer(db_app, name="db")

    @db_app.command("path")
    def path_cmd(ctx: typer.Context, db: DbOption = None) -> None:
        """Print the store's path."""
        typer.echo(str(db_path(ctx, db)))

    @db_app.command("status")
    def status_cmd(ctx: typer.Context, db: DbOption = None, json_out: JsonOption = False) -> None:
        """Schema version, row counts per table and file size (creates the store if missing)."""
        from spt.store.admin import store_status

        with get_store(ctx, db) as store:
            st = store_status(store)
        if json_out:
            print_json(st)
            return
        console.print(f"[bold]store[/bold]  {st['path']}")
        console.print(f"[bold]schema[/bold] {st['schema']} (head {st['head']})")
        console.print(f"[bold]size[/bold]   {st['size_bytes'] / 1e6:.2f} MB")
        table = Table("table", "rows")
        for name, n in st["tables"].items():
            table.add_row(name, str(n))
        show(table)

    @db_app.command("backup")
    def backup_cmd(
        ctx: typer.Context,
        dest: Annotated[Path, typer.Argument(help="Where to write the copy (must not exist).")],
        db: DbOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """A consistent copy of the store, safe while other processes write."""
        from spt.store.admin import backup_store

        with get_store(ctx, db, create=False) as store:
            out = backup_store(store, dest)
        if json_out:
            print_json({"backup": str(out)})
        else:
            console.print(f"backed up to {out}")

    @db_app.command("upgrade")
    def upgrade_cmd(ctx: typer.Context, db: DbOption = None, json_out: JsonOption = False) -> None:
        """Migrate the store to this spt's schema (opening any store does this too)."""
        from spt.store.engine import read_revision

        path = db_path(ctx, db)
        before = read_revision(path) if path.exists() else None
        with get_store(ctx, db) as store:
            after = store.revision()
        if json_out:
            print_json({"path": str(path), "from": before, "to": after})
        else:
            console.print(f"{path}: {before or 'new'} -> {after}")
