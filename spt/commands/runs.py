"""`spt runs`, `spt runs show ID`, `spt runs set ID KEY=VALUE...`: what has been trained and evaluated."""

from __future__ import annotations

import csv
import sys
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from spt.commands._common import DbOption, JsonOption, add_row, console, get_store, num, print_json, show
from spt.errors import SptError

WhereOption = Annotated[
    list[str] | None,
    typer.Option("--where", "-w", help="Filter runs: KEY=VALUE with KEY in defense, lam, poison_ratio, model, "
                 "task, kind, status, seed, tag. Repeat a key to OR, different keys AND; KEY= matches unset.",
                 show_default=False),
]

TABLE_LIMIT = 500
_SHORT = {"refusal_rate": "refusal↑", "over_refusal_rate": "over-ref↓", "alignment_loss": "align loss↓",
          "task_loss": "task loss↓", "task_accuracy": "task acc↑"}




def _csv_rows(runs: list[dict[str, Any]]) -> None:
    from spt.runs import KEY_METRICS

    cols = ["id", "kind", "parent_run_id", "model_ref", "base_model", "task", "defense", "lam", "poison_ratio",
            "seed", "status", "tags", "created_at", *KEY_METRICS]
    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow(cols)
    for r in runs:
        row = [r[c] for c in cols[:-len(KEY_METRICS)]] + [r["metrics"][m] for m in KEY_METRICS]
        row[cols.index("tags")] = ",".join(r["tags"] or [])
        w.writerow(["" if v is None else v for v in row])
    sys.stdout.flush()


def _delta(d: dict[str, Any]) -> str:
    v = num(d["value"])
    if d.get("delta") is None:
        return v
    return f"{v} ({d['delta']:+.3g})"


def _sparkline(values: list[float], width: int = 24) -> str:
    """The values as a row of block characters (sampled to `width`), lowest ▁ to highest █."""
    if not values:
        return ""
    if len(values) > width:
        values = [values[round(i * (len(values) - 1) / (width - 1))] for i in range(width)]
    lo, hi = min(values), max(values)
    blocks = "▁▂▃▄▅▆▇█"
    if hi - lo < 1e-12:
        return blocks[3] * len(values)
    return "".join(blocks[min(7, int((v - lo) / (hi - lo) * 7.999))] for v in values)


def _printshow(info: dict[str, Any]) -> None:
    import json

    run = info["run"]
    console.print(f"[bold]run {run['id']}[/bold]  {run['kind']}  status {run['status']}"
                  + (f"  error: {run['error']}" if run.get("error") else ""))
    meta = Table("field", "value", title="run", title_justify="left", show_header=False)
    for k in ("model_ref", "base_model", "task", "defense", "lam", "poison_ratio", "seed", "lora", "tags",
              "notes", "parent_run_id", "identity", "created_at", "finished_at"):
        v = run.get(k)
        if v is not None:
            add_row(meta, k, ", ".join(v) if isinstance(v, list) else str(v))
    show(meta)
    if info.get("poison"):
        console.print(f"[bold]poison[/bold] {escape(info['poison']['note'])}", highlight=False)
    if run.get("config"):
        console.print("[bold]config[/bold]")
        console.print(json.dumps(run["config"], indent=2, sort_keys=True, default=str), markup=False,
                      highlight=False)

    chain = info["lineage"]
    console.print("[bold]lineage[/bold] (root → this run; Δ from the parent run)")
    keys = sorted({k for step in chain for k in step["metrics"]})
    lt = Table("metric", *[f"{s['kind']} {s['run_id'][:13]}" + (f"\n{s['defense']}" if s["defense"] else "")
                           + (f" λ={s['lam']:g}" if s["lam"] is not None else "") for s in chain])
    for k in keys:
        add_row(lt, k, *[_delta(s["metrics"][k]) if k in s["metrics"] else "" for s in chain])
    if not keys:
        add_row(lt, "(no metrics yet)", *["" for _ in chain])
    show(lt)

    if info.get("training"):
        tt = Table("train log", "steps", "first", "last", "min", "max", "curve", title="training (spt view plots each)",
                   title_justify="left")
        for name, t in info["training"].items():
            add_row(tt, name, f"{t['first_step']}-{t['last_step']} ({t['n']})", num(t["first"]), num(t["last"]),
                    num(t["min"]), num(t["max"]), _sparkline(t["values"]))
        show(tt)
    if info["checkpoints"]:
        ct = Table("id", "step", "kind", "final", "path", title="checkpoints", title_justify="left")
        for c in info["checkpoints"]:
            add_row(ct, c["id"], str(c["step"]), c["kind"], "yes" if c["is_final"] else "", c["path"])
        show(ct)
    else:
        console.print("checkpoints: none")
    if info["evaluations"]:
        et = Table("id", "task/split", "preset", "status", "generations", "metrics", "created",
                   title="evaluations", title_justify="left")
        for e in info["evaluations"]:
            add_row(et, e["id"], f"{e['task'] or 'harmor'}/{e['split'] or ''}", e["refusal_preset"] or "",
                       e["status"], str(e["n_generations"]), str(e["n_metrics"]), e["created_at"][:19])
        show(et)
    else:
        console.print("evaluations: none (run `spt evaluate`)")
    if info["judgments"]:
        statuses = sorted({s for j in info["judgments"] for s in j["by_status"]})
        jt = Table("judge", *statuses, "total", "superseded", title="judgments", title_justify="left")
        for j in info["judgments"]:
            add_row(jt, j["judge"] or j["judge_id"], *[str(j["by_status"].get(s, 0)) for s in statuses],
                       str(j["total"]), str(j["superseded"]))
        show(jt)
    else:
        console.print("judgments: none")
    if info["audit"]:
        at = Table("changed_at", "key", "old", "new", title="metadata changes", title_justify="left")
        for a in info["audit"]:
            add_row(at, a["changed_at"][:19], a["key"], a["old_value"] or "", a["new_value"] or "")
        show(at)


