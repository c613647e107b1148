"""`spt sweep`: the cartesian product of defenses × λ × poison × seeds, each finetune → evaluate → judge."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from spt.commands._common import (
    DbOption,
    JsonOption,
    ProgressDisplay,
    cli_message,
    console,
    db_path,
    err_console,
    get_store,
    num,
    print_json,
    show,
)
from spt.errors import SptError

if TYPE_CHECKING:
    from spt.sweep.run import ConfigResult, SweepResult


def _num(v: Any) -> str:
    """A metric cell: 3 decimals, scientific below 1e-3, '-' when missing."""
    if isinstance(v, float) and v != 0 and abs(v) < 1e-3:
        return num(v, ".2e")
    return num(v, ".3f" if isinstance(v, float) else "", "-")


def _g(v: Any) -> str:
    return "-" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def _plan_table(spec: Any, configs: list[dict[str, Any]], title: str) -> Table:
    with_opts = any(c.get("options") for c in configs)
    with_align = any(c.get("align") for c in configs)
    cols = ["#", *(["aligned by"] if with_align else []), "defense", "λ", *(["options"] if with_opts else []),
            "poison", "seed"]
    table = Table(*cols, title=title, title_justify="left")
    if with_align:
        from spt.sweep.align_stage import variant_label
    for c in configs:
        opts = [" ".join(f"{k}={_g(v)}" for k, v in (c.get("options") or {}).items()) or "-"] if with_opts else []
        al = [variant_label(c["align"])] if with_align else []
        table.add_row(str(c["index"]), *al, c["defense"], _g(c["lam"]), *opts, _g(c["poison"]), _g(c["seed"]))
    return table


def _summary_table(summary: SweepResult) -> Table:
    from spt.metrics import KEY_METRICS

    shown = [m for m in KEY_METRICS if any(m in r.metrics for r in summary.configs)]
    short = {"refusal_rate": "refusal", "over_refusal_rate": "over-refusal", "task_accuracy": "task acc",
             "task_loss": "task loss", "alignment_loss": "align loss"}
    table = Table("#", "config", "status", *[short.get(m, m) for m in shown], "run",
                  title=f"sweep {summary.tag}", title_justify="left")
    for col in table.columns:
        col.no_wrap = True
        col.min_width = 4
    colors = {"done": "green", "reused": "cyan", "failed": "red"}
    for r in summary.configs:
        status = {"reused": "already done"}.get(r.status, r.status)
        table.add_row(str(r.index), r.label, f"[{colors.get(r.status, 'white')}]{status}[/]",
                      *[_num(r.metrics.get(m)) for m in shown], r.run_id or "-")
    return table


def _errors(summary: SweepResult) -> list[str]:
    return [f"[{r.index}] {r.label} ({r.stage or 'finetune'}): {r.error}"
            for r in summary.configs if r.error and r.status == "failed"]


def _frontier_table(summary: SweepResult) -> Table | str:
    fr = summary.frontier
    if fr is None:
        return f"frontier (spt frontier --where tag={summary.tag}): {cli_message(summary.frontier_error or '')}"
    pts = fr.frontier
    if not pts:
        return "frontier: no run of this sweep has both metrics yet"
    x, y = fr.x, fr.y
    table = Table("run", "defense", "λ", "poison", x.name, y.name,
                  title=f"frontier ({x.name} {x.direction or ''}, {y.name} {y.direction or ''})",
                  title_justify="left")
    for p in pts:
        table.add_row(p.run_id, p.defense or "none", num(p.lam, ".4f", "-"), num(p.poison_ratio, ".4f", "-"),
                      num(p.x.value, ".4f", "-"), num(p.y.value, ".4f", "-"))
    return table


class _ConfigLines:
    """One line per finished configuration above the progress bars (on a terminal)."""

    def __init__(self, display: ProgressDisplay):
        self.display = display

    def __call__(self, r: ConfigResult) -> None:
        if not self.display.enabled:
            return
        mark = {"done": "[green]done[/]", "reused": "[cyan]already done[/]"}.get(r.status, "[red]failed[/]")
        self.display.print(f"[{r.index}] {escape(r.label)}: {mark}" + (f" — {escape(r.error)}" if r.error else ""))


def register(app: typer.Typer) -> None:
    @app.command("sweep")
    def sweep_cmd(
        ctx: typer.Context,
        model: Annotated[str | None, typer.Option("--model", help="Model reference (hub id, path, packaged name).",
                                                  show_default=False)] = None,
        from_run: Annotated[str | None, typer.Option("--from", help="Start every configuration from this run.",
                                                     show_default=False)] = None,
        task: Annotated[str | None, typer.Option("--task", help="The downstream task.", show_default=False)] = None,
        defense: Annotated[str, typer.Option("--defense", help="Defenses, comma-separated.")] = "none",
        lam: Annotated[str | None, typer.Option("--lam", help="λ values, comma-separated (each defense's own "
                                                "strength; ignored for defenses without λ such as none).",
                                                show_default=False)] = None,
        axis: Annotated[list[str] | None, typer.Option(
            "--axis", help="A defense option to vary, OPTION=V1,V2 (lisa_align_steps=10,50); multiplies only "
            "that defense's configurations; or a training setting for every defense (epochs, lr, max_steps, "
            "lora_r: epochs=1,2,3); repeatable. Options: `spt finetune --help`.",
            show_default=False)] = None,
        align_defense: Annotated[str | None, typer.Option(
            "--align-defense", help="Two-stage sweep: alignment-stage defenses, comma-separated (none, vaccine, "
            "booster, ...); each trained once from --model and shared by the task grid.", show_default=False)] = None,
        align_method: Annotated[str | None, typer.Option(
            "--align-method", help="Two-stage sweep: alignment methods, comma-separated (sft, dpo); dpo only "
            "with align defense none.", show_default=False)] = None,
        align_max_steps: Annotated[int | None, typer.Option(
            "--align-max-steps", help="Two-stage sweep: training steps of each alignment run.",
            show_default=False)] = None,
        poison: Annotated[str | None, typer.Option("--poison", help="Poison ratios, comma-separated.",
                                                   show_default=False)] = None,
        seeds: Annotated[str | None, typer.Option("--seeds", help="Seeds, comma-separated.",
                                                  show_default=False)] = None,
        max_steps: Annotated[int | None, typer.Option("--max-steps", help="Training steps per configuration.",
                                                      show_default=False)] = None,
        train_set: Annotated[list[str] | None, typer.Option(
            "--set", help="Any other finetune option, KEY=VALUE (lr=3e-5, lora=true, epochs=2); repeatable.",
            show_default=False)] = None,
        evaluate: Annotated[bool, typer.Option("--evaluate/--no-evaluate",
                                               help="Evaluate (and judge) each trained run.")] = True,
        eval_set: Annotated[list[str] | None, typer.Option(
            "--eval-set", help="Any evaluate option, KEY=VALUE; repeatable.", show_default=False)] = None,
        judge: Annotated[str, typer.Option("--judge", help="Judge spec(s), comma-separated, or none.")] = "keyword",
        rubric: Annotated[str | None, typer.Option("--rubric", help="Judge rubric (default: the judge's).",
                                                   show_default=False)] = None,
        executor: Annotated[str, typer.Option("--executor", help="local: run here; slurm: write an array job.")]
        = "local",
        dry_run: Annotated[bool, typer.Option(
            "--dry-run", help="Print the plan (local) or the Slurm scripts (slurm); run and write nothing.")] = False,
        only_index: Annotated[list[int] | None, typer.Option(
            "--only-index", help="Run only the configuration(s) at this index (what a Slurm task runs).",
            show_default=False)] = None,
        frontier: Annotated[bool, typer.Option("--frontier/--no-frontier",
                                               help="Print the sweep's frontier at the end.")] = True,
        out_dir: Annotated[Path | None, typer.Option(
            "--out-dir", help="Slurm: where scripts, task stores and logs go (default ./spt-sweep-<id>).",
            show_default=False)] = None,
        partition: Annotated[str | None, typer.Option("--partition", help="Slurm partition.",
                                                      show_default=False)] = None,
        gpus_per_task: Annotated[int, typer.Option("--gpus-per-task", help="Slurm: GPUs per configuration.")] = 0,
        gres: Annotated[str | None, typer.Option(
            "--gres", help="Slurm: generic resources per task, e.g. gpu:4 (N > 1 GPUs: finetune under accelerate "
            "launch with N processes).", show_default=False)] = None,
        account: Annotated[str | None, typer.Option("--account", help="Slurm account to charge.",
                                                    show_default=False)] = None,
        qos: Annotated[str | None, typer.Option("--qos", help="Slurm quality of service.", show_default=False)] = None,
        sbatch_extra: Annotated[Path | None, typer.Option(
            "--sbatch-extra", help="Slurm: a file of extra `#SBATCH --option=value` lines for both jobs.",
            show_default=False)] = None,
        submit: Annotated[bool | None, typer.Option(
            "--submit/--no-submit", help="Slurm: submit with sbatch after writing (default: when sbatch is on "
            "the PATH).", show_default=False)] = None,
        status: Annotated[bool, typer.Option(
            "--status", help="Slurm: show each array task's state (squeue/scontrol/sacct and the stores) for "
            "--out-dir, then stop.")] = False,
        retry_failed: Annotated[bool, typer.Option(
            "--retry-failed", help="Slurm: resubmit only the failed array tasks of --out-dir (and a gather job).")]
        = False,
        finetune_only: Annotated[bool, typer.Option("--finetune-only", hidden=True,
                                                    help="Run only the finetune stage (multi-GPU Slurm tasks).")]
        = False,
        evaluate_only: Annotated[bool, typer.Option(
            "--evaluate-only", hidden=True, help="Evaluate and judge the run --finetune-only trained (multi-GPU "
            "Slurm tasks).")] = False,
        cpus_per_task: Annotated[int | None, typer.Option("--cpus-per-task", help="Slurm: CPUs per configuration.",
                                                          show_default=False)] = None,
        time: Annotated[str | None, typer.Option("--time", help="Slurm time limit per task (e.g. 04:00:00).",
                                                 show_default=False)] = None,
        mem: Annotated[str | None, typer.Option("--mem", help="Slurm memory per task (e.g. 64G).",
                                                show_default=False)] = None,
        accelerate: Annotated[bool, typer.Option(
            "--accelerate", help="Slurm: wrap each task in `accelerate launch --num_processes <gpus>`.")] = False,
        setup: Annotated[list[str] | None, typer.Option(
            "--setup", help="Slurm: a shell line run first in each job (module load, venv activation); "
            "repeatable.", show_default=False)] = None,
        spt_command: Annotated[str | None, typer.Option(
            "--spt-command", help="Slurm: how jobs invoke spt (default: this Python's `python -m spt.cli`).",
            show_default=False)] = None,
        gather_dir: Annotated[Path | None, typer.Option(
            "--gather", help="Import the task stores of the Slurm sweep written to this --out-dir into --db "
            "(what gather.sbatch runs), then stop.", show_default=False)] = None,
        db: DbOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Run a sweep: every defense × λ × poison × seed, each finetune → evaluate → judge.

        Re-running the same sweep skips what is done; a failing configuration is recorded and the rest go on.
        With --executor slurm it writes one array job (one task per configuration, each into its own store)
        and a gather job that imports them.

        Example: spt sweep --model tiny-random --defense none,anchor --lam 0.1,0.3 --poison 0.1 --seeds 0,1
        """
        from spt.sweep.plan import (
            EXECUTORS,
            SweepSpec,
            parse_assignments,
            parse_axes,
            plan_sweep,
            split_list,
            sweep_tag,
        )

        if gather_dir is not None:
            _gather(ctx, gather_dir, db, json_out)
            return
        if status or retry_failed:
            if out_dir is None and not (model or from_run):
                raise SptError(f"{'--status' if status else '--retry-failed'} needs the sweep's --out-dir (or "
                               "its --model/--from and axes, for the default folder)")
            if out_dir is None:
                tmp = SweepSpec(model=model, from_run=from_run, task=task, defenses=split_list(defense, "--defense"),
                                lams=split_list(lam, "--lam") or [None], poisons=split_list(poison, "--poison")
                                or [None], seeds=split_list(seeds, "--seeds") or [None], max_steps=max_steps,
                                train=parse_assignments(train_set, "--set"), evaluate=evaluate,
                                eval_options=parse_assignments(eval_set, "--eval-set"),
                                judges=[] if judge.strip().lower() == "none" else split_list(judge, "--judge"),
                                rubric=rubric, axes=parse_axes(axis))
                out_dir = Path(f"spt-sweep-{tmp.tag.removeprefix('sweep:')[:8]}")
            if retry_failed:
                _retry_failed(ctx, out_dir, db, json_out)
            else:
                _status(ctx, out_dir, db, json_out)
            return
        if executor not in EXECUTORS:
            raise SptError(f"--executor must be one of {', '.join(EXECUTORS)}, not {executor!r}")
        spec = SweepSpec(
            model=model, from_run=from_run, task=task,
            defenses=split_list(defense, "--defense"),
            lams=split_list(lam, "--lam") or [None],
            poisons=split_list(poison, "--poison") or [None],
            seeds=split_list(seeds, "--seeds") or [None],
            max_steps=max_steps, train=parse_assignments(train_set, "--set"),
            evaluate=evaluate, eval_options=parse_assignments(eval_set, "--eval-set"),
            judges=[] if judge.strip().lower() == "none" else split_list(judge, "--judge"), rubric=rubric,
            axes=parse_axes(axis),
            align_defenses=split_list(align_defense, "--align-defense"),
            align_methods=split_list(align_method, "--align-method"), align_max_steps=align_max_steps,
        )
        spec.validate()
        configs = plan_sweep(spec)
        # a dry run checks the plan as a real one does (nothing is loaded or written), so a plan it prints runs
        from spt.sweep.run import check_spec, default_stages, validate_plan

        check = default_stages().check
        check = validate_plan if check is check_spec else check  # injected stages check themselves
        if check is not None:
            check(spec)

        if executor == "slurm":
            from spt.sweep.slurm import SlurmOptions

            if spec.two_stage:
                raise SptError("two-stage sweeps run with --executor local (each Slurm task has its own store, so "
                               "the alignment runs would be trained once per task); train them first and sweep "
                               "with --from RUN_ID per alignment run")

            if only_index:
                raise SptError("--only-index runs one configuration here; use it with --executor local "
                               "(Slurm tasks do)")
            short = spec.tag.removeprefix("sweep:")[:8]
            opts = SlurmOptions(
                out_dir=out_dir or Path(f"spt-sweep-{short}"), main_db=db_path(ctx, db), partition=partition,
                gpus_per_task=gpus_per_task, cpus_per_task=cpus_per_task, time=time, mem=mem, accelerate=accelerate,
                spt_command=spt_command, setup=setup or [], gres=gres, account=account, qos=qos,
                sbatch_extra=sbatch_extra, env=_job_env(),
            )
            _slurm(spec, opts, dry_run, submit, json_out)
            return
        if dry_run:
            from spt.store.engine import check_revision, read_revision
            from spt.sweep.run import select_configs

            target_db = db_path(ctx, db)  # a dry run opens nothing, but a --db the real run cannot use is an error now
            if target_db.is_dir():
                raise SptError(f"--db {target_db} is a folder; pass the path of an spt store file "
                               f"(e.g. {target_db}/spt.db)")
            if target_db.is_file() and target_db.stat().st_size > 0:
                check_revision(target_db, read_revision(target_db))
            from spt.sweep.run import check_stored_data, stored_task_name

            if stored_task_name(spec) is not None:  # a stored task must be in the store the real run will use
                if not target_db.is_file():
                    check_stored_data(None, spec)
                with get_store(ctx, db, create=False) as st:
                    check_stored_data(st, spec)
            if from_run:  # the real run starts from it: it must exist now
                if not target_db.is_file():
                    raise SptError(f"--from {from_run}: the store {target_db} does not exist, so holds no such run; "
                                   "pass --db with the store that has it")
                from spt.runs import resolve_run

                with get_store(ctx, db, create=False) as st:
                    resolve_run(st, from_run)

            chosen = select_configs(configs, only_index)
            if json_out:
                print_json({"sweep_id": spec.id, "tag": sweep_tag(spec), "spec": spec.to_dict(), "plan": chosen})
            else:
                head = f"sweep {sweep_tag(spec)}: {len(chosen)} configurations (dry run, nothing run)"
                if spec.two_stage:
                    from spt.sweep.align_stage import align_variants, alignment_runs, variant_label

                    runs = alignment_runs(chosen)
                    skipped = align_variants(spec.align_defenses, spec.align_methods)[1]
                    head = (f"sweep {sweep_tag(spec)}: {len(runs)} alignment runs "
                            f"({', '.join(variant_label(v) for v in runs)}) and {len(chosen)} task runs "
                            "(dry run, nothing run)" + (f"; skipped {', '.join(skipped)}" if skipped else ""))
                show(_plan_table(spec, chosen, head))
            return

        from spt.sweep.run import run_sweep

        with get_store(ctx, db) as store, ProgressDisplay(quiet=json_out) as display:
            from spt.sweep.run import check_stored_data

            check_stored_data(store, spec)
            summary = run_sweep(store, spec, progress=display, on_config=_ConfigLines(display),
                                only_index=only_index, frontier=frontier, finetune_only=finetune_only,
                                evaluate_only=evaluate_only)
        if os.environ.get("RANK", "0") != "0":  # under accelerate launch only rank 0 reports
            raise typer.Exit(1 if summary.n_failed else 0)
        if json_out:
            print_json(summary.to_dict())
        else:
            show(_summary_table(summary))
            for line in _errors(summary):
                console.print(f"[red]failed[/red] {escape(line)}", highlight=False)
            for r in summary.configs:
                if r.status == "interrupted":
                    console.print(f"[{r.index}] {r.label}: {r.error}", highlight=False, markup=False)
                step = r.finetune.resumed_from_step if r.finetune else None
                if step:
                    console.print(f"[{r.index}] {r.label}: finetune resumed from step {step}", highlight=False,
                                  markup=False)
            console.print(f"{summary.n_done} done, {summary.n_failed} failed, "
                          f"{summary.n_trained} trained now; runs tagged {summary.tag} in {summary.store}",
                          highlight=False, markup=False)
            if summary.frontier is not None or summary.frontier_error:
                table = _frontier_table(summary)
                if isinstance(table, Table):
                    show(table)
                else:
                    console.print(table, highlight=False, markup=False)
        if summary.n_failed:
            raise typer.Exit(1)
        if summary.n_interrupted:
            from spt.sweep.slurm import INTERRUPTED_EXIT

            codes = [r.exit_code for r in summary.configs if r.status == "interrupted"]
            # 128 + signal (143 for SIGTERM), as spt finetune exits; a Slurm task requeues itself and resumes
            raise typer.Exit(next((c for c in codes if c), INTERRUPTED_EXIT))


