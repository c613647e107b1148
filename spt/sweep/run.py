"""Running a sweep locally: each configuration finetune → evaluate → judge, failures recorded.

Every stage resumes by itself (finetune reuses a done run of the same identity, evaluate reuses or
resumes an evaluation, judge never repeats a call), so re-running a sweep only does what is missing.
A configuration that fails is recorded in the store and the sweep goes on:
- when the run row exists (the failure happened during training or later), the run keeps its status
  and error (training failures mark the run failed; evaluation/judge failures are noted in
  `config["sweep"]["errors"]` of the trained run);
- when validation refused the configuration before any run row existed, a `failed` finetune run is
  written with the configuration, the error and `identity` = the configuration's key, so the next
  run of the sweep finds and updates that row instead of adding another.
Sweep runs carry the tag `sweep:<id>` and `config["sweep"] = {"id", "index", "key"}`.

Stages are injectable (`Stages`), which keeps orchestration testable without training, and lets a
deployment swap them with `SPT_SWEEP_STAGES=module:attribute`.
"""

from __future__ import annotations

import importlib
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spt.errors import SptError
from spt.metrics import KEY_METRICS
from spt.store import queries
from spt.store.engine import Store
from spt.store.ids import new_id
from spt.store.models import Run, utcnow
from spt.sweep.plan import SweepSpec, config_label, plan_sweep, sweep_id, sweep_tag

STAGES_ENV = "SPT_SWEEP_STAGES"

# progress(event, **info): events "start" (total), "config" (index, label), "stage" (index, stage),
# "step" (index, stage, done, total: a stage's own progress), "config_done" (result), "end" (summary).
ProgressFn = Callable[..., None]


@dataclass
class Stages:
    """The three stages a configuration goes through.

    - `finetune(store, spec, config, progress) -> {"run_id", "status", "reused", ...}`
    - `evaluate(store, spec, config, run_id, progress) -> {"evaluation_ids": [...], "reused", ...}`
    - `judge(store, spec, config, evaluation_ids) -> dict`

    A stage raises on failure (SptError for user errors); an exception carrying a `run_id`
    attribute says which run row it already wrote.
    """

    finetune: Callable[..., dict[str, Any]]
    evaluate: Callable[..., dict[str, Any]]
    judge: Callable[..., dict[str, Any]]
    check: Callable[[SweepSpec], None] | None = None  # raises SptError for a spec no configuration can run


# ---------------------------------------------------------------- the real stages (spt.train/eval/judge)

