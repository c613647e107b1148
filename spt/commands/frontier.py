"""`spt frontier`: the Pareto-optimal runs on two metrics, hypervolume per group, exports and a plot."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from spt.commands._common import DbOption, JsonOption, add_row, console, get_store, num, print_json, show, with_ci
from spt.errors import SptError


def _parse_ref(ref: str) -> tuple[float, float]:
    parts = [p.strip() for p in ref.split(",")]
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        vals = []
    if len(vals) != 2 or not all(math.isfinite(v) for v in vals):
        raise SptError(f"--ref {ref!r}: expected two numbers X,Y (e.g. --ref 2.5,3)")
    return vals[0], vals[1]






def register(app: typer.Typer) -> None:
    @app.command("frontier")
    def frontier_cmd(
        ctx: typer.Context,
        x: Annotated[str | None, typer.Option("--x", help="X metric (default task_loss); NAME or NAME:lower|higher.",
                                              show_default=False)] = None,
        y: Annotated[str | None, typer.Option("--y", help="Y metric (default alignment_loss).",
                                              show_default=False)] = None,
        or_bench: Annotated[bool, typer.Option("--or-bench", help="OR-Bench view: x = over_refusal_rate, "
                                               "y = refusal_rate.")] = False,
        group_by: Annotated[str, typer.Option("--group-by", help="defense | poison | model | stage.")] = "defense",
        where: Annotated[list[str] | None, typer.Option(
            "--where", "-w", help="KEY=VALUE run filter (defense, lam, poison_ratio, model, task, kind, status, "
            "seed, tag); repeat a key to OR.", show_default=False)] = None,
        judge: Annotated[str | None, typer.Option("--judge", help="Judge name or id prefix for judge metrics.",
                                                  show_default=False)] = None,
        category: Annotated[str, typer.Option("--category", help="Metric category (\"all\" = overall).")] = "all",
        preset: Annotated[str | None, typer.Option("--preset", help="Only metrics under this refusal preset "
                                                   "or rubric.", show_default=False)] = None,
        export: Annotated[str | None, typer.Option("--export", help="csv | json | md | latex (to --out or stdout).",
                                                   show_default=False)] = None,
        out: Annotated[Path | None, typer.Option("--out", help="Export file (format from --export or the "
                                                 "suffix).", show_default=False)] = None,
        plot: Annotated[Path | None, typer.Option("--plot", help="Write the figure (.png, .svg or .pdf).",
                                                  show_default=False)] = None,
        ref: Annotated[str | None, typer.Option("--ref", help="Hypervolume reference X,Y (default, fixed: a "
                                                "rate's worst possible value, else the starting (base) model's "
                                                "value).", show_default=False)] = None,
        setting: Annotated[str | None, typer.Option("--setting", help="Evaluation setting key (prefix) when runs "
                                                    "were evaluated under several (dataset, split, limit, "
                                                    "decoding).", show_default=False)] = None,
        per_seed: Annotated[bool, typer.Option("--per-seed", help="One point per run instead of per "
                                               "configuration (runs that differ only in seed).")] = False,
        all_points: Annotated[bool, typer.Option("--all-points", help="List every run, not only the "
                                                 "non-dominated ones.")] = False,
        db: DbOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Which runs are Pareto-optimal on two metrics, and which defense buys the most (hypervolume)."""
        from spt.frontier import GROUP_BY, OR_BENCH, compute_frontier
        from spt.frontier.export import export_format, render, to_dict, write_export
        from spt.frontier.plot import plot_format, plot_frontier

        if or_bench:
            if x or y:
                raise SptError("--or-bench sets --x and --y; give either --or-bench or --x/--y")
            x, y = OR_BENCH
        if group_by not in GROUP_BY:
            raise SptError(f"--group-by {group_by!r} is not valid; choose one of: {', '.join(GROUP_BY)}")
        ref_pt = _parse_ref(ref) if ref is not None else None
        fmt = export_format(export, out) if (export or out) else None
        if fmt and out is None and json_out:
            raise SptError("--json and --export without --out both print to stdout; add --out FILE or drop one")
        if plot is not None:
            plot_format(plot)
        with get_store(ctx, db, create=False) as store:  # read-only: a missing store is an error, not created
            result = compute_frontier(store, x, y, category=category, judge=judge, preset=preset,
                                      where=where or [], group_by=group_by, ref=ref_pt, setting=setting,
                                      per_seed=per_seed)
        if not result.points:
            reasons = "; ".join(f"{n} {why}" for why, n in sorted(result.excluded.items())) or "none match"
            raise SptError(f"no run has both {result.x.name} and {result.y.name} (category {result.category})"
                           f"{' among runs matching --where' if where else ''}: {result.n_runs} run(s), "
                           f"excluded: {reasons}")
        written = []
        if fmt and out is not None:
            written.append(str(write_export(result, fmt, out, all_points)))
        if plot is not None:
            written.append(str(plot_frontier(result, plot)))
        if json_out:
            d = to_dict(result, all_points)
            d["written"] = written
            print_json(d)
            return
        if fmt and out is None:
            typer.echo(render(result, fmt, all_points), nl=False)
            return
        print_frontier(result, all_points)
        for w in written:
            console.print(f"wrote {w}")


