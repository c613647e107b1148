"""Running a sweep on a Slurm cluster: one array task per configuration, then a gather step.

Files written to the output directory:
- `sweep.sbatch`: the array job (`#SBATCH --array=0-(N-1)`, `--requeue`). Task i runs
  `spt sweep <same spec> --only-index i --db <out>/stores/task-i.db` (under `srun` when it runs under
  Slurm, so that `scancel --signal=TERM <job>_<i>` reaches spt), each task into its own store file, so
  no two nodes ever write the same SQLite file (DESIGN §9). If the main store exists, the task first
  imports it (idempotent) so a parent run (`--from`) and the datasets are there. With N > 1 GPUs the
  task's finetune runs under `accelerate launch --num_processes N`, then evaluate and judge in one
  process. A task that spt reports interrupted (exit 143 after SIGTERM, or 75; a checkpoint written) or
  that a signal ended requeues itself (`scontrol requeue`, at most `max_requeues` times) and resumes from
  its checkpoint.
- `gather.sbatch`: `spt import`s every task store into the main store; runnable with sbatch or bash.
- `submit.sh`: submits the array, then the gather job with `--dependency=afterany:<array job>`.
  `afterany`, not `afterok`: a configuration that fails (bad data, a crash) ends its array task with a
  non-zero exit, and with `afterok` Slurm would never start the gather (DependencyNeverSatisfied), so
  the configurations that succeeded would not reach the main store either. The failure itself is a
  recorded run row (status `failed`, with its error), gathered like the rest.
- `sweep.json`: the spec, its id and the plan; `slurm.json`: the jobs submitted (`submit_sweep`).

`sweep_status` reads each task's state from Slurm (`squeue`, `scontrol show job`, `sacct` when
accounting is on) and from the task and main stores; `submit_sweep(indices=...)` resubmits a subset
(what `spt sweep --retry-failed` does).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spt.errors import SptError
from spt.sweep.plan import SweepSpec, config_label, plan_sweep, spec_to_args, sweep_id, sweep_tag

_TIME_RE = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.,-]+$")
_MEM_RE = re.compile(r"^\d+(\.\d+)?[KMGT]?B?$", re.IGNORECASE)
_GRES_RE = re.compile(r"^[A-Za-z0-9_]+(:[A-Za-z0-9_.-]+)?(:\d+)?$")
INTERRUPTED_EXIT = 75  # EX_TEMPFAIL: spt sweep stopped a run at a checkpoint (SIGTERM); requeue and resume
# #SBATCH options spt writes itself; an extra-lines file may not set them
_RESERVED = ("--array", "-a", "--output", "-o", "--error", "-e", "--dependency", "-d", "--job-name", "-J",
             "--open-mode", "--requeue", "--no-requeue")
# the environment a task needs from the submitting shell (also exported by sbatch's default --export=ALL)
ENV_VARS = ("SPT_HOME", "SPT_CACHE", "HF_HOME")


def default_spt_command() -> str:
    """This interpreter's spt: array tasks run the same installation as the submitting command."""
    return f"{shlex.quote(sys.executable)} -m spt.cli"