def register(app: typer.Typer) -> None:
    runs_app = typer.Typer(help="List, inspect and correct runs.", invoke_without_command=True)
    app.add_typer(runs_app, name="runs")

    @runs_app.callback()
    def list_cmd(
        ctx: typer.Context,
        where: WhereOption = None,
        csv_out: Annotated[bool, typer.Option("--csv", help="Print CSV (all columns, key metrics).")] = False,
        limit: Annotated[int | None, typer.Option("--limit", help=f"Show only the newest N runs (0: all; the "
                                                  f"table shows the newest {TABLE_LIMIT} unless given).",
                                                  show_default=False)] = None,
        configurations: Annotated[bool, typer.Option(
            "--configurations", "-c", help="One row per configuration (runs that differ only in seed): the mean "
            "across seeds with a t interval.")] = False,
        db: DbOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """List runs with their key metrics and status."""
        if ctx.invoked_subcommand is not None:
            return
        from spt.runs import KEY_METRICS, list_configurations, list_runs

        if configurations:
            with get_store(ctx, db, create=False) as store:
                cfgs = list_configurations(store, where or [])
            if json_out:
                print_json(cfgs)
                return
            table = Table("configuration", "kind", "model", "task", "defense", "λ", "poison", "seeds",
                          *[f"{_SHORT[m]} [95% CI]" for m in KEY_METRICS])
            for c in cfgs:
                cells = []
                for m in KEY_METRICS:
                    v = c["metrics"][m]
                    cells.append(num(v["mean"]) + (f" [{num(v['ci_low'])}, {num(v['ci_high'])}]"
                                                    if v["ci_low"] is not None else ""))
                add_row(table, c["configuration"], c["kind"], c["model_ref"], c["task"] or "", c["defense"] or "",
                        num(c["lam"]), num(c["poison_ratio"]),
                        ",".join("" if x is None else str(x) for x in c["seeds"]), *cells)
            show(table)
            console.print(f"{len(cfgs)} configuration(s); several seeds: mean with a Student t interval across seeds "
                          "(never narrower than the pooled exact interval of a rate); one seed: its own interval",
                          markup=False)
            return

        if json_out and csv_out:
            raise SptError("--json and --csv both given; pick one")
        if limit is not None and limit < 0:
            raise SptError("--limit must be 0 (all) or more")
        with get_store(ctx, db, create=False) as store:
            runs = list_runs(store, where or [])
        n_all = len(runs)
        if limit is None and not (json_out or csv_out) and n_all > TABLE_LIMIT:
            limit = TABLE_LIMIT  # a rich table of 10k rows takes seconds to draw; CSV/JSON get all
        if limit:
            runs = runs[-limit:]
        if json_out:
            print_json(runs)
            return
        if csv_out:
            _csv_rows(runs)
            return
        if not runs:
            console.print("no runs match --where" if where else
                          "no runs yet; start one with `spt finetune` or `spt demo`")
            return
        lineage = any(r.get("aligned_by") for r in runs)  # two-stage lineage: each run's alignment variant
        table = Table("id", "kind", "model", "task", *(["aligned by"] if lineage else []), "defense", "λ", "poison",
                      "seed", "status", *[_SHORT[m] for m in KEY_METRICS])
        for r in runs:
            add_row(table, r["id"], r["kind"], r["model_ref"], r["task"] or "",
                    *([r.get("aligned_by") or ""] if lineage else []), r["defense"] or "",
                    num(r["lam"]), num(r["poison_ratio"]), num(r["seed"]),
                    r["status"] + (" (stale)" if r.get("stale") else ""),
                    *[num(r["metrics"][m]) for m in KEY_METRICS])
        show(table)
        console.print(f"{len(runs)} run(s)" if len(runs) == n_all else
                      f"newest {len(runs)} of {n_all} runs shown; --limit 0 for all, or --csv / --json")
        n_stale = sum(bool(r.get("stale")) for r in runs)
        if n_stale:
            console.print(f"{n_stale} running run(s) are stale (their process stopped renewing its lease); "
                          "`spt runs reap` marks them interrupted, `--resume` continues them", markup=False)

    @runs_app.command("reap")
    def reap_cmd(
        ctx: typer.Context,
        timeout: Annotated[float | None, typer.Option(
            "--timeout", help="Seconds without a heartbeat after which a running run's lease has expired "
            "(default $SPT_LEASE_TIMEOUT_S, else 300).", show_default=False)] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="List the stale runs; change nothing.")] = False,
        db: DbOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Mark running runs whose process is gone (lease expired) as interrupted, so --resume continues them; stale
        running evaluations as failed (spt evaluate resumes them from their stored generations)."""
        from spt.store.lease import describe, lease_timeout, reap, reap_evaluations

        limit = lease_timeout(timeout)
        with get_store(ctx, db, create=False) as store:
            rows = reap(store, limit, dry_run=dry_run)
            evals = reap_evaluations(store, limit, dry_run=dry_run)
        if json_out:
            print_json({"timeout_s": limit, "dry_run": dry_run, "runs": rows, "evaluations": evals})
            return
        for r in rows:
            console.print(f"{'stale' if dry_run else 'interrupted'} {r['id']}  "
                          f"({describe(r['owner'], r['heartbeat'], r['updated_at'])})", markup=False, highlight=False)
        for e in evals:
            console.print(f"{'stale' if dry_run else 'failed'} evaluation {e['id']}  "
                          f"({describe(e['owner'], e['heartbeat'], e['updated_at'])})", markup=False, highlight=False)
        verb = "would be marked" if dry_run else "marked"
        console.print(f"{len(rows)} stale running run(s) {verb} interrupted, {len(evals)} stale evaluation(s) "
                      f"{verb} failed (lease timeout {limit:g} s)", markup=False)

    @runs_app.command("show")
    def show_cmd(
        ctx: typer.Context,
        run_id: Annotated[str, typer.Argument(help="Run id or unique prefix.")],
        db: DbOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """A run's configuration, lineage (metric changes from the parent), checkpoints, evaluations,
        judgments and metadata changes."""
        from spt.runs import show_run

        with get_store(ctx, db, create=False) as store:
            info = show_run(store, run_id)
        if json_out:
            print_json(info)
            return
        _printshow(info)

    @runs_app.command("set")
    def set_cmd(
        ctx: typer.Context,
        run_id: Annotated[str, typer.Argument(help="Run id or unique prefix.")],
        assignments: Annotated[list[str], typer.Argument(
            help="KEY=VALUE with KEY in defense, lam, tags (comma list), notes; KEY= unsets.",
            show_default=False)],
        db: DbOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Correct a run's metadata; every change is kept (old value, new value, time) in the audit table."""
        from spt.runs import set_run

        with get_store(ctx, db, create=False) as store:
            result = set_run(store, run_id, assignments)
        if json_out:
            print_json(result)
            return
        for c in result["changes"]:
            console.print(f"{c['key']}: {c['old']!r} → {c['new']!r}", markup=False, highlight=False)
        if result["unchanged"]:
            console.print(f"unchanged (already set): {', '.join(result['unchanged'])}")
        if result["changes"]:
            console.print(f"run {result['run_id']} updated; history in `spt runs show {result['run_id'][:13]}`")