def _job_env() -> dict[str, str]:
    import os

    from spt.sweep.slurm import ENV_VARS

    return {k: os.environ[k] for k in ENV_VARS if os.environ.get(k)}


def _slurm(spec: Any, opts: Any, dry_run: bool, submit: bool | None, json_out: bool) -> None:
    import shutil

    from spt.sweep.slurm import slurm_files, submit_sweep, write_slurm

    if dry_run:
        files = slurm_files(spec, opts)
        if json_out:
            print_json({"sweep_id": spec.id, "tag": spec.tag, "out_dir": str(opts.out_dir),
                        "files": {k: v for k, v in files.items() if k != "sweep.json"}})
            return
        for name in ("sweep.sbatch", "gather.sbatch", "submit.sh"):
            console.print(f"# ---- {opts.out_dir / name}", style="bold", highlight=False)
            console.print(files[name], markup=False, highlight=False)
        console.print(f"# dry run: nothing written or submitted ({spec.tag})", style="dim", highlight=False)
        return
    if submit is None:
        submit = shutil.which("sbatch") is not None
    info = write_slurm(spec, opts)
    if submit:
        info["submitted"] = submit_sweep(opts.out_dir)
    if json_out:
        print_json(info)
        return
    console.print(f"wrote {info['n_tasks']}-task Slurm array for sweep {info['tag']} to {info['out_dir']}",
                  highlight=False)
    for path in info["files"].values():
        console.print(f"  {path}", highlight=False)
    if submit:
        sub = info["submitted"]
        console.print(f"submitted array job {sub['array_job']} ({info['n_tasks']} tasks) and gather job "
                      f"{sub['gather_job']} (afterany); watch with: spt sweep --status --out-dir {info['out_dir']}",
                      highlight=False, markup=False)
    else:
        console.print(f"submit with:  {info['submit']}", highlight=False)
        console.print(f"  (or: {info['manual'][0]}; then {info['manual'][1]})", highlight=False, markup=False)
    console.print(f"results are gathered into {info['main_db']}; see them with "
                  f"`spt runs --where tag={info['tag']}` and `spt frontier --where tag={info['tag']}`",
                  highlight=False)


