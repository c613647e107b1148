"""`spt demo`: the whole mission on the embedded default model, on CPU, with visible progress."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from spt.commands._common import DbOption, JsonOption, ProgressDisplay, add_row, console, get_store, num, print_json
from spt.errors import SptError

if TYPE_CHECKING:
    from spt.progress import Progress


class _DemoDisplay(ProgressDisplay):
    """Stage and configuration lines always (also piped); the running step's bars on a terminal."""

    def __init__(self, quiet: bool):
        super().__init__(quiet, transient=True)
        self.quiet = quiet
        self.label = ""

    def __call__(self, p: Progress) -> None:
        if p.task == "demo" and not p.scope:
            if not self.quiet:
                self.print(f"[bold cyan][{p.done + 1}/{p.total}][/] {escape(p.info['title'])}")
            return
        if p.task == "sweep" and p.info.get("label") != self.label and p.done < (p.total or 0):
            self.label = p.info.get("label", "")
            if not self.quiet:
                self.print(f"      configuration {escape(self.label)}")
        super().__call__(p)


def _ci(r: dict[str, Any], key: str, fmt: str) -> str:
    v = num(r[key], fmt, "—")
    lo, hi = r["intervals"].get(key, (None, None))
    return v if lo is None or hi is None else f"{v} [{num(lo, fmt)}, {num(hi, fmt)}]"


def render_rows(rows: list[dict[str, Any]]) -> Table:
    title = ("demo configurations (HarmOR v3 test subset, keyword preset `spt`; fine-tuned rows: mean over seeds "
             "[95% interval])")
    table = Table("model", "λ", "seeds", "refusal ↑", "over-refusal ↓", "pair ↑", "align loss ↓", "task loss ↓",
                  "task acc ↑", "degenerate", "runs", title=escape(title), title_justify="left")
    for r in rows:
        add_row(table, r["model"], num(r["lam"], "g", "—"), str(len(r["runs"])), _ci(r, "refusal_rate", ".2f"),
                _ci(r, "over_refusal_rate", ".2f"), num(r["pair_score"], ".2f", "—"), _ci(r, "alignment_loss", ".3f"),
                _ci(r, "task_loss", ".3f"), num(r["task_accuracy"], ".2f", "—"),
                num(r.get("degenerate_rate"), ".2f", "—"),
                r["configuration"] or " ".join(x[:13] for x in r["runs"]))
    return table


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_cmd(
        ctx: typer.Context,
        quick: Annotated[bool, typer.Option("--quick", help="Smaller, fewer runs (under 5 minutes on CPU).")] = False,
        plot: Annotated[Path, typer.Option("--plot", help="Where to write the frontier PNG.")] = Path(
            "spt-demo-frontier.png"),
        model: Annotated[str | None, typer.Option("--model", hidden=True,
                                                  help="Another model reference (tests use tiny-random).")] = None,
        db: DbOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """The whole mission on SmolLM2-135M-Instruct: HarmOR, align, fine-tuning without poison, with poison,
        and with poison plus the anchor defense (several seeds each), evaluation, paired tests, frontier."""
        import dataclasses

        from spt.commands._common import show
        from spt.commands.frontier import print_frontier
        from spt.demo import FULL, QUICK, run_demo

        if plot.expanduser().is_dir():
            raise SptError(f"--plot {plot} is a folder; give the path of the PNG to write, e.g. {plot}/frontier.png")
        from spt.frontier.plot import plot_format

        plot_format(plot)  # an unknown suffix is refused before minutes of training
        plan = QUICK if quick else FULL
        if model:
            from spt.sweep.run import _check_model_ref

            try:  # refused before the store is opened or anything printed
                _check_model_ref(model)
            except SptError as e:
                raise SptError(f"--model: {e}") from None
            plan = dataclasses.replace(plan, model=model)
        store = get_store(ctx, db)
        if not json_out:
            console.print(f"spt demo ({plan.name}) on {plan.model}; store {store.path}")
        with _DemoDisplay(quiet=json_out) as display:
            result = run_demo(store, plan, plot=plot, progress=display)
        fr = result.pop("frontier")
        if json_out:
            from spt.frontier.export import to_dict

            print_json({**result, "frontier": to_dict(fr)})
            return
        show(render_rows(result["rows"]))
        print_frontier(fr)
        for c in result["checks"]:
            if c["ok"]:
                console.print(f"[green]✓[/] {c['claim']}: ", end="")
            elif c.get("status") == "nothing scored":
                console.print(f"[red]✗ nothing scored[/]: {c['claim']}: ", end="")
            else:
                console.print(f"[red]✗ not shown at this n[/]: {c['claim']}: ", end="")
            console.print(c["detail"], markup=False)
        if result["plot"]:
            console.print(f"plot: {result['plot']}")
