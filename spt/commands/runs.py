"""`spt runs`, `spt runs show ID`: what has been trained and evaluated."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from spt.commands._common import DbOption, JsonOption, console, get_store, print_json


def register(app: typer.Typer) -> None:
    runs_app = typer.Typer(help="List and inspect runs.", invoke_without_command=True)
    app.add_typer(runs_app, name="runs")

    @runs_app.callback()
    def list_cmd(ctx: typer.Context, db: DbOption = None, json_out: JsonOption = False) -> None:
        """List runs with their status."""
        if ctx.invoked_subcommand is not None:
            return
        from spt.runs import list_runs

        with get_store(ctx, db) as store:
            runs = list_runs(store)
        if json_out:
            print_json(runs)
            return
        if not runs:
            console.print("no runs yet; start one with `spt finetune` or `spt demo`")
            return
        table = Table("id", "kind", "model", "task", "defense", "λ", "poison", "status")
        for r in runs:
            table.add_row(r["id"], r["kind"], r["model_ref"], r["task"] or "", r["defense"] or "",
                          "" if r["lam"] is None else f"{r['lam']:g}",
                          "" if r["poison_ratio"] is None else f"{r['poison_ratio']:g}", r["status"])
        console.print(table)

    @runs_app.command("show")
    def show_cmd(
        ctx: typer.Context,
        run_id: Annotated[str, typer.Argument(help="Run id or unique prefix.")],
        db: DbOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """A run's configuration, checkpoints and evaluations."""
        from spt.runs import show_run

        with get_store(ctx, db) as store:
            info = show_run(store, run_id)
        if json_out:
            print_json(info)
            return
        console.print_json(data=info, default=str)
