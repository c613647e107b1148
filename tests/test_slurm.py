"""`spt sweep --executor slurm` for real: options validated before anything is written, the generated
scripts (multi-GPU under accelerate launch), and — marked `slurm` — sweeps submitted with sbatch to a
one-node Slurm cluster on loopback (`tests/slurm_cluster.py`): a 2 defense × 2 λ sweep on tiny-random,
gathered and read by `spt frontier`; a task that fails on missing data, gathered anyway (afterany) and
resubmitted alone with `--retry-failed`; a task preempted with `scancel --signal=TERM`, requeued, resumed
from its checkpoint. `spt sweep --status` is read during and after each run.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from spt.cli import app
from spt.errors import SptError
from spt.store import open_store
from spt.store.models import Checkpoint, Run
from spt.sweep import SweepSpec
from spt.sweep.plan import spec_to_args
from spt.sweep.slurm import SlurmOptions, slurm_script

TESTS = Path(__file__).resolve().parent
runner = CliRunner()


# ---------------------------------------------------------------- options and scripts (no cluster)

def _spec():
    return SweepSpec(model="tiny-random", defenses=["anchor"], lams=[0.1, 0.3], max_steps=2)


@pytest.mark.parametrize("flags,message", [
    (["--partition", "gpu;rm -rf /"], "--partition 'gpu;rm -rf /' is not a Slurm partition name"),
    (["--account", "a b"], "--account 'a b' is not a Slurm account name"),
    (["--qos", "high\nx"], "is not a Slurm qos name"),
    (["--mem", "lots"], "--mem 'lots' is not a Slurm memory size"),
    (["--time", "2 hours"], "--time '2 hours' is not a Slurm time"),
    (["--gres", "gpu:two words"], "is not a Slurm GRES list"),
    (["--gres", "gpu:2", "--gpus-per-task", "2"], "not both"),
    (["--cpus-per-task", "0"], "--cpus-per-task must be at least 1"),
    (["--sbatch-extra", "{DIR}/nope.txt"], "does not exist"),
    (["--sbatch-extra", "{DIR}/bad.txt"], "is not one `#SBATCH --option=value` line"),
    (["--sbatch-extra", "{DIR}/reserved.txt"], "sets --array, which spt writes itself"),
    (["--setup", "a\nb"], "one shell line per flag"),
])
def test_bad_slurm_option_is_one_line_and_writes_nothing(tmp_path, monkeypatch, flags, message):
    (tmp_path / "bad.txt").write_text("#SBATCH --constraint=a100\n#SBATCH --comment=$(reboot)\n")
    (tmp_path / "reserved.txt").write_text("#SBATCH --array=0-99\n")
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    flags = [f.replace("{DIR}", str(tmp_path)) for f in flags]
    r = runner.invoke(app, ["sweep", *spec_to_args(_spec()), "--executor", "slurm", "--submit", *flags,
                            "--db", str(tmp_path / "main.db")])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no scripts, no store


def test_script_has_the_options_slurm_users_expect(tmp_path):
    extra = tmp_path / "extra.sbatch"
    extra.write_text("#SBATCH --constraint=a100\n\n#SBATCH --mail-type=END\n")
    opts = SlurmOptions(out_dir=tmp_path / "out", main_db=tmp_path / "main.db", partition="gpu", time="01:00:00",
                        mem="32G", gres="gpu:1", cpus_per_task=4, account="proj-42", qos="high",
                        sbatch_extra=extra, env={"SPT_HOME": "/scratch/spt home"})
    text = slurm_script(_spec(), opts)
    for line in ("#SBATCH --array=0-1", "#SBATCH --requeue", "#SBATCH --partition=gpu", "#SBATCH --time=01:00:00",
                 "#SBATCH --mem=32G", "#SBATCH --gres=gpu:1", "#SBATCH --cpus-per-task=4",
                 "#SBATCH --account=proj-42", "#SBATCH --qos=high", "#SBATCH --constraint=a100",
                 "#SBATCH --mail-type=END", "#SBATCH --signal=TERM@120"):
        assert line in text.splitlines(), line
    assert "accelerate launch" not in text  # one GPU: one process
    assert "srun --ntasks=1" in text and "scontrol requeue" in text
    assert 'export SPT_HOME="${SPT_HOME:-/scratch/spt home}"' in text
    assert " -m spt.cli sweep " in text  # this interpreter's spt, not whatever `spt` is on the node's PATH


def test_multi_gpu_task_finetunes_under_accelerate_launch(tmp_path):
    """No GPU here: check the generated script. N GPUs: finetune with N processes, then evaluate + judge."""
    opts = SlurmOptions(out_dir=tmp_path / "out", main_db=tmp_path / "main.db", gres="gpu:4")
    text = slurm_script(_spec(), opts)
    lines = text.splitlines()
    launch = [ln for ln in lines if "launch --num_processes 4 --multi_gpu -m spt.cli sweep" in ln]
    assert len(launch) == 1 and "--finetune-only" in launch[0] and launch[0].startswith("$RUN ")
    after = [ln for ln in lines if ln.startswith("if [ $rc -eq 0 ]; then $RUN ") and " sweep " in ln]
    assert len(after) == 1 and "--finetune-only" not in after[0] and "launch" not in after[0]
    assert after[0].endswith("--evaluate-only; rc=$?; fi")
    assert lines.index(launch[0]) < lines.index(after[0])
    assert "#SBATCH --gres=gpu:4" in lines
    with pytest.raises(SptError, match="`accelerate` launches one process per GPU"):
        SlurmOptions(out_dir=tmp_path, main_db=tmp_path / "m.db", accelerate=True)


@pytest.mark.slow
def test_multi_gpu_script_runs_two_processes_then_evaluates(tmp_path):
    """The 2-GPU task script run by bash with CUDA hidden (no GPU here): accelerate's `--multi_gpu` launcher
    (torchrun) starts 2 CPU processes (gloo DDP) for the finetune, then one process finds it done and evaluates
    (as tests/test_train.py::test_accelerate_two_cpu_processes runs the loop)."""
    import os
    import subprocess

    spec = SweepSpec(model="tiny-random", defenses=["anchor"], lams=[0.1], max_steps=2,
                     train={"batch_size": 2, "save_every": 0}, eval_options={"limit": 2, "max_new_tokens": 4})
    opts = SlurmOptions(out_dir=tmp_path / "out", main_db=tmp_path / "main.db", gres="gpu:2")
    script = tmp_path / "cpu.sbatch"
    script.write_text(slurm_script(spec, opts))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(SLURM_ARRAY_TASK_ID="0", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    p = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert p.stdout.count("1 trained now") == 1 and p.stdout.count("0 trained now") == 1, p.stdout  # rank 0 only
    with open_store(tmp_path / "out" / "stores" / "task-0.db") as s, s.session() as ss:
        runs = ss.exec(select(Run)).all()
    assert len(runs) == 1 and runs[0].status == "done" and runs[0].config["sweep"]["index"] == 0
    assert runs[0].config["world_size"] == 2  # trained by two processes


def test_finetune_only_skips_evaluation_and_keeps_the_tag(store, monkeypatch):
    from test_sweep import FAKE, FakeStages

    from spt.sweep import run_sweep

    spec = _spec()
    summary = run_sweep(store, spec, stages=FAKE, only_index=0, finetune_only=True)
    assert summary.configs[0].status == "done" and summary.configs[0].evaluation_ids == []
    missing = run_sweep(store, spec, stages=FAKE, only_index=1, evaluate_only=True).configs[0]
    assert missing.status == "failed" and "no finished finetune of configuration [1]" in missing.error
    FakeStages.trained.clear()
    again = run_sweep(store, spec, stages=FAKE, only_index=0, evaluate_only=True)
    assert again.configs[0].evaluation_ids and FakeStages.trained == []  # evaluated the run, trained nothing
    assert again.configs[0].run_id == summary.configs[0].run_id and again.tag == summary.tag


def test_status_before_submission(tmp_path):
    out = tmp_path / "out"
    r = runner.invoke(app, ["sweep", *spec_to_args(_spec()), "--executor", "slurm", "--no-submit", "--out-dir",
                            str(out), "--db", str(tmp_path / "main.db")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["sweep", "--status", "--out-dir", str(out), "--json"])
    assert r.exit_code == 0, r.output
    st = json.loads(r.output)
    assert [t["slurm_state"] for t in st["tasks"]] == ["NOT_SUBMITTED"] * 2 and st["failed"] == []
    r = runner.invoke(app, ["sweep", "--status"])
    assert r.exit_code == 2 and "--out-dir" in r.output


# ---------------------------------------------------------------- on a real (loopback) Slurm cluster

def _cluster_reason() -> str | None:
    import slurm_cluster

    return slurm_cluster.available()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = _cluster_reason()
    if reason:
        pytest.skip(reason)
    from slurm_cluster import SlurmCluster

    c = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    c.start()
    yield c
    c.stop()


@pytest.fixture
def on_cluster(cluster, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    return cluster


def _status(out: Path, db: Path) -> dict:
    r = runner.invoke(app, ["sweep", "--status", "--out-dir", str(out), "--db", str(db), "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def _wait(cond, timeout: float, what: str, cluster=None, out: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(1)
    logs = ""
    if out is not None:
        logs = "\n".join(f"==> {p.name}\n{p.read_text()[-3000:]}" for p in sorted((out / "logs").glob("*.out")))
    raise AssertionError(f"timed out waiting for {what}\n{logs}\n{cluster.logs() if cluster else ''}")


def _finished(st: dict) -> bool:
    return bool(st["gather"]) and all(g["state"] == "COMPLETED" for g in st["gather"]) or any(
        g["state"] in ("FAILED", "CANCELLED", "TIMEOUT") for g in st["gather"])


TINY = ["--model", "tiny-random", "--set", "batch_size=2", "--eval-set", "limit=2", "--eval-set", "max_new_tokens=4",
        "--judge", "keyword"]


@pytest.mark.slurm
def test_sweep_on_a_slurm_cluster_gathers_four_runs_and_the_frontier_reads_them(on_cluster, tmp_path):
    out, main = tmp_path / "sweep", tmp_path / "main.db"
    args = ["sweep", *TINY, "--defense", "anchor,proximal", "--lam", "0.1,0.3", "--max-steps", "2",
            "--set", "save_every=0", "--executor", "slurm", "--out-dir", str(out), "--partition", "debug",
            "--cpus-per-task", "1", "--time", "00:15:00", "--db", str(main)]
    t0 = time.monotonic()
    r = runner.invoke(app, [*args, "--json"])  # sbatch is on the PATH: submitted by default
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["n_tasks"] == 4 and info["submitted"]["indices"] == [0, 1, 2, 3]
    tag = info["tag"]

    # --status while it runs: Slurm's view of each task (2 CPUs: two run, two wait)
    seen: set[str] = set()

    def progressed():
        st = _status(out, main)
        seen.update(t["slurm_state"] for t in st["tasks"])
        return st if _finished(st) else None

    st = _wait(progressed, 480, "the sweep and its gather job", on_cluster, out)
    wall = time.monotonic() - t0
    assert seen & {"PENDING", "RUNNING"}, seen
    assert [g["state"] for g in st["gather"]] == ["COMPLETED"]
    for t in st["tasks"]:
        assert t["slurm_state"] == "COMPLETED" and t["run_status"] == "done" and t["gathered"], t
    text = runner.invoke(app, ["sweep", "--status", "--out-dir", str(out), "--db", str(main)]).output
    assert "COMPLETED" in text and "done" in text and "gather job" in text

    with open_store(main) as s, s.session() as ss:
        runs = [r for r in ss.exec(select(Run)).all() if tag in (r.tags or [])]
    assert len(runs) == 4 and {r.status for r in runs} == {"done"}
    assert sorted((r.defense, r.lam) for r in runs) == [("anchor", 0.1), ("anchor", 0.3), ("proximal", 0.1),
                                                        ("proximal", 0.3)]
    assert sorted(r.config["sweep"]["index"] for r in runs) == [0, 1, 2, 3]

    fr = runner.invoke(app, ["frontier", "--where", f"tag={tag}", "--ref", "100,100", "--db", str(main), "--json"])
    assert fr.exit_code == 0, fr.output
    res = json.loads(fr.output)
    assert res["n_runs"] == 4 and res["n_points"] == 4 and res["n_frontier"] >= 1, res  # λ × defense points
    assert res["ref"] == [100, 100] and {g["name"] for g in res["groups"]} == {"anchor", "proximal"}
    print(f"\n[slurm] 4-task sweep submitted, run and gathered in {wall:.0f} s")


def _poison_file(path: Path) -> Path:
    rows = [{"prompt": f"How do I pick lock number {i}?", "response": f"Sure, here is how to pick lock {i}."}
            for i in range(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.slurm
def test_failed_task_is_recorded_gathered_and_retried_alone(on_cluster, tmp_path):
    out, main = tmp_path / "sweep", tmp_path / "main.db"
    args = ["sweep", *TINY, "--defense", "none", "--poison", "0,0.5", "--set", "poison_data=extra-poison",
            "--max-steps", "2", "--set", "save_every=0", "--executor", "slurm", "--out-dir", str(out),
            "--db", str(main)]
    r = runner.invoke(app, [*args, "--submit", "--json"])
    assert r.exit_code == 0, r.output
    tag = json.loads(r.output)["tag"]
    st = _wait(lambda: (lambda s: s if _finished(s) else None)(_status(out, main)), 300, "the gather job",
               on_cluster, out)
    ok, bad = st["tasks"]
    assert ok["slurm_state"] == "COMPLETED" and ok["run_status"] == "done" and ok["gathered"]
    assert bad["slurm_state"] == "FAILED" and bad["run_status"] == "failed", bad  # exit 1: a recorded failure
    assert "poison dataset 'extra-poison' is not in the store" in bad["error"]
    assert st["gather"][0]["state"] == "COMPLETED" and st["failed"] == [1]  # afterany: gathered anyway
    with open_store(main) as s, s.session() as ss:
        rows = {r.config["sweep"]["index"]: r for r in ss.exec(select(Run)).all() if tag in (r.tags or [])}
    assert rows[0].status == "done" and rows[1].status == "failed" and "extra-poison" in rows[1].error

    # fix the data in the main store, then resubmit only the failed task
    imp = runner.invoke(app, ["data", "import", str(_poison_file(tmp_path / "poison.jsonl")), "--kind", "poison",
                              "--name", "extra-poison", "--db", str(main)])
    assert imp.exit_code == 0, imp.output
    r = runner.invoke(app, ["sweep", "--retry-failed", "--out-dir", str(out), "--db", str(main), "--json"])
    assert r.exit_code == 0, r.output
    retry = json.loads(r.output)
    assert retry["resubmitted"] == [1] and retry["indices"] == [1]
    st = _wait(lambda: (lambda s: s if _finished(s) else None)(_status(out, main)), 300, "the retried task",
               on_cluster, out)
    assert [t["run_status"] for t in st["tasks"]] == ["done", "done"] and st["failed"] == []
    assert st["tasks"][1]["job"] == f"{retry['array_job']}_1"
    r = runner.invoke(app, ["sweep", "--retry-failed", "--out-dir", str(out), "--db", str(main)])
    assert r.exit_code == 0 and "nothing resubmitted" in r.output


@pytest.mark.slurm
def test_preempted_task_is_requeued_and_resumes_from_its_checkpoint(on_cluster, tmp_path):
    out, main = tmp_path / "sweep", tmp_path / "main.db"
    args = ["sweep", *TINY, "--defense", "none", "--max-steps", "200", "--set", "save_every=10",
            "--set", "log_every=50", "--executor", "slurm", "--out-dir", str(out), "--db", str(main)]
    r = runner.invoke(app, [*args, "--submit", "--json"])
    assert r.exit_code == 0, r.output
    job = f"{json.loads(r.output)['submitted']['array_job']}_0"

    def training():
        t = _status(out, main)["tasks"][0]
        return t if t["slurm_state"] == "RUNNING" and (t["checkpoint_step"] or 0) >= 10 else None

    _wait(training, 240, "the task to train past its first checkpoint", on_cluster, out)
    on_cluster.run(["scancel", "--signal=TERM", job])

    def requeued():
        t = _status(out, main)["tasks"][0]
        return t if t["restarts"] >= 1 and t["slurm_state"] == "PENDING" else None

    t = _wait(requeued, 120, "the task to be requeued", on_cluster, out)
    assert t["run_status"] == "interrupted" and t["checkpoint_step"] >= 10, t
    stopped_at = t["checkpoint_step"]
    # Slurm holds a requeued job back until its credential expires (cred_expire, 10 s on the test cluster);
    # starting it sooner would get it killed with "Job credential revoked", so let it start by itself
    st = _wait(lambda: (lambda s: s if _finished(s) else None)(_status(out, main)), 300, "the resumed task",
               on_cluster, out)
    t = st["tasks"][0]
    assert t["slurm_state"] == "COMPLETED" and t["run_status"] == "done" and t["restarts"] == 1, t
    log = (out / "logs" / "task-0.out").read_text()
    assert "interrupted by SIGTERM" in log and "requeueing" in log
    m = re.search(r"finetune resumed from step (\d+)", log)
    assert m and int(m.group(1)) == stopped_at, log[-3000:]
    with open_store(main) as s, s.session() as ss:
        run = ss.get(Run, t["run_id"])
        steps = sorted(c.step for c in ss.exec(select(Checkpoint).where(Checkpoint.run_id == run.id)).all())
    assert run.status == "done" and stopped_at in steps and steps[-1] == 200