@dataclass
class SlurmOptions:
    """Resources and paths of the array job (validated on construction: SptError before anything is written)."""

    out_dir: Path
    main_db: Path
    partition: str | None = None
    gpus_per_task: int = 0
    cpus_per_task: int | None = None
    time: str | None = None
    mem: str | None = None
    accelerate: bool = False
    spt_command: str | None = None  # default: this interpreter's `python -m spt.cli`
    setup: list[str] = field(default_factory=list)  # shell lines run first (module load, venv activate)
    job_name: str | None = None
    gres: str | None = None  # e.g. gpu:4 (or gpu:a100:4)
    account: str | None = None
    qos: str | None = None
    sbatch_extra: Path | None = None  # a file of extra `#SBATCH --...` lines
    max_requeues: int = 3
    env: dict[str, str] = field(default_factory=dict)  # exported in the scripts (`${VAR:-value}`)
    extra_lines: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir).expanduser().absolute()
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise SptError(f"--out-dir {self.out_dir} is a file; the sweep writes its scripts and logs into a folder, "
                           "pass a folder (new or existing)")
        self.main_db = Path(self.main_db).expanduser().absolute()
        if self.spt_command is None:
            self.spt_command = default_spt_command()
        for flag, v in (("--partition", self.partition), ("--account", self.account), ("--qos", self.qos)):
            if v is not None and (not _NAME_RE.match(v) or len(v) > 256):
                shown = v if len(v) <= 60 else v[:57] + "..."
                raise SptError(f"{flag} {shown!r} is not a Slurm {flag[2:]} name (letters, digits, _ . , -; at most "
                               "256 characters)")
        if self.job_name is not None and not _NAME_RE.match(self.job_name):
            raise SptError(f"job name {self.job_name!r} may hold only letters, digits, _ . , -")
        if self.mem is not None and not _MEM_RE.match(self.mem.strip()):
            raise SptError(f"`mem` {self.mem!r} is not a Slurm memory size; use e.g. 64G or 16000M")
        if self.gpus_per_task < 0:
            raise SptError(f"`gpus_per_task` must be 0 or more, not {self.gpus_per_task}")
        if self.cpus_per_task is not None and self.cpus_per_task < 1:
            raise SptError(f"`cpus_per_task` must be at least 1, not {self.cpus_per_task}")
        if self.time is not None and not _TIME_RE.match(self.time):
            raise SptError(f"`time` {self.time!r} is not a Slurm time; use MINUTES, HH:MM:SS or D-HH:MM:SS")
        if self.gres is not None:
            if len(self.gres) > 256:
                raise SptError(f"`gres` {self.gres[:40]!r}... is {len(self.gres)} characters; a Slurm GRES list such "
                               "as gpu:4 or gpu:a100:2 is at most 256")
            parts = self.gres.split(",")
            if not all(_GRES_RE.match(p) for p in parts):
                raise SptError(f"`gres` {self.gres!r} is not a Slurm GRES list; use e.g. gpu:4 or gpu:a100:2")
            if self.gpus_per_task and self.gres_gpus:
                raise SptError("give the GPUs once: `gres` gpu:N or `gpus_per_task` N, not both")
        if any(any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in line) for line in self.setup):
            raise SptError("`setup` takes one shell line per flag; repeat `setup` for more lines")
        cmd = str(self.spt_command)
        if not cmd.strip() or any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in cmd):
            raise SptError(f"`spt_command` {self.spt_command!r} must be one non-empty command line")
        if len(cmd) > 4096 or any(len(line) > 4096 for line in self.setup):
            raise SptError("`spt_command` and `setup` lines must be at most 4096 characters each")
        if self.accelerate and self.n_gpus < 1:
            raise SptError("`accelerate` launches one process per GPU; give `gres` gpu:N or `gpus_per_task` N")
        if self.max_requeues < 0:
            raise SptError(f"max requeues must be 0 or more, not {self.max_requeues}")
        if self.sbatch_extra is not None:
            self.extra_lines = read_sbatch_extra(self.sbatch_extra)

    @property
    def gres_gpus(self) -> int:
        """GPUs asked for by --gres (gpu, gpu:N or gpu:TYPE:N)."""
        for part in (self.gres or "").split(","):
            bits = part.split(":")
            if bits[0] == "gpu":
                return int(bits[-1]) if len(bits) > 1 and bits[-1].isdigit() else 1
        return 0

    @property
    def n_gpus(self) -> int:
        return self.gres_gpus or self.gpus_per_task

    @property
    def store_dir(self) -> Path:
        return self.out_dir / "stores"

    @property
    def log_dir(self) -> Path:
        return self.out_dir / "logs"