def _status_table(st: dict[str, Any]) -> Table:
    table = Table("#", "config", "job", "slurm", "restarts", "run", "checkpoint", "gathered", "error",
                  title=f"sweep {st['tag']} ({st['out_dir']})", title_justify="left")
    colors = {"done": "green", "failed": "red", "running": "yellow", "interrupted": "magenta"}
    for t in st["tasks"]:
        slurm = t["slurm_state"] + (f" ({t['reason']})" if t.get("reason") else "")
        run = t["run_status"] or "-"
        table.add_row(str(t["index"]), t["label"], t["job"] or "-", slurm, str(t.get("restarts") or 0),
                      f"[{colors.get(run, 'white')}]{run}[/]", _g(t.get("checkpoint_step")),
                      "yes" if t["gathered"] else "no", (t.get("error") or "")[:80], )
    return table


def _status(ctx: typer.Context, out_dir: Path, db: Path | None, json_out: bool) -> None:
    from spt.sweep.slurm import sweep_status

    st = sweep_status(out_dir, db_path(ctx, db) if db else None)
    if json_out:
        print_json(st)
        return
    show(_status_table(st))
    for g in st["gather"]:
        console.print(f"gather job {g['job']}: {g['state'] or 'unknown'}", highlight=False)
    if not st["submissions"]:
        console.print("not submitted yet (no slurm.json); submit with spt sweep ... --executor slurm --submit "
                      "or bash submit.sh", highlight=False)
    if st["failed"]:
        console.print(f"failed: {', '.join(map(str, st['failed']))}; resubmit them with "
                      f"spt sweep --retry-failed --out-dir {st['out_dir']}", highlight=False, markup=False)


