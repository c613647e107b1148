"""`spt persistence`: does safety training survive helpfulness training, and the reverse?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from spt.commands._common import DbOption, JsonOption, add_row, console, get_store, num, print_json, show

_SIDE = "Run id (or prefix), or a configuration cfg:... / model:NAME (one run per training seed)."


def register(app: typer.Typer) -> None:
    @app.command("persistence")
    def persistence_cmd(
        ctx: typer.Context,
        safe: Annotated[str, typer.Option("--safe", help=f"S, trained for safety. {_SIDE}", show_default=False)],
        helpful: Annotated[str, typer.Option("--helpful", help="H, trained for helpfulness (`--help` is every "
                                             "command's help flag).", show_default=False)],
        safe_then_help: Annotated[str, typer.Option("--safe-then-help", help="S→H: S, then trained for helpfulness.",
                                                    show_default=False)],
        help_then_safe: Annotated[str, typer.Option("--help-then-safe", help="H→S: H, then trained for safety.",
                                                    show_default=False)],
        split_seed: Annotated[list[int] | None, typer.Option(
            "--split-seed", min=0, help="Seed(s) of the train/test case split, for runs without a training seed "
            "(trained runs use their own).", show_default=False)] = None,
        evaluator: Annotated[str | None, typer.Option(
            "--evaluator", help="The evaluator whose scores to use, when several scored the runs.",
            show_default=False)] = None,
        n_boot: Annotated[int, typer.Option("--n-boot", min=100, help="Bootstrap resamples of the test cases.")]
        = 10_000,
        plot: Annotated[Path | None, typer.Option(
            "--plot", help="Write a safety-vs-helpfulness plot of the four models (PNG/PDF/SVG).",
            show_default=False)] = None,
        db: DbOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Persist(S) = (Safety(S→H) − Safety(H)) / (Safety(S) − Safety(H)) and Persist(H) symmetrically, on the
        test half of the cases for each training seed, with a case-bootstrap 95% interval."""
        from spt.agentic.persistence import persistence

        if plot is not None:
            from spt.agentic.plot import check_plot_path

            check_plot_path(plot)
        with get_store(ctx, db, create=False) as store:
            result = persistence(store, safe=safe, helpful=helpful, safe_then_help=safe_then_help,
                                 help_then_safe=help_then_safe, split_seeds=split_seed or None, evaluator=evaluator,
                                 n_boot=n_boot)
        written = None
        if plot is not None:
            from spt.agentic.plot import plot_persistence

            written = str(plot_persistence(result, plot))
        if json_out:
            print_json({**result.to_dict(), "plot": written})
            return
        t = Table("figure", "value [95% CI]", "seeds", "test cases", "dropped resamples", title=(
            f"persistence on the test half of {result.n_cases} cases (split seeds "
            f"{', '.join(map(str, result.split_seeds))})"), title_justify="left")
        for f in result.figures:
            ci = "" if f.ci_low is None else f" [{num(f.ci_low)}, {num(f.ci_high)}]"
            add_row(t, f.name, (num(f.value) if f.value is not None else "undefined") + ci, str(len(f.per_seed)),
                    ", ".join(str(p.n_cases) for p in f.per_seed), f"{f.n_undefined}/{f.n_boot}")
        show(t)
        for f in result.figures:
            for p in f.per_seed:
                means = ", ".join(f"{k} {num(v)}" for k, v in p.means.items())
                console.print(f"{f.metric} seed {p.seed}: {means}", markup=False)
            if f.note:
                console.print(f"[yellow]note:[/yellow] {f.note}")
        console.print("1 = the first training's gain fully survives the second; 0 = erased", markup=False)
        if written:
            console.print(f"plot: {written}", markup=False)
