"""`spt import OTHER.db`: merge another machine's store into this one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from spt.commands._common import DbOption, JsonOption, ProgressDisplay, console, db_path, print_json, show


def register(app: typer.Typer) -> None:
    @app.command("import")
    def import_cmd(
        ctx: typer.Context,
        source: Annotated[Path, typer.Argument(help="The spt store to merge in.")],
        on_conflict: Annotated[str, typer.Option(
            help="Same id, different content: keep ours (ignore) or take theirs (replace).")] = "ignore",
        db: DbOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Merge another spt store into this one: ids kept, provenance recorded, idempotent."""
        from spt.store.merge import import_store

        with ProgressDisplay(quiet=json_out) as display:
            log = import_store(db_path(ctx, db), source, on_conflict=on_conflict, progress=display)
        if json_out:
            print_json(log)
            return
        table = Table("table", "source", "inserted", "skipped", "conflicting", "replaced",
                      title=f"import {log['source_path']}")
        for name, c in log["counts"].items():
            if c["source"]:
                table.add_row(name, *(str(c[k]) for k in ("source", "inserted", "skipped", "conflicting",
                                                          "replaced")))
        show(table)
        total = sum(c["inserted"] for c in log["counts"].values())
        conflicts = sum(c["conflicting"] for c in log["counts"].values())
        console.print(f"{total} rows inserted, {conflicts} conflicting ({log['on_conflict']})"
                      + ("; resumed an interrupted import of this source" if log.get("resumed") else ""),
                      markup=False)