def read_sbatch_extra(path: str | Path) -> list[str]:
    """The `#SBATCH` lines of a file (blank lines skipped); SptError for anything that would break the script."""
    p = Path(path).expanduser()
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise SptError(f"`sbatch_extra` {p} does not exist; give a file of `#SBATCH --option=value` lines") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SptError(f"`sbatch_extra` {p} cannot be read ({e}); give a text file of #SBATCH lines") from None
    lines = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        m = re.match(r"^#SBATCH\s+(-{1,2}[A-Za-z][\w-]*)(=\S+|\s+\S+)?$", line)
        if not m or any(c in line for c in "`$;|&<>\\\"'"):
            raise SptError(f"`sbatch_extra` {p} line {n} {line[:60]!r} is not one `#SBATCH --option=value` line")
        if m.group(1) in _RESERVED:
            raise SptError(f"`sbatch_extra` {p} line {n} sets {m.group(1)}, which spt writes itself; remove it")
        lines.append(line)
    return lines


def task_db(opts: SlurmOptions, index: int | str) -> Path:
    return opts.store_dir / f"task-{index}.db"


def _q(p: Any) -> str:
    return shlex.quote(str(p))


def _spt(opts: SlurmOptions) -> str:
    return str(opts.spt_command)


def _launcher(opts: SlurmOptions) -> str:
    n = opts.n_gpus
    multi = " --multi_gpu" if n > 1 else ""
    venv_accelerate = Path(sys.executable).parent / "accelerate"
    if opts.spt_command == default_spt_command() and venv_accelerate.exists():
        return f"{_q(venv_accelerate)} launch --num_processes {n}{multi}"  # this installation's accelerate
    return f"accelerate launch --num_processes {n}{multi}"


def task_command(spec: SweepSpec, opts: SlurmOptions, index: str = "${SLURM_ARRAY_TASK_ID}") -> str:
    """The command one array task runs for its configuration (index is a shell expression by default)."""
    args = " ".join(_q(a) for a in spec_to_args(spec))
    db = f"{_q(opts.store_dir)}/task-{index}.db"
    return f"{_spt(opts)} sweep {args} --executor local --only-index {index} --no-frontier --db {db}"


def multi_gpu(opts: SlurmOptions) -> bool:
    return opts.accelerate or opts.n_gpus > 1


def finetune_command(spec: SweepSpec, opts: SlurmOptions, index: str = "${SLURM_ARRAY_TASK_ID}") -> str:
    """Multi-GPU: the task's finetune alone, under `accelerate launch` with one process per GPU."""
    args = " ".join(_q(a) for a in spec_to_args(spec))
    db = f"{_q(opts.store_dir)}/task-{index}.db"
    return (f"{_launcher(opts)} -m spt.cli sweep {args} --executor local --only-index {index} --finetune-only "
            f"--no-frontier --db {db}")


def _directives(**values: Any) -> list[str]:
    """`#SBATCH --name=value` lines for the values given (`gpus_per_task` -> `--gpus-per-task`), in order."""
    return [f"#SBATCH --{k.replace('_', '-')}={v}" for k, v in values.items() if v]


def _header(opts: SlurmOptions, name: str, log: str, extra: list[str]) -> list[str]:
    lines = ["#!/bin/bash", f"#SBATCH --job-name={name}", *extra]
    lines += _directives(partition=opts.partition, time=opts.time, account=opts.account, qos=opts.qos)
    lines += opts.extra_lines
    lines.append(f"#SBATCH --output={opts.log_dir}/{log}")
    return lines


def _env_lines(opts: SlurmOptions) -> list[str]:
    return [f"export {k}=\"${{{k}:-{v}}}\"" if re.fullmatch(r"[^\"$`\\]*", v)
            else f"export {k}=${{{k}:-{_q(v)}}}" for k, v in sorted(opts.env.items())]


