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
import re
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spt.errors import SptError
from spt.metrics import KEY_METRICS
from spt.progress import ProgressFn, report, within
from spt.store import queries
from spt.store.engine import Store
from spt.store.ids import new_id
from spt.store.models import Run, utcnow
from spt.sweep.plan import SweepSpec, config_label, plan_sweep, sweep_id, sweep_tag

STAGES_ENV = "SPT_SWEEP_STAGES"

if TYPE_CHECKING:
    from spt.eval.evaluate import EvaluateResult
    from spt.frontier.compute import FrontierResult
    from spt.judge.result import JudgeResult
    from spt.train.result import FinetuneResult



@dataclass
class Stages:
    """The three stages a configuration goes through, returning the library's own results.

    - `finetune(store, spec, config, progress) -> FinetuneResult`
    - `evaluate(store, spec, config, run_id, progress) -> EvaluateResult`
    - `judge(store, spec, config, evaluation_ids) -> JudgeResult`

    `progress` is a `spt.progress.ProgressFn` (or None). A stage raises on failure (SptError for user
    errors); an exception carrying a `run_id` attribute says which run row it already wrote.
    """

    finetune: Callable[..., FinetuneResult]
    evaluate: Callable[..., EvaluateResult]
    judge: Callable[..., JudgeResult]
    check: Callable[[SweepSpec], None] | None = None  # raises SptError for a spec no configuration can run


@dataclass
class ConfigResult:
    """One configuration of a sweep after its stages.

    status: done (all stages ran now or partly now), reused (everything existed), failed (`stage` and
    `error` say where and why), skipped (another live worker holds its training), interrupted (a signal
    stopped training at a checkpoint; a re-run resumes it, `exit_code` is 128 + the signal).
    `metrics`: the run's key metrics after the configuration (from this sweep's evaluations).
    """

    index: int
    label: str
    defense: str
    lam: float | None
    poison: float | None
    seed: int | None
    key: str
    run_id: str | None = None
    status: str = "running"
    stage: str | None = None
    error: str | None = None
    traceback: str | None = None
    exit_code: int | None = None
    reused: bool = False
    trained: bool = False
    evaluation_ids: list[str] = field(default_factory=list)
    metrics: dict[str, float | None] = field(default_factory=dict)
    finetune: FinetuneResult | None = None
    judge: JudgeResult | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SweepResult:
    """A sweep's outcome: counts by status, each configuration, and the frontier over its runs.

    `frontier` is None when the sweep evaluated nothing or the frontier was not asked for;
    `frontier_error` says why it could not be computed (e.g. no run has both metrics yet).
    """

    sweep_id: str
    tag: str
    store: str
    n_configs: int
    spec: dict[str, Any]
    configs: list[ConfigResult]
    frontier: FrontierResult | None = None
    frontier_error: str | None = None

    def _count(self, *statuses: str) -> int:
        return sum(c.status in statuses for c in self.configs)

    @property
    def n_run(self) -> int:
        return len(self.configs)

    @property
    def n_done(self) -> int:
        return self._count("done", "reused")

    @property
    def n_failed(self) -> int:
        return self._count("failed")

    @property
    def n_skipped(self) -> int:
        return self._count("skipped")

    @property
    def n_interrupted(self) -> int:
        return self._count("interrupted")

    @property
    def n_trained(self) -> int:
        return sum(c.trained for c in self.configs)

    def to_dict(self) -> dict[str, Any]:
        from spt.frontier.export import to_dict as frontier_dict

        return {"sweep_id": self.sweep_id, "tag": self.tag, "store": self.store, "n_configs": self.n_configs,
                "n_run": self.n_run, "n_done": self.n_done, "n_failed": self.n_failed, "n_skipped": self.n_skipped,
                "n_interrupted": self.n_interrupted, "n_trained": self.n_trained, "spec": self.spec,
                "configs": [c.to_dict() for c in self.configs],
                "frontier": frontier_dict(self.frontier, all_points=True) if self.frontier else None,
                "frontier_error": self.frontier_error}


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


def _real_finetune(store: Store, spec: SweepSpec, config: dict[str, Any],
                   progress: ProgressFn | None = None) -> FinetuneResult:
    from spt.train import FinetuneConfig, finetune

    values = finetune_config_values(spec, config)
    if config.get("align"):  # two-stage: start from the variant's alignment run (trained once, then reused)
        from spt.sweep.align_stage import ensure_alignment

        values.pop("model", None)
        values["from_run"] = ensure_alignment(store, spec.model, spec.train, config["align"], spec.align_max_steps,
                                              within(progress, "alignment run"))
    values.setdefault("resume", True)  # an interrupted configuration continues from its last checkpoint
    values = _dataclass_kwargs(FinetuneConfig, values, "spt finetune")
    cfg = FinetuneConfig(**values)
    return finetune(store, cfg, progress=progress)


