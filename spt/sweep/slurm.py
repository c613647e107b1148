"""Running a sweep on a Slurm cluster: one array task per configuration, then a gather step.

Files written to the output directory:
- `sweep.sbatch`: the array job (`#SBATCH --array=0-(N-1)`). Task i runs
  `spt sweep <same spec> --only-index i --db <out>/stores/task-i.db`, each task into its own store
  file, so no two nodes ever write the same SQLite file. If the main store exists, the task first
  imports it (idempotent) so a parent run (`--from`) and the datasets are there.
- `gather.sbatch`: `spt import`s every task store into the main store; runnable with sbatch or bash.
- `submit.sh`: submits the array, then the gather job with `--dependency=afterany:<array job>` (after
  *any* end, so configurations that failed are gathered too; their failures are recorded rows).
- `sweep.json`: the spec, its id and the plan.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spt.errors import SptError
from spt.sweep.plan import SweepSpec, config_label, plan_sweep, spec_to_args, sweep_id, sweep_tag

_TIME_RE = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")


@dataclass
class SlurmOptions:
    """Resources and paths of the array job."""

    out_dir: Path
    main_db: Path
    partition: str | None = None
    gpus_per_task: int = 1
    cpus_per_task: int | None = None
    time: str | None = None
    mem: str | None = None
    accelerate: bool = False
    spt_command: str = "spt"
    setup: list[str] = field(default_factory=list)  # shell lines run first (module load, venv activate)
    job_name: str | None = None

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir).expanduser().absolute()
        self.main_db = Path(self.main_db).expanduser().absolute()
        if self.gpus_per_task < 0:
            raise SptError(f"--gpus-per-task must be 0 or more, not {self.gpus_per_task}")
        if self.cpus_per_task is not None and self.cpus_per_task < 1:
            raise SptError(f"--cpus-per-task must be at least 1, not {self.cpus_per_task}")
        if self.time is not None and not _TIME_RE.match(self.time):
            raise SptError(f"--time {self.time!r} is not a Slurm time; use MINUTES, HH:MM:SS or D-HH:MM:SS")
        if self.accelerate and self.gpus_per_task < 1:
            raise SptError("--accelerate launches one process per GPU; give --gpus-per-task 1 or more")

    @property
    def store_dir(self) -> Path:
        return self.out_dir / "stores"

    @property
    def log_dir(self) -> Path:
        return self.out_dir / "logs"


def task_db(opts: SlurmOptions, index: int | str) -> Path:
    return opts.store_dir / f"task-{index}.db"


def _q(p: Any) -> str:
    return shlex.quote(str(p))


def _spt(opts: SlurmOptions) -> str:
    return opts.spt_command


def task_command(spec: SweepSpec, opts: SlurmOptions, index: str = "${SLURM_ARRAY_TASK_ID}") -> str:
    """The command one array task runs (index is a shell expression by default)."""
    args = " ".join(_q(a) for a in spec_to_args(spec))
    db = f"{_q(opts.store_dir)}/task-{index}.db"
    tail = f"sweep {args} --executor local --only-index {index} --no-frontier --db {db}"
    if opts.accelerate:
        n = opts.gpus_per_task
        multi = " --multi_gpu" if n > 1 else ""
        return f"accelerate launch --num_processes {n}{multi} -m spt.cli {tail}"
    return f"{_spt(opts)} {tail}"


def _header(opts: SlurmOptions, name: str, log: str, extra: list[str]) -> list[str]:
    lines = ["#!/bin/bash", f"#SBATCH --job-name={name}", *extra, f"#SBATCH --output={opts.log_dir}/{log}"]
    if opts.partition:
        lines.append(f"#SBATCH --partition={opts.partition}")
    if opts.time:
        lines.append(f"#SBATCH --time={opts.time}")
    return lines


def slurm_script(spec: SweepSpec, opts: SlurmOptions) -> str:
    """The array job script: one task per configuration, each writing its own store file."""
    spec.validate()
    configs = plan_sweep(spec)
    n = len(configs)
    name = opts.job_name or f"spt-{sweep_tag(spec).removeprefix('sweep:')[:8]}"
    extra = [f"#SBATCH --array=0-{n - 1}", "#SBATCH --ntasks=1"]
    if opts.gpus_per_task:
        extra.append(f"#SBATCH --gpus-per-task={opts.gpus_per_task}")
    if opts.cpus_per_task:
        extra.append(f"#SBATCH --cpus-per-task={opts.cpus_per_task}")
    if opts.mem:
        extra.append(f"#SBATCH --mem={opts.mem}")
    lines = _header(opts, name, "task-%a.out", extra)
    lines += [
        f"# spt sweep {sweep_id(spec)} ({sweep_tag(spec)}): {n} configurations, one array task each",
        *[f"#   {c['index']}: {config_label(c)}" for c in configs],
        "# Each task writes its own store; gather.sbatch imports them into the main store.",
        "set -euo pipefail",
        *opts.setup,
        ': "${SLURM_ARRAY_TASK_ID:?run this script with sbatch (or set SLURM_ARRAY_TASK_ID)}"',
        f"mkdir -p {_q(opts.store_dir)} {_q(opts.log_dir)}",
        f"TASK_DB={_q(opts.store_dir)}/task-${{SLURM_ARRAY_TASK_ID}}.db",
        "# Start from the main store's content (parent runs, datasets); importing is idempotent.",
        f"if [ -s {_q(opts.main_db)} ]; then",
        f"  {_spt(opts)} import {_q(opts.main_db)} --db \"$TASK_DB\" > /dev/null",
        "fi",
        task_command(spec, opts),
        "",
    ]
    return "\n".join(lines)


def gather_script(spec: SweepSpec, opts: SlurmOptions) -> str:
    """The gather step: import every task store into the main store (runs under sbatch or bash).

    `spt sweep --gather DIR` does, in one process, what `spt import DIR/stores/task-$i.db` does for each i,
    and reports the stores that are missing (tasks that never started) and the sweep's runs by status.
    """
    n = len(plan_sweep(spec))
    name = (opts.job_name or f"spt-{sweep_tag(spec).removeprefix('sweep:')[:8]}") + "-gather"
    extra = ["#SBATCH --ntasks=1", "#SBATCH --cpus-per-task=1"]
    lines = _header(opts, name, "gather.out", extra)
    lines += [
        f"# Gather the {n} task stores of sweep {sweep_tag(spec)} into {opts.main_db}:",
        f"# `spt import` of {opts.store_dir}/task-0.db ... task-{n - 1}.db, in one process.",
        "# Re-running is safe: import skips rows the main store already holds.",
        "set -euo pipefail",
        *opts.setup,
        f"{_spt(opts)} sweep --gather {_q(opts.out_dir)} --db {_q(opts.main_db)}",
        "",
    ]
    return "\n".join(lines)


def submit_script(spec: SweepSpec, opts: SlurmOptions) -> str:
    return "\n".join([
        "#!/bin/bash",
        f"# Submit sweep {sweep_tag(spec)}: the array job, then the gather job after it ends.",
        "set -euo pipefail",
        f"cd {_q(opts.out_dir)}",
        "mkdir -p logs stores",
        "jid=$(sbatch --parsable sweep.sbatch)",
        "jid=${jid%%;*}",
        "sbatch --dependency=afterany:${jid} gather.sbatch",
        "echo \"submitted array job ${jid} and its gather job\"",
        "",
    ])


def slurm_files(spec: SweepSpec, opts: SlurmOptions) -> dict[str, str]:
    """File name -> content of everything `write_slurm` writes."""
    plan = plan_sweep(spec)
    meta = {"sweep_id": sweep_id(spec), "tag": sweep_tag(spec), "main_db": str(opts.main_db),
            "task_dbs": [str(task_db(opts, c["index"])) for c in plan], "spec": spec.to_dict(), "plan": plan}
    return {
        "sweep.sbatch": slurm_script(spec, opts),
        "gather.sbatch": gather_script(spec, opts),
        "submit.sh": submit_script(spec, opts),
        "sweep.json": json.dumps(meta, indent=2, default=str) + "\n",
    }


def write_slurm(spec: SweepSpec, opts: SlurmOptions) -> dict[str, Any]:
    """Write the scripts; returns their paths and how to submit. Needs no Slurm on this machine."""
    files = slurm_files(spec, opts)
    try:
        opts.out_dir.mkdir(parents=True, exist_ok=True)
        opts.store_dir.mkdir(exist_ok=True)
        opts.log_dir.mkdir(exist_ok=True)
        paths = {}
        for name, content in files.items():
            p = opts.out_dir / name
            p.write_text(content)
            if name.endswith((".sh", ".sbatch")):
                p.chmod(0o755)
            paths[name] = str(p)
    except OSError as e:
        raise SptError(f"cannot write the Slurm scripts to {opts.out_dir} ({e.strerror}); pass --out-dir") from None
    return {
        "sweep_id": sweep_id(spec), "tag": sweep_tag(spec), "n_tasks": len(plan_sweep(spec)),
        "out_dir": str(opts.out_dir), "files": paths, "main_db": str(opts.main_db),
        "submit": f"bash {_q(opts.out_dir / 'submit.sh')}",
        "manual": [f"sbatch {_q(opts.out_dir / 'sweep.sbatch')}",
                   f"sbatch --dependency=afterany:<array job id> {_q(opts.out_dir / 'gather.sbatch')}"],
    }


def task_dbs_of(out_dir: str | Path) -> list[Path]:
    """The task store paths of the Slurm sweep written to `out_dir` (from its sweep.json)."""
    meta_path = Path(out_dir).expanduser() / "sweep.json"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise SptError(f"{meta_path} does not exist; pass the --out-dir of a sweep written with "
                       "--executor slurm") from None
    except ValueError as e:
        raise SptError(f"{meta_path} is not valid JSON ({e}); rewrite it with spt sweep --executor slurm") from None
    return [Path(p) for p in meta.get("task_dbs", [])]


def gather(main_db: str | Path, task_dbs: list[str | Path], on_conflict: str = "ignore") -> dict[str, Any]:
    """Import every existing task store into the main store; missing ones are reported, not fatal."""
    from spt.store.merge import import_store

    imported, missing = [], []
    inserted = 0
    for f in task_dbs:
        p = Path(f)
        if not p.exists() or p.stat().st_size == 0:
            missing.append(str(p))
            continue
        log = import_store(main_db, p, on_conflict=on_conflict)
        n = sum(c["inserted"] for c in log["counts"].values())
        inserted += n
        imported.append({"source": str(p), "inserted": n,
                         "runs": log["counts"].get("run", {}).get("inserted", 0)})
    return {"main_db": str(main_db), "imported": imported, "missing": missing, "rows_inserted": inserted}