def slurm_script(spec: SweepSpec, opts: SlurmOptions) -> str:
    """The array job script: one task per configuration, each writing its own store file."""
    spec.validate()
    configs = plan_sweep(spec)
    n = len(configs)
    name = opts.job_name or f"spt-{sweep_tag(spec).removeprefix('sweep:')[:8]}"
    # --signal: SIGTERM to the job step (spt) 120 s before the time limit, so training checkpoints, marks the
    # run interrupted and the task requeues itself instead of being killed mid-step (an extra line overrides)
    extra = [f"#SBATCH --array=0-{n - 1}", "#SBATCH --ntasks=1", "#SBATCH --requeue", "#SBATCH --open-mode=append",
             "#SBATCH --export=ALL", "#SBATCH --signal=TERM@120"]
    extra += _directives(gres=opts.gres, gpus_per_task=opts.gpus_per_task, cpus_per_task=opts.cpus_per_task,
                         mem=opts.mem)
    lines = _header(opts, name, "task-%a.out", extra)
    lines += [
        f"# spt sweep {sweep_id(spec)} ({sweep_tag(spec)}): {n} configurations, one array task each",
        *[f"#   {c['index']}: {config_label(c)}" for c in configs],
        "# Each task writes its own store; gather.sbatch imports them into the main store.",
        "set -uo pipefail",
        *opts.setup,
        *_env_lines(opts),
        ': "${SLURM_ARRAY_TASK_ID:?run this script with sbatch (or set SLURM_ARRAY_TASK_ID)}"',
        f"mkdir -p {_q(opts.store_dir)} {_q(opts.log_dir)}",
        f"TASK_DB={_q(opts.store_dir)}/task-${{SLURM_ARRAY_TASK_ID}}.db",
        "echo \"spt: task ${SLURM_ARRAY_TASK_ID} (job ${SLURM_JOB_ID:-none}, restart ${SLURM_RESTART_COUNT:-0}) "
        "on $(hostname) at $(date -u +%FT%TZ)\"",
        "# Start from the main store's content (parent runs, datasets); importing is idempotent.",
        f"if [ -s {_q(opts.main_db)} ]; then",
        f"  {_spt(opts)} import {_q(opts.main_db)} --db \"$TASK_DB\" > /dev/null || exit $?",
        "fi",
        "# Under Slurm the work runs as a job step, which is what `scancel --signal=TERM` signals.",
        "RUN=",
        'if [ -n "${SLURM_JOB_ID:-}" ] && command -v srun > /dev/null; then RUN="srun --ntasks=1"; fi',
    ]
    if multi_gpu(opts):
        lines += [
            f"# {opts.n_gpus} GPUs: finetune under accelerate launch (one process per GPU), then evaluate and "
            "judge that run in one process.",
            f"$RUN {finetune_command(spec, opts)}",
            "rc=$?",
            f"if [ $rc -eq 0 ]; then $RUN {task_command(spec, opts)} --evaluate-only; rc=$?; fi",
        ]
    else:
        lines += [f"$RUN {task_command(spec, opts)}", "rc=$?"]
    lines += [
        "# Interrupted (exit 128+signal, 143 for SIGTERM, or 75: spt saved a checkpoint and marked the run "
        "interrupted) or killed by a signal: requeue this task; it resumes from its checkpoint.",
        f'if [ -n "${{SLURM_JOB_ID:-}}" ] && {{ [ $rc -eq {INTERRUPTED_EXIT} ] || [ $rc -ge 128 ]; }} '
        f'&& [ "${{SLURM_RESTART_COUNT:-0}}" -lt {opts.max_requeues} ]; then',
        '  echo "spt: task ${SLURM_ARRAY_TASK_ID} interrupted (exit $rc); requeueing it" >&2',
        '  scontrol requeue "${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}_${SLURM_ARRAY_TASK_ID}" && sleep 60',
        "fi",
        "exit $rc",
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
    extra = ["#SBATCH --ntasks=1", "#SBATCH --cpus-per-task=1", "#SBATCH --open-mode=append",
             "#SBATCH --export=ALL"]
    lines = _header(opts, name, "gather.out", extra)
    lines += [
        f"# Gather the {n} task stores of sweep {sweep_tag(spec)} into {opts.main_db}:",
        f"# `spt import` of {opts.store_dir}/task-0.db ... task-{n - 1}.db, in one process.",
        "# Re-running is safe: import skips rows the main store already holds.",
        "set -euo pipefail",
        *opts.setup,
        *_env_lines(opts),
        f"{_spt(opts)} sweep --gather {_q(opts.out_dir)} --db {_q(opts.main_db)}",
        "",
    ]
    return "\n".join(lines)


def submit_script(spec: SweepSpec, opts: SlurmOptions) -> str:
    return "\n".join([
        "#!/bin/bash",
        f"# Submit sweep {sweep_tag(spec)}: the array job, then the gather job after it ends.",
        "# afterany (not afterok): a failed configuration ends its task non-zero, and the gather must still",
        "# import the others (the failure is a recorded run row, gathered too).",
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
        raise SptError(f"cannot write the Slurm scripts to {opts.out_dir} ({e.strerror}); pass `out_dir`") from None
    return {
        "sweep_id": sweep_id(spec), "tag": sweep_tag(spec), "n_tasks": len(plan_sweep(spec)),
        "out_dir": str(opts.out_dir), "files": paths, "main_db": str(opts.main_db),
        "submit": f"bash {_q(opts.out_dir / 'submit.sh')}",
        "manual": [f"sbatch {_q(opts.out_dir / 'sweep.sbatch')}",
                   f"sbatch --dependency=afterany:<array job id> {_q(opts.out_dir / 'gather.sbatch')}"],
    }


def task_dbs_of(out_dir: str | Path) -> list[Path]:
    """The task store paths of the Slurm sweep written to `out_dir` (from its sweep.json)."""
    folder = Path(out_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise SptError(f"{folder} is a file; pass the `out_dir` folder of a sweep written with `executor` slurm")
    meta_path = folder / "sweep.json"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise SptError(f"{meta_path} does not exist; pass the `out_dir` of a sweep written with "
                       "`executor` slurm") from None
    except ValueError as e:
        raise SptError(f"{meta_path} is not valid JSON ({e}); rewrite it with spt sweep `executor` slurm") from None
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


# ---------------------------------------------------------------- submission, status, retry

FAILED_STATES = ("FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "CANCELLED",
                 "PREEMPTED")
ACTIVE_STATES = ("PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
                 "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED")


def _meta(out_dir: str | Path) -> dict[str, Any]:
    folder = Path(out_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise SptError(f"{folder} is a file; pass the `out_dir` folder of a sweep written with `executor` slurm")
    meta_path = folder / "sweep.json"
    try:
        return json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise SptError(f"{meta_path} does not exist; pass the `out_dir` of a sweep written with "
                       "`executor` slurm") from None
    except ValueError as e:
        raise SptError(f"{meta_path} is not valid JSON ({e}); rewrite it with spt sweep `executor` slurm") from None


def submissions(out_dir: str | Path) -> list[dict[str, Any]]:
    """The jobs `submit_sweep` submitted for this sweep, oldest first (from slurm.json)."""
    p = Path(out_dir).expanduser() / "slurm.json"
    if not p.exists():
        return []
    try:
        return list(json.loads(p.read_text()).get("submissions", []))
    except ValueError:
        return []


def _slurm(args: list[str], what: str) -> str:
    exe = shutil.which(args[0])
    if exe is None:
        raise SptError(f"{args[0]} is not on the PATH; run this on a Slurm login node, or submit with the "
                       "written submit.sh there")
    try:
        p = subprocess.run([exe, *args[1:]], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise SptError(f"{what}: {args[0]} did not answer within 60 s; is slurmctld up?") from None
    if p.returncode != 0:
        msg = " ".join((p.stderr or p.stdout).split())[:300]
        raise SptError(f"{what}: {args[0]} failed ({msg}); the scripts are written, submit them by hand later")
    return p.stdout


def submit_sweep(out_dir: str | Path, indices: list[int] | None = None) -> dict[str, Any]:
    """sbatch the array (all tasks, or only `indices`), then the gather job after it (afterany; see above)."""
    out = Path(out_dir).expanduser().absolute()
    meta = _meta(out)
    n = len(meta.get("plan", []))
    for d in ("stores", "logs"):
        (out / d).mkdir(parents=True, exist_ok=True)
    args = ["sbatch", "--parsable"]
    if indices is not None:
        if not indices:
            raise SptError("no array task to submit")
        bad = [i for i in indices if not 0 <= i < n]
        if bad:
            raise SptError(f"array task {bad[0]} is out of range: this sweep has {n} tasks (0-{n - 1})")
        args.append("--array=" + ",".join(str(i) for i in sorted(set(indices))))
    array_job = _slurm([*args, str(out / "sweep.sbatch")], "submitting the array job").strip().split(";")[0]
    gather_job = _slurm(["sbatch", "--parsable", f"--dependency=afterany:{array_job}", str(out / "gather.sbatch")],
                        "submitting the gather job").strip().split(";")[0]
    from spt.store.models import utcnow

    sub = {"array_job": array_job, "gather_job": gather_job,
           "indices": sorted(set(indices)) if indices is not None else list(range(n)), "submitted_at": utcnow()}
    subs = [*submissions(out), sub]
    (out / "slurm.json").write_text(json.dumps({"submissions": subs}, indent=2) + "\n")
    return {"tag": meta.get("tag"), "out_dir": str(out), **sub}


def _expand(ids: str) -> list[int]:
    """`3`, `0-3`, `1,3`, `[0-2,5]%2` -> the task indexes."""
    ids = ids.strip("[]").split("%")[0].strip("[]")
    out: list[int] = []
    for part in ids.split(","):
        a, _, b = part.partition("-")
        if a.isdigit() and (not b or b.isdigit()):
            out += list(range(int(a), int(b or a) + 1))
    return out


def _slurm_states(job_ids: list[str]) -> dict[tuple[str, int], dict[str, Any]]:
    """(array job, task index) -> {"state", "reason", "restarts", "exit_code"}, from sacct, squeue, scontrol."""
    found: dict[tuple[str, int], dict[str, Any]] = {}
    if not job_ids:
        return found

    def run(args: list[str]) -> str:
        exe = shutil.which(args[0])
        if exe is None:
            return ""
        try:
            p = subprocess.run([exe, *args[1:]], capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            return ""
        return p.stdout if p.returncode == 0 else ""

    # sacct (only with accounting storage): finished tasks, even long after squeue forgot them
    for line in run(["sacct", "-n", "-P", "-X", "-j", ",".join(job_ids), "-o", "JobID,State,ExitCode"]).splitlines():
        jid, _, rest = line.partition("|")
        state, _, code = rest.partition("|")
        aj, _, idx = jid.partition("_")
        for i in _expand(idx) if idx else [0]:
            found[(aj, i)] = {"state": state.split()[0] if state else "", "exit_code": code, "source": "sacct"}
    # squeue: the live state of every task (finished ones while slurmctld keeps them, MinJobAge)
    for line in run(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(job_ids), "-o", "%i|%T|%r"]).splitlines():
        parts = line.split("|")
        if len(parts) != 3:
            continue
        aj, _, idx = parts[0].partition("_")
        for i in _expand(idx) if idx else [0]:
            d = found.setdefault((aj, i), {})
            d.update(state=parts[1], reason=parts[2] if parts[2] not in ("None", "") else None, source="squeue")
    # scontrol: restarts (requeues) and exit codes
    for line in [ln for j in job_ids for ln in run(["scontrol", "show", "job", "-o", j]).splitlines()]:
        kv = dict(m.groups() for m in re.finditer(r"(\w+)=(\S*)", line))
        aj, idx = kv.get("ArrayJobId") or kv.get("JobId"), kv.get("ArrayTaskId") or "0"
        if not aj:
            continue
        for i in _expand(idx):
            d = found.setdefault((aj, i), {"state": kv.get("JobState"), "source": "scontrol"})
            d.setdefault("state", kv.get("JobState"))
            d["restarts"] = int(kv.get("Restarts", "0") or 0)
            d.setdefault("exit_code", kv.get("ExitCode"))
    return found


def _store_runs(db: Path, tag: str, in_flight: int | None = None) -> dict[int, dict[str, Any]]:
    """index -> the sweep's run in a store file, read-only (the task may be writing it).

    A run is tagged when its finetune returns; `in_flight` (a task store's index) also takes the untagged
    run that is training right now (running, or interrupted at a checkpoint).
    """
    from spt.store.queries import tagged_run_rows

    rows = tagged_run_rows(db, tag, with_untagged_in_flight=in_flight is not None)
    out: dict[int, dict[str, Any]] = {}
    for rid, status, error, idx, errors, updated, step in rows:
        if idx is None:
            if in_flight is None:
                continue
            idx = in_flight
        errs = json.loads(errors) if errors else []
        if errs and status == "done":
            status, error = "failed", f"{errs[-1].get('stage')}: {errs[-1].get('error')}"
        out[int(idx)] = {"run_id": rid, "run_status": status, "error": error, "checkpoint_step": step,
                         "updated_at": updated}
    return out


def sweep_status(out_dir: str | Path, main_db: str | Path | None = None) -> dict[str, Any]:
    """Every array task's Slurm state (latest submission) and its run's status in the task and main stores."""
    out = Path(out_dir).expanduser().absolute()
    meta = _meta(out)
    tag = meta.get("tag", "")
    plan = meta.get("plan", [])
    subs = submissions(out)
    latest: dict[int, dict[str, Any]] = {}
    for sub in subs:
        for i in sub.get("indices", []):
            latest[int(i)] = sub
    states = _slurm_states(sorted({s["array_job"] for s in subs} | {s["gather_job"] for s in subs}))
    main = Path(main_db or meta.get("main_db", "")).expanduser()
    main_runs = _store_runs(main, tag) if str(main) else {}
    tasks = []
    for c in plan:
        i = int(c["index"])
        sub = latest.get(i)
        sl = states.get((sub["array_job"], i), {}) if sub else {}
        task_runs = _store_runs(Path(meta.get("task_dbs", [])[i]) if i < len(meta.get("task_dbs", [])) else
                                out / "stores" / f"task-{i}.db", tag, in_flight=i)
        run = task_runs.get(i) or main_runs.get(i) or {}
        tasks.append({
            "index": i, "label": config_label(c), "job": f"{sub['array_job']}_{i}" if sub else None,
            "slurm_state": sl.get("state") or ("SUBMITTED" if sub else "NOT_SUBMITTED"),
            "reason": sl.get("reason"), "restarts": sl.get("restarts", 0), "exit_code": sl.get("exit_code"),
            "run_id": run.get("run_id"), "run_status": run.get("run_status"), "error": run.get("error"),
            "checkpoint_step": run.get("checkpoint_step"), "gathered": i in main_runs,
        })
    gather_jobs = [{"job": s["gather_job"], "state": states.get((s["gather_job"], 0), {}).get("state")
                    or _job_state(states, s["gather_job"])} for s in subs]
    return {"tag": tag, "out_dir": str(out), "main_db": str(main), "submissions": subs, "tasks": tasks,
            "gather": gather_jobs, "failed": failed_indices(tasks)}


def _job_state(states: dict[tuple[str, int], dict[str, Any]], job: str) -> str | None:
    for (aj, _), d in states.items():
        if aj == job:
            return d.get("state")
    return None


def failed_indices(tasks: list[dict[str, Any]]) -> list[int]:
    """Tasks whose run failed, or whose Slurm job ended badly without a done run."""
    out = []
    for t in tasks:
        state = (t.get("slurm_state") or "").split()[0]
        if t.get("run_status") == "failed" or (state in FAILED_STATES and t.get("run_status") != "done"):
            out.append(t["index"])
    return out