def _dataclass_kwargs(cls: type, values: dict[str, Any], what: str) -> dict[str, Any]:
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else None
    if names is None:
        return values
    unknown = sorted(k for k in values if k not in names)
    if unknown:
        raise SptError(f"{what} has no option {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
    return values


def finetune_config_values(spec: SweepSpec, config: dict[str, Any]) -> dict[str, Any]:
    """The FinetuneConfig fields of one configuration (unset axes left to the config's defaults)."""
    values: dict[str, Any] = dict(spec.train)
    if spec.model:
        values["model"] = spec.model
    if spec.from_run:
        values["from_run"] = spec.from_run
    if spec.task:
        values["task"] = spec.task
    if spec.max_steps is not None:
        values["max_steps"] = spec.max_steps
    values["defense"] = config["defense"]
    for axis, name in (("lam", "lam"), ("poison", "poison"), ("seed", "seed")):
        if config.get(axis) is not None:
            values[name] = config[axis]
    values.update(config.get("options") or {})  # the defense's own option axes (spt sweep --axis)
    return values


def _real_finetune(store: Store, spec: SweepSpec, config: dict[str, Any], progress: Any = None) -> dict[str, Any]:
    from spt.train import FinetuneConfig, finetune

    values = finetune_config_values(spec, config)
    if config.get("align"):  # two-stage: start from the variant's alignment run (trained once, then reused)
        from spt.sweep.align_stage import ensure_alignment

        values.pop("model", None)
        values["from_run"] = ensure_alignment(store, spec.model, spec.train, config["align"], spec.align_max_steps)
    values.setdefault("resume", True)  # an interrupted configuration continues from its last checkpoint
    values = _dataclass_kwargs(FinetuneConfig, values, "spt finetune")
    cfg = FinetuneConfig(**values)
    return dict(finetune(store, cfg, progress=progress))


def _real_evaluate(store: Store, spec: SweepSpec, config: dict[str, Any], run_id: str,
                   progress: Any = None) -> dict[str, Any]:
    from spt.eval import EvaluateConfig, evaluate

    values = _dataclass_kwargs(EvaluateConfig, dict(spec.eval_options), "spt evaluate")
    cfg = EvaluateConfig(**values)  # task: the run's own task
    res = dict(evaluate(store, run_id, cfg, progress=progress))
    if "reused" not in res:  # evaluate reports how many generations it had to make
        res["reused"] = res.get("n_generated", 1) == 0 and not res.get("n_copied")
    return res


def _real_judge(store: Store, spec: SweepSpec, config: dict[str, Any], evaluation_ids: list[str]) -> dict[str, Any]:
    from spt.judge import JudgeOptions, judge_evaluations

    options = JudgeOptions(judges=list(spec.judges), rubric=spec.rubric or "refusal")
    return judge_evaluations(store, evaluation_ids, options).to_dict()


def check_spec(spec: SweepSpec) -> None:
    """Refuse unknown defense names up front (a typo would fail every configuration of that defense).

    `run_sweep` records a configuration whose own settings are refused as failed and goes on with the
    rest; `validate_plan` (what `spt sweep` runs first) refuses the whole plan instead.
    """
    from spt.train.defenses import get_defense

    for d in spec.defenses:
        get_defense(d)


def validate_plan(spec: SweepSpec) -> None:
    """Refuse a plan any configuration of which would fail on its input, before the first job runs.

    Checks the model reference, data names, every configuration's finetune settings (defenses, λ,
    poison, `--set` values with types and NaN), the evaluation options and the judges (with the key an
    OpenAI judge needs). Nothing is built, loaded or written.
    """
    import dataclasses

    from spt.eval import EvaluateConfig
    from spt.train import FinetuneConfig

    if spec.model:
        _check_model_ref(spec.model)
    _check_data_refs(spec)
    if spec.two_stage:  # each alignment run's settings resolve too
        from spt.sweep.align_stage import align_config_values, alignment_runs, variant_label

        for v in alignment_runs(plan_sweep(spec)):
            values = _dataclass_kwargs(FinetuneConfig, align_config_values(spec.model, spec.train, v,
                                                                           spec.align_max_steps), "spt finetune")
            try:
                FinetuneConfig(**values).resolve()
            except SptError as e:
                raise SptError(f"alignment run {variant_label(v)}: {e}") from None
    for config in plan_sweep(spec):
        values = _dataclass_kwargs(FinetuneConfig, finetune_config_values(spec, config), "spt finetune (--set)")
        if config.get("align"):  # the task stage starts from the alignment run (not trained yet)
            values.pop("model", None)
            values["from_run"] = "<alignment run>"
        try:
            FinetuneConfig(**values).resolve()
        except SptError as e:
            raise SptError(f"configuration [{config['index']}] {config_label(config)}: {e}") from None
    if spec.evaluate:
        values = _dataclass_kwargs(EvaluateConfig, dict(spec.eval_options), "spt evaluate (--eval-set)")
        cfg = EvaluateConfig(**values)
        _check_eval_types(cfg, dataclasses.fields(EvaluateConfig))
        cfg.validate()
        if spec.judges:
            _check_judges(spec)


def _check_model_ref(ref: str) -> None:
    """The model reference resolves (without materialising or downloading anything)."""
    import re

    from spt.models.resolve import PACKAGED

    p = Path(ref).expanduser()
    if ref in PACKAGED or re.fullmatch(r"tiny-random(?::\d+)?", ref):
        return
    if p.is_dir():
        if not (p / "config.json").exists():
            raise SptError(f"model directory {p} has no config.json; pass a saved transformers model")
        return
    if re.fullmatch(r"[\w.-]+/[\w.-]+", ref) and not p.exists():
        return
    raise SptError(f"model reference {ref!r} does not resolve: use {', '.join(PACKAGED)}, a local model "
                   "directory, or a hub id like org/name")


def _check_data_refs(spec: SweepSpec) -> None:
    """`builtin:` data names exist (stored dataset names are checked against the store by the stage)."""
    from spt.data import BUILTIN_POISON, BUILTIN_TASKS

    task = spec.task or spec.train.get("task")
    if isinstance(task, str) and task.startswith("builtin:") and task not in BUILTIN_TASKS:
        raise SptError(f"`task` {task!r} is not a built-in task; use {', '.join(BUILTIN_TASKS)} or a stored dataset")
    pdata = spec.train.get("poison_data")
    if isinstance(pdata, str) and pdata.startswith("builtin:") and pdata != BUILTIN_POISON:
        raise SptError(f"poison_data {pdata!r} is not built in; use {BUILTIN_POISON} or a stored dataset")


def _check_eval_types(cfg: Any, fields: Any) -> None:
    import math

    for f in fields:
        v = getattr(cfg, f.name)
        if v is None:
            continue
        default = f.default
        if isinstance(default, bool) and not isinstance(v, bool):
            raise SptError(f"`eval_set` {f.name}={v!r} is not true or false")
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                if not (f.name == "batch_size" and v == "auto"):
                    raise SptError(f"`eval_set` {f.name}={v!r} is not a finite number")
            if isinstance(default, int) and isinstance(v, float) and f.name != "temperature":
                raise SptError(f"`eval_set` {f.name}={v!r} is not a whole number")
        if isinstance(default, str) and f.name != "batch_size" and not isinstance(v, str):
            raise SptError(f"`eval_set` {f.name}={v!r} is not text")


def _check_judges(spec: SweepSpec) -> None:
    from spt.judge import JudgeOptions
    from spt.judge.specs import parse_judge_spec

    options = JudgeOptions(judges=list(spec.judges), rubric=spec.rubric or "refusal")
    for s in (parse_judge_spec(j, options.rubric) for j in spec.judges):
        try:
            s.impl.check_credentials(s, options)
        except SptError as e:
            raise SptError(f"`judge` {s.spec}: {e}; or judge later with `spt judge` (or `judge` keyword)") from None


def default_stages() -> Stages:
    """The stages named by $SPT_SWEEP_STAGES (`module:attribute`), else spt's own."""
    ref = os.environ.get(STAGES_ENV)
    if ref:
        module, _, attr = ref.partition(":")
        try:
            obj = getattr(importlib.import_module(module), attr or "STAGES")
        except (ImportError, AttributeError) as e:
            raise SptError(f"{STAGES_ENV}={ref!r} cannot be loaded ({e}); unset it or fix module:attribute") from None
        obj = obj() if callable(obj) and not hasattr(obj, "finetune") else obj
        return Stages(obj.finetune, obj.evaluate, obj.judge, getattr(obj, "check", None))
    return Stages(_real_finetune, _real_evaluate, _real_judge, check_spec)


# ---------------------------------------------------------------- recording in the store

def _sweep_info(spec: SweepSpec, config: dict[str, Any]) -> dict[str, Any]:
    return {"id": sweep_id(spec), "tag": sweep_tag(spec), "index": config["index"], "key": config["key"]}


def tag_run(store: Store, run_id: str, spec: SweepSpec, config: dict[str, Any],
            error: dict[str, Any] | None = None) -> None:
    """Add the sweep tag and `config["sweep"]` to a run (idempotent); note a later-stage error."""
    tag = sweep_tag(spec)
    with store.write() as s:
        run = s.get(Run, run_id)
        if run is None:
            return
        changed = queries.add_tags(s, run, [tag])
        cfg = dict(run.config or {})
        info = dict(cfg.get("sweep") or {})
        if not info:  # a run reused by a second sweep keeps its first sweep's index (tags list both)
            info = _sweep_info(spec, config)
        errors = [e for e in info.get("errors", []) if e.get("stage") != (error or {}).get("stage")]
        if error:
            errors.append(error)
        if errors:
            info["errors"] = errors
        else:
            info.pop("errors", None)
        if cfg.get("sweep") != info:
            cfg["sweep"] = info
            run.config = cfg
            changed = True
        if changed:
            run.updated_at = utcnow()
            s.add(run)


def _failure_row(store: Store, spec: SweepSpec, config: dict[str, Any], error: str) -> str:
    """Record a configuration refused before a run row existed; update the earlier record if any."""
    with store.write() as s:
        found = queries.runs_with_identity(s, config["key"], status="failed")
        run = found[0] if found else None
        if run is None:
            run = Run(
                id=new_id(), kind="finetune", parent_run_id=None,
                model_ref=spec.model or (f"run:{spec.from_run}" if spec.from_run else "unknown"),
                base_model=None, task=spec.task, defense=config["defense"], lam=config["lam"],
                poison_ratio=config["poison"], seed=config["seed"],
                lora=spec.train.get("lora") if isinstance(spec.train.get("lora"), bool) else None,
                identity=config["key"], status="failed",
                tags=[sweep_tag(spec)],
            )
        run.config = {
            "finetune": finetune_config_values(spec, config),
            "sweep": {**_sweep_info(spec, config), "failed_stage": "validation"},
        }
        run.error = error
        run.updated_at = run.finished_at = utcnow()
        s.add(run)
        queries.add_tags(s, run, [sweep_tag(spec)])
        return run.id


def _runs_since(store: Store, marker: str, config: dict[str, Any]) -> list[Run]:
    """Run rows created after `marker` (a UUIDv7 taken before the stage) that match the configuration."""
    rows = queries.runs_created_after(store, marker)
    return [r for r in rows if r.defense in (None, config["defense"])
            and (config["lam"] is None or r.lam is None or abs(r.lam - config["lam"]) < 1e-12)]


def _mark_failed(store: Store, run_id: str, error: str) -> None:
    queries.mark_failed(store, run_id, error)


def run_metrics(store: Store, run_id: str, evaluation_ids: list[str] | None = None) -> dict[str, float | None]:
    """The key overall metrics of a run: per name the most recent row (un-judged rows first)."""
    return queries.latest_run_metrics(store, run_id, KEY_METRICS, evaluation_ids=evaluation_ids)


# ---------------------------------------------------------------- the executor

def _error_text(e: BaseException) -> str:
    if isinstance(e, SptError):
        return str(e)
    return f"{type(e).__name__}: {e}"


def _evaluation_ids(result: dict[str, Any]) -> list[str]:
    ids = list(result.get("evaluation_ids") or [])
    for key in ("evaluation_id",):
        if result.get(key) and result[key] not in ids:
            ids.append(result[key])
    for ev in result.get("evaluations") or []:
        eid = ev.get("evaluation_id") or ev.get("id") if isinstance(ev, dict) else None
        if eid and eid not in ids:
            ids.append(eid)
    return ids


def _finished_finetune(store: Store, spec: SweepSpec, config: dict[str, Any], progress: Any = None) -> dict[str, Any]:
    """The done run this sweep already trained for `config` (its tag and key), instead of training."""
    tag = sweep_tag(spec)
    rows = queries.runs_with_status(store, "done")
    mine = [r for r in rows
            if tag in (r.tags or []) and ((r.config or {}).get("sweep") or {}).get("key") == config["key"]]
    if not mine:
        raise SptError(f"no finished finetune of configuration [{config['index']}] {config_label(config)} in "
                       f"{store.path}; run it first (spt sweep ... `only_index` {config['index']} `finetune_only`)")
    return {"run_id": mine[-1].id, "status": "done", "reused": True}


def _is_interrupted(e: BaseException) -> bool:
    """Training stopped by a signal at a checkpoint (spt.train.signals.Interrupted): resumable, not failed."""
    from spt.train.signals import Interrupted

    return isinstance(e, Interrupted)


def run_config(store: Store, spec: SweepSpec, config: dict[str, Any], stages: Stages,
               progress: ProgressFn | None = None, finetune_only: bool = False) -> dict[str, Any]:
    """One configuration through its stages; never raises for a failing configuration."""
    emit = progress or (lambda *a, **k: None)
    out: dict[str, Any] = {
        "index": config["index"], "label": config_label(config), "defense": config["defense"],
        "lam": config["lam"], "poison": config["poison"], "seed": config["seed"], "key": config["key"],
        "run_id": None, "status": "running", "stage": None, "error": None, "reused": False,
        "trained": False, "evaluation_ids": [], "metrics": {},
    }

    def step_progress(stage: str) -> Callable[..., None]:
        def cb(*args: Any, **kwargs: Any) -> None:
            emit("step", index=config["index"], stage=stage, args=args, info=kwargs)
        return cb

    # finetune
    out["stage"] = "finetune"
    emit("stage", index=config["index"], stage="finetune")
    marker = new_id()
    try:
        ft = stages.finetune(store, spec, config, step_progress("finetune"))
    except Exception as e:  # noqa: BLE001 - a failing configuration must not stop the sweep
        err = _error_text(e)
        run_id = getattr(e, "run_id", None)
        if run_id is not None and _is_interrupted(e):  # SIGTERM/SIGINT: checkpointed and marked interrupted
            tag_run(store, run_id, spec, config)
            out.update(run_id=run_id, status="interrupted", error=err, exit_code=getattr(e, "exit_code", None))
            return out
        holder = getattr(e, "holder_run_id", None)
        if holder is not None:  # another live worker is training this configuration: not a failure
            tag_run(store, holder, spec, config)
            out.update(run_id=holder, status="skipped", error=err)
            return out
        if run_id is None:
            since = _runs_since(store, marker, config)
            run_id = since[-1].id if since else None
        if run_id is not None:
            _mark_failed(store, run_id, err)
            tag_run(store, run_id, spec, config)
        else:
            run_id = _failure_row(store, spec, config, err)
        out.update(run_id=run_id, status="failed", error=err)
        if not isinstance(e, SptError):
            out["traceback"] = traceback.format_exc(limit=8)
        return out
    run_id = ft.get("run_id")
    out["run_id"] = run_id
    if run_id is not None and ft.get("status") == "interrupted":  # SIGTERM: checkpointed; resumes on re-run
        tag_run(store, run_id, spec, config)
        out.update(status="interrupted", error=ft.get("error") or "interrupted (SIGTERM); re-run to resume")
        return out
    out["reused"] = bool(ft.get("reused"))
    out["trained"] = not out["reused"]
    out["finetune"] = {k: v for k, v in ft.items()
                       if k in ("status", "reused", "final_losses", "losses", "steps", "resumed_from_step")}
    if run_id is None or ft.get("status", "done") not in ("done", None):
        err = ft.get("error") or f"finetune ended with status {ft.get('status')!r}"
        if run_id is not None:
            _mark_failed(store, run_id, err)
            tag_run(store, run_id, spec, config)
        else:
            run_id = out["run_id"] = _failure_row(store, spec, config, err)
        out.update(status="failed", error=err)
        return out
    tag_run(store, run_id, spec, config)

    # evaluate → judge (not with finetune_only: a multi-GPU Slurm task runs them in a second, single process)
    if spec.evaluate and not finetune_only:
        for stage in ("evaluate", "judge") if spec.judges else ("evaluate",):
            out["stage"] = stage
            emit("stage", index=config["index"], stage=stage)
            try:
                if stage == "evaluate":
                    ev = stages.evaluate(store, spec, config, run_id, step_progress("evaluate"))
                    out["evaluation_ids"] = _evaluation_ids(ev)
                    out["reused"] = out["reused"] and bool(ev.get("reused"))
                else:
                    jd = stages.judge(store, spec, config, out["evaluation_ids"])
                    out["judge"] = {k: v for k, v in (jd or {}).items() if isinstance(v, (int, float, str))}
            except Exception as e:  # noqa: BLE001
                err = _error_text(e)
                tag_run(store, run_id, spec, config, error={"stage": stage, "error": err, "at": utcnow()})
                out.update(status="failed", error=err)
                if not isinstance(e, SptError):
                    out["traceback"] = traceback.format_exc(limit=8)
                out["metrics"] = run_metrics(store, run_id, out["evaluation_ids"] or None)
                return out
        tag_run(store, run_id, spec, config)  # clears errors of earlier attempts
    out["stage"] = None
    out["status"] = "reused" if out["reused"] else "done"
    out["metrics"] = run_metrics(store, run_id, out["evaluation_ids"] or None)
    return out


def select_configs(configs: list[dict[str, Any]], only_index: list[int] | int | None) -> list[dict[str, Any]]:
    if only_index is None:
        return configs
    wanted = [only_index] if isinstance(only_index, int) else list(only_index)
    bad = [i for i in wanted if not 0 <= i < len(configs)]
    if bad:
        raise SptError(f"`only_index` {bad[0]} is out of range: this sweep has {len(configs)} configurations "
                       f"(0-{len(configs) - 1})")
    return [configs[i] for i in sorted(set(wanted))]


def run_sweep(store: Store, spec: SweepSpec, progress: ProgressFn | None = None, *,
              stages: Stages | None = None, only_index: list[int] | int | None = None,
              frontier: bool = True, finetune_only: bool = False, evaluate_only: bool = False) -> dict[str, Any]:
    """Run every configuration (or those at `only_index`) and summarise; failures are recorded."""
    spec.validate()
    configs = select_configs(plan_sweep(spec), only_index)
    stages = stages or default_stages()
    if evaluate_only:  # a multi-GPU Slurm task: the finetune ran before, under accelerate launch (another world size)
        stages = Stages(_finished_finetune, stages.evaluate, stages.judge, stages.check)
    if stages.check is not None:
        stages.check(spec)
    emit = progress or (lambda *a, **k: None)
    emit("start", total=len(configs), sweep_id=sweep_id(spec), tag=sweep_tag(spec))
    results = []
    for config in configs:
        emit("config", index=config["index"], label=config_label(config))
        res = run_config(store, spec, config, stages, progress, finetune_only=finetune_only)
        results.append(res)
        emit("config_done", result=res)
        if res["status"] == "interrupted":
            break  # a signal asked the whole process to stop; a re-run resumes this configuration
    summary: dict[str, Any] = {
        "sweep_id": sweep_id(spec), "tag": sweep_tag(spec), "store": str(store.path),
        "n_configs": len(plan_sweep(spec)), "n_run": len(results),
        "n_done": sum(r["status"] in ("done", "reused") for r in results),
        "n_failed": sum(r["status"] == "failed" for r in results),
        "n_skipped": sum(r["status"] == "skipped" for r in results),
        "n_interrupted": sum(r["status"] == "interrupted" for r in results),
        "n_trained": sum(bool(r["trained"]) for r in results),
        "spec": spec.to_dict(), "configs": results, "frontier": None,
    }
    if frontier and spec.evaluate and not finetune_only:
        summary["frontier"] = sweep_frontier(store, spec)
    emit("end", summary=summary)
    return summary


def sweep_frontier(store: Store, spec: SweepSpec) -> dict[str, Any] | None:
    """The frontier over this sweep's runs, if spt.frontier is present and the metrics exist."""
    from spt.frontier.compute import compute_frontier

    try:
        res = compute_frontier(store, where=[f"tag={sweep_tag(spec)}"])
    except SptError as e:
        return {"error": str(e)}
    except Exception as e:  # noqa: BLE001 - the frontier is a bonus at the end of a sweep
        return {"error": _error_text(e)}
    return frontier_dict(res)


def frontier_dict(res: Any) -> dict[str, Any]:
    def mv(m: Any) -> Any:
        return getattr(m, "value", m)

    return {
        "x": getattr(res.x, "name", str(res.x)), "y": getattr(res.y, "name", str(res.y)),
        "x_direction": getattr(res.x, "direction", None), "y_direction": getattr(res.y, "direction", None),
        "points": [{"run_id": p.run_id, "defense": p.defense, "lam": p.lam, "poison_ratio": p.poison_ratio,
                    "seed": p.seed, "x": mv(p.x), "y": mv(p.y), "on_frontier": p.on_frontier}
                   for p in res.points],
        "groups": [{"name": g.name, "n_points": g.n_points, "n_frontier": g.n_frontier,
                    "hypervolume": g.hypervolume, "rank": g.rank} for g in res.groups],
        "excluded": dict(res.excluded),
    }