def _retry_failed(ctx: typer.Context, out_dir: Path, db: Path | None, json_out: bool) -> None:
    from spt.sweep.slurm import submit_sweep, sweep_status

    st = sweep_status(out_dir, db_path(ctx, db) if db else None)
    busy = [t["index"] for t in st["tasks"] if t["index"] in st["failed"] and
            (t["slurm_state"] or "").split()[0] in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING")]
    if busy:
        raise SptError(f"array task(s) {', '.join(map(str, busy))} are still queued or running; wait, or scancel "
                       "them first")
    if not st["failed"]:
        if json_out:
            print_json({"resubmitted": [], "tag": st["tag"]})
        else:
            console.print(f"no failed task in {st['out_dir']}; nothing resubmitted", highlight=False)
        return
    sub = submit_sweep(out_dir, indices=st["failed"])
    if json_out:
        print_json({"resubmitted": st["failed"], **sub})
        return
    console.print(f"resubmitted {len(st['failed'])} failed task(s) ({', '.join(map(str, st['failed']))}) as array "
                  f"job {sub['array_job']}, gather job {sub['gather_job']}", highlight=False)


def _gather(ctx: typer.Context, out_dir: Path, db: Path | None, json_out: bool) -> None:
    import json

    from spt.sweep.slurm import gather, task_dbs_of

    tasks = task_dbs_of(out_dir)
    main = db_path(ctx, db)
    res = gather(main, tasks)
    meta = json.loads((Path(out_dir).expanduser() / "sweep.json").read_text())
    tag = meta.get("tag")
    by_status: dict[str, int] = {}
    if tag:
        from spt.store.queries import tag_status_counts

        with get_store(ctx, db) as store:
            by_status = tag_status_counts(store, tag)
    res.update(tag=tag, n_tasks=len(tasks), runs_by_status=by_status)
    if json_out:
        print_json(res)
    else:
        for item in res["imported"]:
            console.print(f"imported {item['source']}: {item['runs']} run(s), {item['inserted']} rows", highlight=False)
        for m in res["missing"]:
            err_console.print(f"[yellow]missing[/yellow] {m} (its task never wrote a store)", highlight=False)
        runs = ", ".join(f"{v} {k}" for k, v in sorted(by_status.items())) or "none"
        console.print(f"gathered {len(res['imported'])} of {len(tasks)} task stores into {main}; "
                      f"runs of {tag}: {runs}", highlight=False)
    if res["missing"]:
        raise typer.Exit(1)
