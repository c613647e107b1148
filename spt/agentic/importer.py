"""`spt evaluate --trajectories DIR --format toolemu`: published agent runs into the store.

The folder holds one agent's ToolEmu trajectory files and their evaluator files (`spt.agentic.toolemu`).
They become:

- the cases as items of a dataset of kind `agentic` (the same items `spt data import all_cases.json
  --format toolemu` stores, so two models' imports pair case by case in `spt compare`);
- a run of kind `external` (`model_ref` = `--model-name`, default the agent name in the file names), with
  `--train-seed` as its seed, so imports of one model name with several seeds form the configuration
  `model:NAME`; its identity is the content of every file read, so importing again writes nothing;
- an evaluation (config kind `agentic`) with one generation per trajectory (the final answer as the
  response), its steps as `trajectory_step` rows, every evaluator reply as a judgment of a judge per
  (scale, evaluator, replicate), and the `agent_*` metrics (`spt.agentic.scores`).

Everything is read and checked before anything is written (a case in two files, an evaluator file whose
eval ids name no trajectory, a file that is not in the layout), then written in one transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spt.agentic.rubrics import SCALES
from spt.agentic.toolemu import TrajectoryFile, read_trajectory_file, trajectory_files
from spt.errors import SptError
from spt.store.engine import Store

IMPORT_VERSION = 1
FORMATS = ("toolemu",)


@dataclass
class TrajectoryImport:
    """What to import."""

    trajectories: str | Path
    format: str = "toolemu"
    model_name: str | None = None
    train_seed: int | None = None
    dataset_name: str = "toolemu"


@dataclass
class _Plan:
    spec: TrajectoryImport
    files: list[TrajectoryFile]
    model_name: str
    items: list[dict[str, Any]]
    file_hashes: dict[str, str]
    evaluators: dict[str, str]  # file name -> evaluator name
    emulators: list[str] = field(default_factory=list)


def plan_import(spec: TrajectoryImport) -> _Plan:
    """Read and check everything (nothing is written)."""
    from spt.store.ids import file_hash

    fmt = (spec.format or "").strip().lower()
    if fmt not in FORMATS:
        raise SptError(f"unknown trajectory `format` {spec.format!r}; use one of {', '.join(FORMATS)}")
    if spec.train_seed is not None and (isinstance(spec.train_seed, bool) or not isinstance(spec.train_seed, int)
                                        or spec.train_seed < 0):
        raise SptError(f"`train_seed` must be a non-negative integer (got {spec.train_seed!r})")
    files = [read_trajectory_file(p) for p in trajectory_files(spec.trajectories)]
    seen: dict[int, str] = {}
    items: dict[int, dict[str, Any]] = {}
    for tf in files:
        for traj, item, line in tf.trajectories:
            where = f"{tf.path.name}:{line}"
            if traj.case_idx in seen:
                raise SptError(f"case {traj.case_idx} is in {seen[traj.case_idx]} and {where}; one import holds one "
                               "trajectory per case (import other runs of the same agent as another --train-seed "
                               "or --model-name)")
            seen[traj.case_idx] = where
            items[traj.case_idx] = item
    agents = {tf.names["agent"] for tf in files if tf.names["agent"]}
    name = (spec.model_name or "").strip()
    if not name:
        if len(agents) == 1:
            name = agents.pop()
        elif len(agents) > 1:
            raise SptError(f"the files name {len(agents)} agents ({', '.join(sorted(agents))}); import one agent's "
                           "folder, or pass --model-name")
        else:
            name = Path(spec.trajectories).expanduser().resolve().name
    hashes: dict[str, str] = {}
    evaluators: dict[str, str] = {}
    for tf in files:
        hashes[tf.path.name] = file_hash(tf.path)
        for p in tf.evaluator_files.values():
            hashes[p.name] = file_hash(p)
        evaluators[tf.path.name] = tf.names["evaluator"] or "unknown"
    if not any(tf.evaluations for tf in files):
        raise SptError(f"{spec.trajectories}: no evaluator files beside the trajectories (*_eval_agent_safe.jsonl, "
                       "*_eval_agent_help_ignore_safety.jsonl); without them there is nothing to score")
    emulators = sorted({tf.names["emulator"] for tf in files if tf.names["emulator"]})
    return _Plan(spec, files, name, [items[k] for k in sorted(items)], hashes, evaluators, emulators)


def _judge_config(metric: str, evaluator: str, replicate: int) -> dict[str, Any]:
    scale = SCALES[metric]
    return {"backend": "imported", "rubric": scale.rubric, "scale": metric, "evaluator": evaluator,
            "replicate": replicate, "source": "toolemu"}


def import_trajectories(store: Store, spec: TrajectoryImport, plan: _Plan | None = None) -> dict[str, Any]:
    """Import a folder of trajectories (see module doc); returns a summary dict."""
    from sqlmodel import select

    from spt.agentic.scores import write_agentic_metrics
    from spt.data.items import dataset_id_for, store_items
    from spt.provenance import provenance
    from spt.store import content_id, new_id, queries, text_hash
    from spt.store.models import Evaluation, Generation, Judge, Judgment, Run, TrajectoryStep, utcnow

    plan = plan or plan_import(spec)
    ident_fields: dict[str, Any] = {"kind": "agentic-import", "v": IMPORT_VERSION, "model": plan.model_name,
                                    "files": sorted(plan.file_hashes.items()), "format": spec.format}
    if spec.train_seed is not None:
        ident_fields["train_seed"] = spec.train_seed
    run_ident = content_id(ident_fields)
    ds_id = dataset_id_for("agentic", plan.items)
    identity = content_id({"run": run_ident, "dataset": ds_id, "kind": "agentic"})
    with store.session() as s:
        existing = s.exec(select(Evaluation).where(Evaluation.identity == identity)).first()
    if existing is not None and existing.status == "done":
        return summary(store, existing.id, created=False)
    if spec.train_seed is not None:
        with store.session() as s:
            clash = s.exec(select(Run).where(Run.kind == "external", Run.model_ref == plan.model_name,
                                             Run.seed == spec.train_seed, Run.identity != run_ident)).first()
        if clash is not None:
            raise SptError(f"model {plan.model_name!r} seed {spec.train_seed} was already imported from other files "
                           f"(run {clash.id}); give these another --train-seed or --model-name")
    root = Path(spec.trajectories).expanduser().resolve()
    source = {"builder": "toolemu-trajectories", "path": str(root), "files": plan.file_hashes}
    ds_id = store_items(store, spec.dataset_name, "agentic", plan.items, source)
    now = utcnow()
    eval_config = {"kind": "agentic", "format": spec.format, "model_name": plan.model_name, "source": source,
                   "emulators": plan.emulators, "evaluators": sorted(set(plan.evaluators.values())),
                   "imported": True,
                   # what makes two agentic evaluations comparable (spt.store.selection.evaluation_settings):
                   # the cases, and who emulated the tools and scored the runs
                   "identity_fields": {"v": f"agentic-{IMPORT_VERSION}", "weights": f"external:{plan.model_name}",
                                       "dataset": ds_id, "split": "test", "limit": None,
                                       "emulators": plan.emulators,
                                       "evaluators": sorted(set(plan.evaluators.values()))}}
    with store.write() as s:
        found = queries.runs_with_identity(s, run_ident, kind="external")
        run = found[0] if found else None
        if run is None:
            run = Run(kind="external", model_ref=plan.model_name, base_model=plan.model_name, status="done",
                      identity=run_ident, seed=spec.train_seed,
                      config={"model_name": plan.model_name, "train_seed": spec.train_seed, "agentic": True,
                              "source": source},
                      provenance=provenance(source="toolemu-trajectories", source_path=str(root)), finished_at=now)
            s.add(run)
        ev = Evaluation(run_id=run.id, dataset_id=ds_id, split="test", identity=identity, config=eval_config,
                        status="running")
        s.add(ev)
        s.flush()
        judges: dict[str, Judge] = {}
        gens, steps, judgments = [], [], []
        for tf in plan.files:
            evaluator = plan.evaluators[tf.path.name]
            gid_of_line: dict[int, str] = {}
            for n, (traj, item, line) in enumerate(tf.trajectories):
                gid = new_id()
                gid_of_line[n] = gid
                gens.append({"id": gid, "evaluation_id": ev.id, "item_id": item["id"], "prompt": traj.prompt,
                             "response": traj.final_answer, "n_prompt_tokens": None, "n_new_tokens": None,
                             "latency_s": None, "finish_reason": "eos" if traj.finished else "length",
                             "meta": {"case_idx": traj.case_idx, "source_file": tf.path.name, "line": line,
                                      "n_tool_calls": traj.n_tool_calls, "finished": traj.finished,
                                      "emulator": tf.names["emulator"]},
                             "created_at": now})
                for r in traj.step_rows():
                    steps.append({"id": content_id({"generation": gid, "position": r["position"]}),
                                  "generation_id": gid, **r})
            for metric, rows in tf.evaluations.items():
                for er in rows:
                    cfg = _judge_config(metric, evaluator, er.replicate)
                    jid = content_id(cfg)
                    if jid not in judges:
                        judges[jid] = Judge(id=jid, name=f"toolemu:{evaluator}/{metric}#r{er.replicate}",
                                            backend="imported", model=evaluator, rubric=cfg["rubric"],
                                            rubric_version="toolemu", rubric_hash=None, config=cfg)
                    raw = json.dumps(er.raw, ensure_ascii=False, sort_keys=True)
                    rd = er.reading
                    judgments.append({
                        "id": new_id(), "judge_id": jid, "generation_id": gid_of_line[er.eval_id],
                        "cache_key": content_id({"judge": jid, "raw": text_hash(raw)}),
                        "status": "scored" if rd.score is not None else "unscored", "reason": rd.reason,
                        "score": float(rd.score) if rd.score is not None else None, "label": rd.label, "raw": raw,
                        "resolved_model": evaluator, "prompt_tokens": None, "completion_tokens": None,
                        "latency_s": None, "cost_usd": None, "attempts": 0, "superseded_by": None,
                        "created_at": now})
        for jid, j in judges.items():
            if s.get(Judge, jid) is None:
                s.add(j)
        s.flush()
        for table, rows in ((Generation, gens), (TrajectoryStep, steps), (Judgment, judgments)):
            for i in range(0, len(rows), 500):
                s.execute(table.__table__.insert(), rows[i:i + 500])
        evaluation_id = ev.id
    write_agentic_metrics(store, evaluation_id)
    return summary(store, evaluation_id, created=True)


def summary(store: Store, evaluation_id: str, *, created: bool) -> dict[str, Any]:
    """The import's result: ids, counts and the metric rows."""
    from sqlmodel import col, func, select

    from spt.eval.evaluate import stored_metrics
    from spt.store.models import Dataset, Evaluation, Generation, Run, TrajectoryStep

    with store.session() as s:
        ev = s.get(Evaluation, evaluation_id)
        run = s.get(Run, ev.run_id)
        ds = s.get(Dataset, ev.dataset_id) if ev.dataset_id else None
        n_traj = s.exec(select(func.count()).select_from(Generation)
                        .where(Generation.evaluation_id == evaluation_id)).one()
        n_steps = s.exec(select(func.count()).select_from(TrajectoryStep).join(
            Generation, col(Generation.id) == TrajectoryStep.generation_id)
            .where(Generation.evaluation_id == evaluation_id)).one()
    return {"evaluation_id": ev.id, "run_id": ev.run_id, "model_name": run.model_ref, "train_seed": run.seed,
            "created": created, "kind": "agentic", "dataset_id": ev.dataset_id, "dataset": ds.name if ds else None,
            "n_trajectories": int(n_traj), "n_steps": int(n_steps), "status": ev.status,
            "metrics": stored_metrics(store, evaluation_id)}