def _real_evaluate(store: Store, spec: SweepSpec, config: dict[str, Any], run_id: str,
                   progress: ProgressFn | None = None) -> EvaluateResult:
    from spt.eval import EvaluateConfig, evaluate

    values = _dataclass_kwargs(EvaluateConfig, dict(spec.eval_options), "spt evaluate")
    return evaluate(store, run_id, EvaluateConfig(**values), progress=progress)  # task: the run's own task


def _real_judge(store: Store, spec: SweepSpec, config: dict[str, Any], evaluation_ids: list[str]) -> JudgeResult:
    from spt.judge import JudgeOptions, judge_evaluations

    options = JudgeOptions(judges=list(spec.judges), rubric=spec.rubric or "refusal")
    return judge_evaluations(store, evaluation_ids, options)


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
        values = _dataclass_kwargs(FinetuneConfig, finetune_config_values(spec, config), "spt finetune (`set`)")
        if config.get("align"):  # the task stage starts from the alignment run (not trained yet)
            values.pop("model", None)
            values["from_run"] = "<alignment run>"
        try:
            FinetuneConfig(**values).resolve()
        except SptError as e:
            raise SptError(f"configuration [{config['index']}] {config_label(config)}: {e}") from None
    if spec.evaluate:
        values = _dataclass_kwargs(EvaluateConfig, dict(spec.eval_options), "spt evaluate (`eval_set`)")
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


def stored_task_name(spec: SweepSpec) -> str | None:
    """The task the sweep names that must already be a dataset of the store (not built in, not a file)."""
    task = spec.task or spec.train.get("task")
    if isinstance(task, str) and not task.startswith("builtin:") and not Path(task).expanduser().exists():
        return task
    return None


def check_stored_data(store: Store | None, spec: SweepSpec) -> None:
    """A stored task the sweep names is in `store` (else every configuration would fail on it); `None`:
    the store does not exist yet, so it holds no such task."""
    from spt.train.data import resolve_task

    task = stored_task_name(spec)
    if task is None:
        return
    if store is None:
        raise SptError(f"task dataset {task!r} is not in the store, which does not exist yet; use builtin:arithmetic, "
                       "or import data with `spt data import` and pass its name or id")
    resolve_task(store, task, build=False)


def _check_data_refs(spec: SweepSpec) -> None:
    """`builtin:` data names exist (a stored task name is checked against the store: `check_stored_data`)."""
    from spt.data import BUILTIN_POISON, BUILTIN_TASKS

    task = spec.task or spec.train.get("task")
    if isinstance(task, str) and task.startswith("builtin:") and task not in BUILTIN_TASKS:
        raise SptError(f"`task` {task!r} is not a built-in task; use {', '.join(BUILTIN_TASKS)} or a stored dataset")
    if isinstance(task, str) and not task.startswith("builtin:") and not Path(task).expanduser().exists() \
            and not re.fullmatch(r"[\w.:@+-]+", task):
        raise SptError(f"`task` {task!r} is neither a built-in task, a file nor a dataset name; use "
                       f"{', '.join(BUILTIN_TASKS)}, a stored dataset (`spt data list`) or a data file")
    if spec.rubric:
        from spt.judge.rubrics import get_rubric

        get_rubric(spec.rubric)  # an unknown rubric fails every judge stage
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
    from spt.env import env_stages

    parsed = env_stages(STAGES_ENV)
    if parsed:
        ref = os.environ[STAGES_ENV]
        module, attr = parsed
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


def _finished_finetune(store: Store, spec: SweepSpec, config: dict[str, Any],
                       progress: ProgressFn | None = None) -> FinetuneResult:
    """The done run this sweep already trained for `config` (its tag and key), instead of training."""
    tag = sweep_tag(spec)
    rows = queries.runs_with_status(store, "done")
    mine = [r for r in rows
            if tag in (r.tags or []) and ((r.config or {}).get("sweep") or {}).get("key") == config["key"]]
    if not mine:
        raise SptError(f"no finished finetune of configuration [{config['index']}] {config_label(config)} in "
                       f"{store.path}; run it first (spt sweep ... `only_index` {config['index']} `finetune_only`)")
    from spt.train.result import reused_result

    return reused_result(store, mine[-1].id)


def _is_interrupted(e: BaseException) -> bool:
    """Training stopped by a signal at a checkpoint (spt.signals.Interrupted): resumable, not failed."""
    from spt.signals import Interrupted

    return isinstance(e, Interrupted)


