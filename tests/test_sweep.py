"""`spt sweep`: planning, the local executor (failures recorded, re-runs train nothing), Slurm scripts.

Orchestration is tested with fake stages that write real Run/Evaluation/Metric rows (`FakeStages`,
also loaded by subprocesses through SPT_SWEEP_STAGES=test_sweep:FakeStages); one test runs the real
stages on the tiny random model when spt.train / spt.eval provide them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from spt.cli import app
from spt.errors import SptError
from spt.eval.evaluate import EvaluateResult
from spt.judge.result import JudgeResult
from spt.progress import report
from spt.store import content_id, open_store
from spt.store.models import Evaluation, Metric, Run
from spt.sweep import SweepSpec, plan_sweep, run_sweep, sweep_id, sweep_tag
from spt.sweep.plan import config_label, spec_to_args
from spt.sweep.run import Stages, finetune_config_values
from spt.sweep.slurm import SlurmOptions, gather, slurm_files, write_slurm
from spt.train.result import FinetuneResult

TESTS = Path(__file__).resolve().parent
runner = CliRunner()


# ---------------------------------------------------------------- fake stages

class FakeStages:
    """Stand-ins for spt.train.finetune / spt.eval.evaluate / spt.judge that write real rows.

    finetune validates λ like the real one (anchor: 0 ≤ λ ≤ 1, before any row), reuses a done run of
    the same identity, and raises after creating its row for seed 13 (a crash mid-training).
    evaluate raises for seed 14 (a failure after training).
    """

    trained: list[str] = []

    @staticmethod
    def finetune(store, spec, config, progress=None):
        values = finetune_config_values(spec, config)
        lam = values.get("lam")
        if values["defense"] == "anchor" and lam is not None and not 0 <= lam <= 1:
            raise SptError(f"--lam {lam:g} is outside [0, 1] for defense 'anchor'")
        identity = content_id({"fake-finetune": values})
        with store.session() as s:
            done = s.exec(select(Run).where(Run.identity == identity, Run.status == "done")).first()
        if done is not None:
            return FinetuneResult(run_id=done.id, status="done", kind="finetune", reused=True)
        run = Run(kind="finetune", model_ref=values.get("model") or "x", defense=values["defense"], lam=lam,
                  poison_ratio=values.get("poison"), seed=values.get("seed"), identity=identity,
                  status="running", config={"finetune": values})
        with store.write() as s:
            s.add(run)
        report(progress, "train", 1, 2, "steps")
        report(progress, "train", 2, 2, "steps")
        if values.get("seed") == 13:
            raise RuntimeError("CUDA out of memory (fake)")
        with store.write() as s:
            row = s.get(Run, run.id)
            row.status = "done"
            s.add(row)
        FakeStages.trained.append(run.id)
        return FinetuneResult(run_id=run.id, status="done", kind="finetune", final_losses={"task_loss": 1.0})

    @staticmethod
    def evaluate(store, spec, config, run_id, progress=None):
        if config.get("seed") == 14:
            raise SptError("evaluation dataset missing (fake)")
        identity = content_id({"fake-eval": run_id})
        with store.session() as s:
            ev = s.exec(select(Evaluation).where(Evaluation.identity == identity)).first()
        if ev is not None:
            return _evaluated(ev.id, run_id, reused=True)
        lam = config.get("lam") or 0.0
        ev = Evaluation(run_id=run_id, identity=identity, status="done")
        with store.write() as s:
            s.add(ev)
            for name, value in (("refusal_rate", 0.2 + 0.7 * lam), ("task_loss", 1.0 + lam),
                                ("alignment_loss", 2.0 - lam)):
                s.add(Metric(id=content_id({"e": ev.id, "n": name}), run_id=run_id, evaluation_id=ev.id,
                             name=name, value=value, n=10))
        return _evaluated(ev.id, run_id, reused=False)

    @staticmethod
    def judge(store, spec, config, evaluation_ids):
        return JudgeResult(evaluations=list(evaluation_ids), generations=0)


def _evaluated(evaluation_id: str, run_id: str, reused: bool) -> EvaluateResult:
    """What a fake evaluation reports: its id, and whether anything was generated now."""
    return EvaluateResult(evaluation_id=evaluation_id, identity=evaluation_id, run_id=run_id, checkpoint_id=None,
                          dataset_id="fake", dataset="fake", split="test", task=None, refusal_preset="spt",
                          status="done", n_items=10, n_task_items=0, n_generated=0 if reused else 10, n_reused=0,
                          n_copied=0, new_tokens=0, tokens_per_s=None)


FAKE = Stages(FakeStages.finetune, FakeStages.evaluate, FakeStages.judge)


def _runs(store):
    with store.session() as s:
        return s.exec(select(Run).order_by(Run.id)).all()


# ---------------------------------------------------------------- plan

def test_plan_product_collapses_lambda_for_none_and_is_stable():
    spec = SweepSpec(model="tiny-random", defenses=["none", "anchor"], lams=[0.1, 0.3], poisons=[0.1, 0.2],
                     seeds=[0, 1])
    plan = plan_sweep(spec)
    assert len(plan) == 1 * 2 * 2 + 2 * 2 * 2  # none ignores λ
    assert [c["index"] for c in plan] == list(range(12))
    none = [c for c in plan if c["defense"] == "none"]
    assert {c["lam"] for c in none} == {None} and len(none) == 4
    anchor = [(c["lam"], c["poison"], c["seed"]) for c in plan if c["defense"] == "anchor"]
    assert anchor[0] == (0.1, 0.1, 0) and anchor[-1] == (0.3, 0.2, 1) and len(set(anchor)) == 8
    assert len({c["key"] for c in plan}) == 12

    again = SweepSpec(model="tiny-random", defenses=["none", "anchor"], lams=["0.1", "0.3"], poisons=[0.1, 0.2],
                      seeds=["0", "1"])
    assert plan_sweep(again) == plan and sweep_id(again) == sweep_id(spec)
    assert sweep_tag(spec).startswith("sweep:")
    other = SweepSpec(model="tiny-random", defenses=["none", "anchor"], lams=[0.1, 0.3], poisons=[0.1, 0.2],
                      seeds=[0, 1], max_steps=5)
    assert sweep_id(other) != sweep_id(spec)
    # a configuration's key does not depend on the rest of the grid
    assert plan_sweep(SweepSpec(model="tiny-random", defenses=["anchor"], lams=[0.1], poisons=[0.1],
                                seeds=[0]))[0]["key"] == anchor_key(plan, 0.1, 0.1, 0)


def anchor_key(plan, lam, poison, seed):
    return next(c["key"] for c in plan if (c["defense"], c["lam"], c["poison"], c["seed"]) ==
                ("anchor", lam, poison, seed))


def test_cli_args_rebuild_the_same_spec():
    spec = SweepSpec(model="tiny-random", task="builtin:arithmetic", defenses=["none", "anchor"],
                     lams=[0.1, 1e-3], poisons=[0.1], seeds=[3], max_steps=2,
                     train={"lr": 3e-5, "lora": False, "stage": "task", "lora_dropout": 0.1}, judges=["keyword"])
    r = runner.invoke(app, ["sweep", *spec_to_args(spec), "--dry-run", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["sweep_id"] == sweep_id(spec)
    assert [c["key"] for c in out["plan"]] == [c["key"] for c in plan_sweep(spec)]


def test_plan_validation_errors():
    for kwargs, msg in [({}, "`model`"), ({"model": "m", "from_run": "r"}, "not both"),
                        ({"model": "m", "poisons": [2]}, "ratio")]:
        with pytest.raises(SptError, match=msg):
            SweepSpec(**kwargs).validate()
    with pytest.raises(SptError, match="not a number"):
        SweepSpec(model="m", lams=["x"])
    r = runner.invoke(app, ["sweep", "--model", "m", "--lam", "0.1,,0.2", "--dry-run"])
    assert r.exit_code == 2 and "empty entry" in r.output


def test_training_axes_apply_to_every_defense():
    """`--axis epochs=1,2` (the Safety Tax's epochs sweep) multiplies every defense's configurations."""
    spec = SweepSpec(model="tiny-random", defenses=["none", "anchor"], lams=[0.1], seeds=[0, 1],
                     axes={"epochs": [1, 2]})
    plan = plan_sweep(spec)
    assert len(plan) == 2 * 2 * 2
    assert {(c["defense"], c["options"]["epochs"], c["seed"]) for c in plan} == {
        (d, e, s) for d in ("none", "anchor") for e in (1.0, 2.0) for s in (0, 1)}
    assert len({c["key"] for c in plan}) == 8
    assert all(isinstance(c["options"]["epochs"], float) for c in plan)
    r = runner.invoke(app, ["sweep", "--model", "tiny-random", "--defense", "none,anchor", "--lam", "0.1",
                            "--seeds", "0,1", "--axis", "epochs=1,2", "--dry-run", "--json"])
    assert r.exit_code == 0, r.output
    assert [c["key"] for c in json.loads(r.output)["plan"]] == [c["key"] for c in plan]
    assert config_label(plan[0]) == "none epochs=1.0 seed=0"


@pytest.mark.parametrize("kwargs,msg", [
    ({"axes": {"epochs": [1, 0]}}, "greater than 0"),
    ({"axes": {"epochs": ["x"]}}, "not a number"),
    ({"axes": {"epochs": [1]}, "max_steps": 5}, "exclude each other"),
    ({"axes": {"lr": [1e-4]}, "train": {"lr": 1e-3}}, "keep one"),
    ({"axes": {"nonsense_option": [1]}}, "training axes: epochs"),
])
def test_bad_training_axes(kwargs, msg):
    with pytest.raises(SptError, match=msg):
        SweepSpec(model="m", **kwargs).validate()


def test_an_epochs_axis_reaches_the_training_config(store):
    seen = []

    def finetune(store_, spec_, config, progress=None):
        seen.append(finetune_config_values(spec_, config)["epochs"])
        return FakeStages.finetune(store_, spec_, config, progress)

    spec = SweepSpec(model="tiny-random", defenses=["none"], seeds=[0], axes={"epochs": [1, 3]}, evaluate=False,
                     judges=[])
    run_sweep(store, spec, stages=Stages(finetune, FakeStages.evaluate, FakeStages.judge))
    assert sorted(seen) == [1.0, 3.0]


# ---------------------------------------------------------------- local executor

def test_failing_configuration_is_recorded_and_second_run_trains_nothing(store):
    FakeStages.trained.clear()
    spec = SweepSpec(model="tiny-random", defenses=["none", "anchor"], lams=[0.1, 1.5], poisons=[0.1], seeds=[0])
    events = []
    summary = run_sweep(store, spec, progress=events.append, stages=FAKE)
    by_label = {r.label: r for r in summary.configs}
    assert summary.n_configs == 3 and summary.n_failed == 1 and summary.n_trained == 2
    bad = by_label["anchor λ=1.5 p=0.1 seed=0"]
    assert bad.status == "failed" and "outside [0, 1]" in bad.error
    assert by_label["none p=0.1 seed=0"].status == "done"
    assert by_label["anchor λ=0.1 p=0.1 seed=0"].metrics["refusal_rate"] == pytest.approx(0.27)
    assert [(p.done, p.total) for p in events if p.task == "sweep"] == [(0, 3), (1, 3), (1, 3), (2, 3), (2, 3), (3, 3)]
    trains = [p for p in events if p.task == "train"]  # each stage's reports, within its configuration
    assert [(p.scope, p.done) for p in trains[:2]] == [(("[0] none p=0.1 seed=0", "finetune"), 1),
                                                       (("[0] none p=0.1 seed=0", "finetune"), 2)]

    runs = {r.id: r for r in _runs(store)}
    assert len(runs) == 3
    failed = runs[bad.run_id]
    assert failed.status == "failed" and failed.kind == "finetune" and "outside" in failed.error
    assert failed.identity == bad.key and failed.lam == 1.5 and failed.defense == "anchor"
    assert failed.config["finetune"]["lam"] == 1.5
    for r in runs.values():
        assert sweep_tag(spec) in r.tags
        assert r.config["sweep"]["id"] == sweep_id(spec)
    assert sorted(r.config["sweep"]["index"] for r in runs.values()) == [0, 1, 2]

    # the same sweep again: nothing trained, no new rows, the failure found (and updated) again
    FakeStages.trained.clear()
    again = run_sweep(store, spec, stages=FAKE)
    assert FakeStages.trained == [] and again.n_trained == 0
    assert [r.status for r in again.configs] == ["reused", "reused", "failed"]
    assert {r.id for r in _runs(store)} == set(runs)
    assert again.configs[2].run_id == bad.run_id


def test_crash_after_the_run_row_and_evaluation_failure_are_recorded(store):
    spec = SweepSpec(model="tiny-random", defenses=["none"], poisons=[0.1], seeds=[13, 14, 0])
    summary = run_sweep(store, spec, stages=FAKE)
    crash, evalfail, ok = summary.configs
    assert crash.status == "failed" and "RuntimeError: CUDA out of memory" in crash.error
    assert crash.traceback
    assert evalfail.status == "failed" and evalfail.stage == "evaluate"
    assert ok.status == "done" and ok.metrics
    with store.session() as s:
        crashed = s.get(Run, crash.run_id)
        trained = s.get(Run, evalfail.run_id)
    assert crashed.status == "failed" and "out of memory" in crashed.error and sweep_tag(spec) in crashed.tags
    assert trained.status == "done"
    assert trained.config["sweep"]["errors"][0]["stage"] == "evaluate"
    assert len(_runs(store)) == 3


def test_only_index_runs_one_configuration(store):
    spec = SweepSpec(model="tiny-random", defenses=["anchor"], lams=[0.1, 0.2, 0.3])
    summary = run_sweep(store, spec, stages=FAKE, only_index=1)
    assert [r.index for r in summary.configs] == [1] and summary.configs[0].lam == 0.2
    with pytest.raises(SptError, match="out of range"):
        run_sweep(store, spec, stages=FAKE, only_index=3)


def test_cli_local_sweep_json(db_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.setenv("SPT_SWEEP_STAGES", "test_sweep:FakeStages")
    args = ["sweep", "--model", "tiny-random", "--defense", "none,anchor", "--lam", "0.1,1.5", "--poison", "0.1",
            "--db", str(db_path)]
    r = runner.invoke(app, [*args, "--json"])
    assert r.exit_code == 1, r.output  # one configuration failed
    out = json.loads(r.output)
    assert [c["status"] for c in out["configs"]] == ["done", "done", "failed"]
    # fake runs have no evaluated base model: the frontier stands, its hypervolume is left out and says why
    assert out["frontier_error"] is None and out["frontier"]["ref"] is None
    assert "no base-model run" in out["frontier"]["ref_source"]
    assert all(g["hypervolume"] is None for g in out["frontier"]["groups"])
    r = runner.invoke(app, args)
    assert r.exit_code == 1
    assert "2 done, 1 failed, 0 trained now" in r.output


# ---------------------------------------------------------------- Slurm

def _slurm_spec():  # 2 λ × 3 poison ratios
    return SweepSpec(model="tiny-random", defenses=["anchor"], lams=[0.1, 0.3], poisons=[0.05, 0.1, 0.2],
                     seeds=[0], max_steps=2)


def test_slurm_dry_run_prints_array_of_six_with_distinct_stores_and_gather(tmp_path):
    out = tmp_path / "sweep-out"
    args = ["sweep", *spec_to_args(_slurm_spec()), "--executor", "slurm", "--dry-run", "--out-dir", str(out),
            "--partition", "gpu", "--gpus-per-task", "2", "--time", "02:00:00", "--accelerate",
            "--db", str(tmp_path / "main.db")]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    text = r.output
    assert "#SBATCH --array=0-5" in text and "#SBATCH --partition=gpu" in text
    assert "#SBATCH --gpus-per-task=2" in text and "#SBATCH --time=02:00:00" in text
    assert "accelerate launch --num_processes 2" in text
    assert "--only-index ${SLURM_ARRAY_TASK_ID}" in text
    assert f"{out}/stores/task-${{SLURM_ARRAY_TASK_ID}}.db" in text
    assert "gather.sbatch" in text and f"sweep --gather {out}" in text and "--dependency=afterany:" in text
    assert "spt import" in text  # each task starts from the main store's content
    assert not out.exists() and not (tmp_path / "main.db").exists()  # dry run writes nothing

    files = slurm_files(_slurm_spec(), SlurmOptions(out_dir=out, main_db=tmp_path / "main.db"))
    meta = json.loads(files["sweep.json"])
    assert len(meta["task_dbs"]) == 6 and len(set(meta["task_dbs"])) == 6
    bad = runner.invoke(app, ["sweep", "--model", "tiny-random", "--executor", "slurm", "--time", "2 hours",
                              "--dry-run"])
    assert bad.exit_code == 2 and "Slurm time" in bad.output


def test_slurm_array_tasks_run_locally_then_gather(tmp_path):
    """Run the 6 array tasks as Slurm would (bash sweep.sbatch with SLURM_ARRAY_TASK_ID), then gather."""
    spec = _slurm_spec()
    main_db = tmp_path / "main.db"
    info = write_slurm(spec, SlurmOptions(out_dir=tmp_path / "out", main_db=main_db,
                                          spt_command=f"{sys.executable} -m spt.cli"))
    assert info["n_tasks"] == 6
    env = {**os.environ, "SPT_SWEEP_STAGES": "test_sweep:FakeStages",
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    procs = []
    for i in range(6):
        procs.append(subprocess.Popen(["bash", info["files"]["sweep.sbatch"]],
                                      env={**env, "SLURM_ARRAY_TASK_ID": str(i)},
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out
    stores = sorted((tmp_path / "out" / "stores").glob("task-*.db"))
    assert len(stores) == 6
    for f in stores:
        with open_store(f) as s:
            assert len(_runs(s)) == 1

    g = subprocess.run(["bash", info["files"]["gather.sbatch"]], env=env, capture_output=True, text=True,
                       timeout=120)
    assert g.returncode == 0, g.stdout + g.stderr
    assert "gathered 6 of 6 task stores" in g.stdout and "6 done" in g.stdout
    with open_store(main_db) as s:
        runs = [r for r in _runs(s) if sweep_tag(spec) in (r.tags or [])]
        assert len(runs) == 6
        assert sorted(r.config["sweep"]["index"] for r in runs) == list(range(6))
        assert sorted((r.lam, r.poison_ratio) for r in runs) == sorted(
            (c["lam"], c["poison"]) for c in plan_sweep(spec))
        with s.session() as ss:
            assert len(ss.exec(select(Metric)).all()) == 18
    # gathering again changes nothing; the library gather reports the same stores
    res = gather(main_db, [*stores, tmp_path / "out" / "stores" / "task-99.db"])
    assert res["rows_inserted"] == 0 and len(res["imported"]) == 6 and len(res["missing"]) == 1


# ---------------------------------------------------------------- the real stages

def _real_stages_available() -> bool:
    try:
        from spt.eval import EvaluateConfig, evaluate  # noqa: F401
        from spt.train import FinetuneConfig, finetune  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _real_stages_available(), reason="spt.train.finetune / spt.eval.evaluate not available")
def test_real_stages_tiny_sweep(store):
    """finetune → evaluate → keyword judge on the tiny random model; λ = 1.5 refused by finetune's validation."""
    spec = SweepSpec(model="tiny-random", defenses=["anchor"], lams=[0.1, 1.5], poisons=[0.1], seeds=[0],
                     max_steps=2, train={"batch_size": 2, "save_every": 0},
                     eval_options={"limit": 2, "max_new_tokens": 4}, judges=["keyword"])
    summary = run_sweep(store, spec)
    ok, bad = summary.configs
    assert ok.status == "done" and ok.trained and ok.evaluation_ids, ok
    assert "refusal_rate" in ok.metrics and "alignment_loss" in ok.metrics
    assert bad.status == "failed" and "1.5" in bad.error
    runs = _runs(store)
    assert {r.status for r in runs if sweep_tag(spec) in (r.tags or [])} == {"done", "failed"}
    again = run_sweep(store, spec)
    assert again.n_trained == 0 and len(_runs(store)) == len(runs)
    assert [r.status for r in again.configs] == ["reused", "failed"]
    assert again.configs[1].run_id == bad.run_id


def test_a_configuration_another_worker_is_training_is_skipped_not_failed(store):
    """A live lease held by another worker (spt.train.loop.LeaseHeld) is not a failure of this sweep."""
    from spt.train.loop import LeaseHeld

    with store.write() as s:
        holder = Run(kind="finetune", model_ref="tiny-random", status="running")
        s.add(holder)
        s.flush()
        holder_id = holder.id

    def busy(store, spec, config, progress=None):
        raise LeaseHeld(f"run {holder_id} is being trained by host pid 1", holder_id)

    spec = SweepSpec(model="tiny-random", defenses=["none"], poisons=[0.1], seeds=[0])
    summary = run_sweep(store, spec, stages=Stages(busy, FakeStages.evaluate, FakeStages.judge))
    (cfg,) = summary.configs
    assert cfg.status == "skipped" and cfg.run_id == holder_id
    assert summary.n_failed == 0 and summary.n_skipped == 1
    with store.session() as s:
        assert [r.status for r in s.exec(select(Run)).all()] == ["running"]  # no failure row, holder untouched


def test_a_stored_task_must_be_in_the_store_the_sweep_uses(tmp_path):
    """`--task NAME` (no builtin, no file) is a dataset of --db: the dry run and the real run refuse a name the
    store does not hold, in one line and before any configuration runs; a stored name plans."""
    sys.path.insert(0, str(Path(__file__).parent))
    from train_helpers import mini_data

    db = tmp_path / "s.db"
    absent = runner.invoke(app, ["--db", str(db), "sweep", "--model", "tiny-random", "--task", "task-mini",
                                 "--dry-run"])
    assert absent.exit_code == 2 and "does not exist yet" in absent.output
    assert len(absent.output.strip().splitlines()) == 1
    with open_store(db) as st:
        names = mini_data(st)
    ok = runner.invoke(app, ["--db", str(db), "sweep", "--model", "tiny-random", "--task", names["task"], "--dry-run"])
    assert ok.exit_code == 0, ok.output
    for extra in (["--dry-run"], []):
        r = runner.invoke(app, ["--db", str(db), "sweep", "--model", "tiny-random", "--task", "task-maxi", *extra])
        assert r.exit_code == 2 and "task dataset 'task-maxi' is not in the store" in r.output, (extra, r.output)
    with open_store(db) as st, st.session() as s:
        assert s.exec(select(Run)).all() == []  # nothing trained