def print_frontier(result, all_points: bool = False) -> None:
    """The frontier and hypervolume tables (also used by `spt demo`)."""
    xl, yl = result.x, result.y
    rows = result.rows(all_points)
    unit = "runs" if result.per_seed else "configurations"
    title = (f"{'all' if all_points else 'non-dominated'} {unit}: {yl.name} ({yl.better}) vs "
             f"{xl.name} ({xl.better}), category {result.category}"
             + (f", judge {result.judge['name']}" if result.judge else ""))
    grp = result.group_by != "defense"  # with --group-by defense the group is the defense column
    lineage = any(p.aligned_by for p in rows)  # two-stage lineage: show each run's alignment variant
    t = Table("run", *([result.group_by] if grp else []), *(["aligned by"] if lineage else []), "defense", "λ",
              "poison", "model", "seeds",
              f"{xl.name} {xl.arrow} [95% CI]", "n", f"{yl.name} {yl.arrow} [95% CI]", "n",
              *(["frontier"] if all_points else []), title=title, title_justify="left")
    for p in rows:
        add_row(t, p.run_id, *([p.group] if grp else []), *([p.aligned_by or ""] if lineage else []),
                p.group if not grp else (p.defense or ""), num(p.lam),
                num(p.poison_ratio), p.model or "", ",".join("" if s is None else str(s) for s in p.seeds),
                with_ci(p.x.value, p.x.ci_low, p.x.ci_high), str(p.x.n),
                with_ci(p.y.value, p.y.ci_low, p.y.ci_high), str(p.y.n),
                *(["●" if p.on_frontier else ""] if all_points else []))
    show(t)
    if result.setting:
        console.print(f"evaluation setting {result.setting}: {result.setting_description}", markup=False)
    if result.ref is None:
        console.print(result.ref_source, markup=False)
        msg = f"{len(result.frontier)} of {len(result.points)} {unit} non-dominated"
        if result.excluded:
            msg += "; excluded " + ", ".join(f"{n} ({why})" for why, n in sorted(result.excluded.items()))
        console.print(msg, markup=False)
        return
    ref = ", ".join(num(v) for v in result.ref)
    console.print(f"reference point ({ref}): {result.ref_source}", markup=False)
    ht = Table("rank", result.group_by, "points", "on its frontier", "hypervolume [95% CI]", "differs from next",
               title=f"hypervolume per {result.group_by} (larger is better)", title_justify="left")
    for g in result.groups:
        nxt = "" if g.distinct_from_next is None else ("yes" if g.distinct_from_next else "not distinguishable")
        add_row(ht, str(g.rank), g.name, str(g.n_points), str(g.n_frontier),
                with_ci(g.hypervolume, g.hv_low, g.hv_high), nxt)
    show(ht)
    msg = f"{len(result.frontier)} of {len(result.points)} {unit} non-dominated"
    if result.excluded:
        msg += "; excluded " + ", ".join(f"{n} ({why})" for why, n in sorted(result.excluded.items()))
    console.print(msg, markup=False)
