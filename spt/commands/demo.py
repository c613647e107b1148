"""`spt demo`: the whole mission on the embedded default model, on CPU, with visible progress."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from spt.commands._common import DbOption, JsonOption, add_row, console, err_console, get_store, num, print_json


class _DemoDisplay:
    """Stage lines always; one live bar for the running step when stderr is a terminal."""

    def __init__(self, quiet: bool):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.quiet = quiet
        self.live = err_console.is_terminal and not quiet
        self.prog = Progress(TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), console=err_console, disable=not self.live, transient=True)
        self.task = None
        self.label = ""

    def __enter__(self) -> _DemoDisplay:
        self.prog.__enter__()
        self.task = self.prog.add_task("", total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        self.prog.__exit__(*exc)

    def __call__(self, kind: str, *args: Any, **info: Any) -> None:
        if kind == "stage":
            i, n, title = args
            if not self.quiet:
                self.prog.console.print(f"[bold cyan][{i}/{n}][/] {title}")
            self.prog.reset(self.task, total=None, description="")
        elif kind == "finetune" and len(args) >= 2:
            self.prog.update(self.task, completed=args[0], total=args[1], description="training steps")
        elif kind == "evaluate" and len(args) >= 3:
            self.prog.update(self.task, completed=args[1], total=args[2], description=f"evaluate: {args[0]}")
        elif kind == "sweep" and args:
            event = args[0]
            if event == "config":
                self.label = info.get("label", "")
                if not self.quiet:
                    self.prog.console.print(f"      configuration {self.label}")
            elif event == "step":
                sub = list(info.get("args") or ())
                stage = info.get("stage", "")
                if sub and isinstance(sub[0], str):
                    stage = f"{stage}: {sub.pop(0)}"
                nums = [a for a in sub if isinstance(a, (int, float)) and not isinstance(a, bool)]
                if len(nums) >= 2:
                    self.prog.update(self.task, completed=nums[0], total=nums[1], description=stage)




def _ci(r: dict[str, Any], key: str, fmt: str) -> str:
    v = num(r[key], fmt, "—")
    lo, hi = r["intervals"].get(key, (None, None))
    return v if lo is None or hi is None else f"{v} [{num(lo, fmt)}, {num(hi, fmt)}]"


def render_rows(rows: list[dict[str, Any]]) -> Table:
    title = ("demo configurations (HarmOR v2 test subset, keyword preset `spt`; fine-tuned rows: mean over seeds "
             "[95% interval])")
    table = Table("model", "λ", "seeds", "refusal ↑", "over-refusal ↓", "pair ↑", "align loss ↓", "task loss ↓",
                  "task acc ↑", "runs", title=escape(title), title_justify="left")
    for r in rows:
        add_row(table, r["model"], num(r["lam"], "g", "—"), str(len(r["runs"])), _ci(r, "refusal_rate", ".2f"),
                _ci(r, "over_refusal_rate", ".2f"), num(r["pair_score"], ".2f", "—"), _ci(r, "alignment_loss", ".3f"),
                _ci(r, "task_loss", ".3f"), num(r["task_accuracy"], ".2f", "—"),
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

        plan = QUICK if quick else FULL
        if model:
            plan = dataclasses.replace(plan, model=model)
        store = get_store(ctx, db)
        if not json_out:
            console.print(f"spt demo ({plan.name}) on {plan.model}; store {store.path}")
        with _DemoDisplay(quiet=json_out) as display:
            result = run_demo(store, plan, plot=plot, event=display)
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
            else:
                console.print(f"[red]✗ not shown at this n[/]: {c['claim']}: ", end="")
            console.print(c["detail"], markup=False)
        if result["plot"]:
            console.print(f"plot: {result['plot']}")
