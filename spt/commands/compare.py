"""`spt compare A B`: paired differences between two runs or configurations on the same prompts."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from spt.commands._common import DbOption, JsonOption, add_row, console, get_store, num, print_json, show


def register(app: typer.Typer) -> None:
    @app.command("compare")
    def compare_cmd(
        ctx: typer.Context,
        a: Annotated[str, typer.Argument(
            help="Run id (or prefix), or a configuration: cfg:... or model:NAME (all its seeds).")],
        b: Annotated[str, typer.Argument(help="The run or configuration to compare with A (differences are B − A).")],
        setting: Annotated[str | None, typer.Option("--setting", help="Evaluation setting key when the runs have "
                                                    "evaluations under several.", show_default=False)] = None,
        preset: Annotated[str | None, typer.Option("--preset", help="Keyword refusal preset for the verdicts "
                                                   "(default: the evaluations' own).", show_default=False)] = None,
        db: DbOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Is the difference real? Per metric B − A on the same prompts: a t interval over seeds when a side has
        seeds (cfg:... or model:NAME), else an item-level paired bootstrap and exact McNemar p."""
        from spt.compare import compare

        with get_store(ctx, db, create=False) as store:  # read-only: a missing store is an error, not created
            result = compare(store, a, b, setting=setting, preset=preset)
        if json_out:
            print_json(result.to_dict())
            return
        t = Table("metric", "n", "seeds A/B", "A", "B", "B − A [95% CI]", "method", "McNemar b/c", "p",
                  title=f"B − A on the same prompts (setting {result.setting}: {result.setting_description}; "
                        f"preset {result.preset})", title_justify="left")
        for d in result.differences:
            ci = "" if d.ci_low is None else f" [{num(d.ci_low)}, {num(d.ci_high)}]"
            mc = "" if d.mcnemar_b is None else f"{d.mcnemar_b}/{d.mcnemar_c}"
            add_row(t, d.metric, str(d.n) + (f" (-{d.n_dropped})" if d.n_dropped else ""),
                    f"{d.n_seeds_a}/{d.n_seeds_b}", num(d.a), num(d.b),
                    (num(d.diff) if d.diff is not None else "") + ci, d.method, mc, num(d.p_value, ".3g"))
        show(t)
        for label, side in (("A", result.a), ("B", result.b)):
            seeds = ", ".join("" if s is None else str(s) for s in side["seeds"])
            console.print(f"{label}: {side['label']} ({len(side['runs'])} run(s), seeds {seeds})", markup=False)
        console.print("(-k): items left out because a side has no verdict (degenerate reply or no loss)",
                      markup=False)
        if result.note:
            console.print(f"[yellow]note:[/yellow] {result.note}")