def run_config(store: Store, spec: SweepSpec, config: dict[str, Any], stages: Stages,
               progress: ProgressFn | None = None, finetune_only: bool = False) -> ConfigResult:
    """One configuration through its stages; never raises for a failing configuration."""
    out = ConfigResult(index=config["index"], label=config_label(config), defense=config["defense"],
                       lam=config["lam"], poison=config["poison"], seed=config["seed"], key=config["key"])
    where = f"[{config['index']}] {out.label}"

    def fail(run_id: str | None, stage: str, e: BaseException) -> ConfigResult:
        out.status, out.error = "failed", _error_text(e)
        if not isinstance(e, SptError):
            out.traceback = traceback.format_exc(limit=8)
        if stage != "finetune":
            tag_run(store, run_id, spec, config, error={"stage": stage, "error": out.error, "at": utcnow()})
            out.metrics = run_metrics(store, run_id, out.evaluation_ids or None)
        return out

    # finetune
    out.stage = "finetune"
    marker = new_id()
    try:
        ft = stages.finetune(store, spec, config, within(progress, where, "finetune"))
    except Exception as e:  # noqa: BLE001 - a failing configuration must not stop the sweep
        run_id = getattr(e, "run_id", None)
        if run_id is not None and _is_interrupted(e):  # SIGTERM/SIGINT: checkpointed and marked interrupted
            tag_run(store, run_id, spec, config)
            out.run_id, out.status, out.error = run_id, "interrupted", _error_text(e)
            out.exit_code = getattr(e, "exit_code", None)
            return out
        holder = getattr(e, "holder_run_id", None)
        if holder is not None:  # another live worker is training this configuration: not a failure
            tag_run(store, holder, spec, config)
            out.run_id, out.status, out.error = holder, "skipped", _error_text(e)
            return out
        if run_id is None:
            since = _runs_since(store, marker, config)
            run_id = since[-1].id if since else None
        if run_id is not None:
            _mark_failed(store, run_id, _error_text(e))
            tag_run(store, run_id, spec, config)
        else:
            run_id = _failure_row(store, spec, config, _error_text(e))
        out.run_id = run_id
        return fail(run_id, "finetune", e)
    run_id = out.run_id = ft.run_id
    out.finetune = ft
    if ft.status != "done":
        err = f"finetune ended with status {ft.status!r}"
        _mark_failed(store, run_id, err)
        tag_run(store, run_id, spec, config)
        out.status, out.error = "failed", err
        return out
    out.reused = ft.reused
    out.trained = not ft.reused
    tag_run(store, run_id, spec, config)

    # evaluate → judge (not with finetune_only: a multi-GPU Slurm task runs them in a second, single process)
    if spec.evaluate and not finetune_only:
        for stage in ("evaluate", "judge") if spec.judges else ("evaluate",):
            out.stage = stage
            try:
                if stage == "evaluate":
                    ev = stages.evaluate(store, spec, config, run_id, within(progress, where, "evaluate"))
                    out.evaluation_ids = [ev.evaluation_id]
                    out.reused = out.reused and ev.reused
                else:
                    out.judge = stages.judge(store, spec, config, out.evaluation_ids)
            except Exception as e:  # noqa: BLE001
                return fail(run_id, stage, e)
        tag_run(store, run_id, spec, config)  # clears errors of earlier attempts
    out.stage = None
    out.status = "reused" if out.reused else "done"
    out.metrics = run_metrics(store, run_id, out.evaluation_ids or None)
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
              on_config: Callable[[ConfigResult], None] | None = None, stages: Stages | None = None,
              only_index: list[int] | int | None = None, frontier: bool = True, finetune_only: bool = False,
              evaluate_only: bool = False) -> SweepResult:
    """Run every configuration (or those at `only_index`) and summarise; failures are recorded.

    `progress` gets `Progress("sweep", done, total, "configurations", label=...)` as configurations start
    and finish, and each stage's own reports within the scope `("[index] label", stage)`; `on_config`
    gets each configuration's result as soon as it is known.
    """
    spec.validate()
    configs = select_configs(plan_sweep(spec), only_index)
    stages = stages or default_stages()
    if evaluate_only:  # a multi-GPU Slurm task: the finetune ran before, under accelerate launch (another world size)
        stages = Stages(_finished_finetune, stages.evaluate, stages.judge, stages.check)
    if stages.check is not None:
        stages.check(spec)
    result = SweepResult(sweep_id=sweep_id(spec), tag=sweep_tag(spec), store=str(store.path),
                         n_configs=len(plan_sweep(spec)), spec=spec.to_dict(), configs=[])
    for i, config in enumerate(configs):
        report(progress, "sweep", i, len(configs), "configurations", label=config_label(config))
        res = run_config(store, spec, config, stages, progress, finetune_only=finetune_only)
        result.configs.append(res)
        report(progress, "sweep", i + 1, len(configs), "configurations", label=config_label(config))
        if on_config is not None:
            on_config(res)
        if res.status == "interrupted":
            break  # a signal asked the whole process to stop; a re-run resumes this configuration
    if frontier and spec.evaluate and not finetune_only:
        result.frontier, result.frontier_error = sweep_frontier(store, spec)
    return result


def sweep_frontier(store: Store, spec: SweepSpec) -> tuple[FrontierResult | None, str | None]:
    """The frontier over this sweep's runs, or why there is none (no run has both metrics yet, say)."""
    from spt.frontier.compute import compute_frontier

    try:
        return compute_frontier(store, where=[f"tag={sweep_tag(spec)}"]), None
    except SptError as e:
        return None, str(e)
    except Exception as e:  # noqa: BLE001 - the frontier is a bonus at the end of a sweep
        return None, _error_text(e)
