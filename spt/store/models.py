"""The store's tables.

Ids are strings everywhere: UUIDv7 for events (`new_id`), `sha256:` content hashes for content
(`content_id`). Times are ISO-8601 UTC strings so that rows compare byte-for-byte across machines.
Anything a stage needs beyond these columns goes into the JSON columns (`config`, `meta`), not into
ad-hoc files. Changing a table means adding an alembic revision in `migrations/versions/`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, Index, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from spt.store.ids import new_id


def utcnow() -> str:
    """Current UTC time as an ISO-8601 string with microseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _json() -> Any:
    return Field(default=None, sa_type=JSON)


class Dataset(SQLModel, table=True):
    """A named, content-addressed collection of items (HarmOR build, task data, poison, imports)."""

    id: str = Field(primary_key=True)  # content_id of (kind, sorted member ids with splits)
    name: str = Field(index=True)
    kind: str  # harmor | task | harmful | benign | poison | external
    n_items: int = 0
    source: dict | None = _json()  # builder name, seed, parameters, source file and its hash
    meta: dict | None = _json()
    created_at: str = Field(default_factory=utcnow)


class Item(SQLModel, table=True):
    """One prompt with its reference response; shared by every dataset that contains it."""

    id: str = Field(primary_key=True)  # content_id of the item's content fields
    prompt: str
    response: str | None = None
    category: str | None = Field(default=None, index=True)
    label: str = Field(index=True)  # harmful | benign | task | poison
    pair_id: str | None = Field(default=None, index=True)
    template_id: str | None = None
    contrast_type: str | None = None
    sensitive_word: str | None = None
    answer: str | None = None  # the exact-match target for task items
    meta: dict | None = _json()


class DatasetItem(SQLModel, table=True):
    """Membership of an item in a dataset, with its split and a stable position."""

    __tablename__ = "dataset_item"
    dataset_id: str = Field(foreign_key="dataset.id", primary_key=True)
    item_id: str = Field(foreign_key="item.id", primary_key=True, index=True)
    split: str = Field(default="train", index=True)
    position: int = 0


class Run(SQLModel, table=True):
    """A model state produced by a stage: base model, alignment, task fine-tuning or a merge."""

    # One `running` row per identity: two planners racing on the same settings end with one run.
    __table_args__ = (Index("ux_run_identity_running", "identity", unique=True,
                            sqlite_where=text("status = 'running'")),)
    id: str = Field(default_factory=new_id, primary_key=True)
    kind: str  # base | align | finetune | merge
    parent_run_id: str | None = Field(default=None, foreign_key="run.id", index=True)
    model_ref: str  # what the user asked for (hub id, path, packaged name)
    base_model: str | None = None  # the root model of the lineage
    task: str | None = None
    defense: str | None = Field(default=None, index=True)
    lam: float | None = None
    poison_ratio: float | None = None
    seed: int | None = None
    lora: bool | None = None
    config: dict | None = _json()  # the full resolved configuration
    identity: str | None = Field(default=None, index=True)  # hash of everything that changes weights
    status: str = Field(default="pending", index=True)  # pending | running | done | failed | interrupted
    error: str | None = None
    provenance: dict | None = _json()  # versions, git commit, host, device, dtype, seeds
    tags: list | None = _json()
    notes: str | None = None
    created_at: str = Field(default_factory=utcnow)
    updated_at: str = Field(default_factory=utcnow)
    finished_at: str | None = None
    lease_owner: str | None = None  # "HOST:PID:START" of the process working on a running run
    lease_heartbeat: str | None = None  # renewed while it works; see spt.store.lease


class Checkpoint(SQLModel, table=True):
    """Weights saved by a run (adapter, full or merged), with where they are and their hash."""

    id: str = Field(default_factory=new_id, primary_key=True)
    run_id: str = Field(foreign_key="run.id", index=True)
    step: int = 0
    kind: str = "full"  # full | adapter | merged | reference
    path: str
    content_hash: str | None = None
    is_final: bool = False
    meta: dict | None = _json()  # chat template hash, base/adapter hashes, dtype, optimizer state path
    created_at: str = Field(default_factory=utcnow)


class TrainLog(SQLModel, table=True):
    """Per-step training measurements (task loss, alignment loss, lr, tokens/s)."""

    __tablename__ = "train_log"
    id: str = Field(default_factory=new_id, primary_key=True)
    run_id: str = Field(foreign_key="run.id", index=True)
    step: int
    name: str
    value: float
    created_at: str = Field(default_factory=utcnow)


class Evaluation(SQLModel, table=True):
    """Generations and losses of one model state on one dataset split under one configuration."""

    # One `running` row per identity (migration 0005): two processes starting the same evaluation end
    # with one row; the second waits for, or adopts, the first's work (see spt.store.lease).
    __table_args__ = (Index("ux_evaluation_identity_running", "identity", unique=True,
                            sqlite_where=text("status = 'running'")),)
    id: str = Field(default_factory=new_id, primary_key=True)
    run_id: str = Field(foreign_key="run.id", index=True)
    checkpoint_id: str | None = Field(default=None, foreign_key="checkpoint.id")
    dataset_id: str | None = Field(default=None, foreign_key="dataset.id")
    split: str | None = None
    task: str | None = None
    identity: str = Field(index=True)  # weights + dataset + generation config + preset
    refusal_preset: str | None = None
    config: dict | None = _json()
    status: str = "running"  # running | done | failed
    error: str | None = None
    created_at: str = Field(default_factory=utcnow)
    finished_at: str | None = None
    # Added by migration 0005 (so last): the process working on a running evaluation, renewed while it works
    lease_owner: str | None = None
    lease_heartbeat: str | None = None


class Generation(SQLModel, table=True):
    """One model response to one item within an evaluation."""

    __table_args__ = (UniqueConstraint("evaluation_id", "item_id"),)
    id: str = Field(default_factory=new_id, primary_key=True)
    evaluation_id: str = Field(foreign_key="evaluation.id", index=True)
    item_id: str = Field(foreign_key="item.id", index=True)
    prompt: str  # the prompt as sent (before the chat template)
    response: str
    n_prompt_tokens: int | None = None
    n_new_tokens: int | None = None
    latency_s: float | None = None
    finish_reason: str | None = None  # eos | length
    meta: dict | None = _json()
    created_at: str = Field(default_factory=utcnow)


class TrajectoryStep(SQLModel, table=True):
    """One step of an agent trajectory (migration 0006): the generation holds the final answer.

    `id` is the content id of (generation, position), so importing the same trajectory twice is a no-op.
    The final step, when the agent finished, has `tool` None and holds the agent's closing text.
    """

    __tablename__ = "trajectory_step"
    __table_args__ = (UniqueConstraint("generation_id", "position"),)
    id: str = Field(primary_key=True)
    generation_id: str = Field(foreign_key="generation.id", index=True)
    position: int
    thought: str | None = None  # the agent's text for this step (Thought / Action / Action Input)
    tool: str | None = Field(default=None, index=True)
    tool_input: str | None = None
    observation: str | None = None  # what the (emulated) tool returned
    meta: dict | None = _json()  # e.g. the emulator's reasoning


class Judge(SQLModel, table=True):
    """A judge configuration: backend, model, rubric (by hash) and settings that change verdicts."""

    id: str = Field(primary_key=True)  # content_id of the configuration
    name: str = Field(index=True)  # e.g. keyword:spt, openai:gpt-4o-mini/harmfulness
    backend: str  # keyword | openai | hf
    model: str | None = None
    rubric: str | None = None
    rubric_version: str | None = None
    rubric_hash: str | None = None
    config: dict | None = _json()
    created_at: str = Field(default_factory=utcnow)


class Judgment(SQLModel, table=True):
    """One judge verdict on one generation; unscored verdicts keep their reason and raw reply."""

    # One current judgment per (judge, generation) (migration 0005): a rejudge supersedes the old row
    # before inserting the new one, so a race or a double run cannot leave two current verdicts.
    __table_args__ = (Index("ix_judgment_judge_generation", "judge_id", "generation_id"),
                      Index("ux_judgment_current", "judge_id", "generation_id", unique=True,
                            sqlite_where=text("superseded_by IS NULL")))
    id: str = Field(default_factory=new_id, primary_key=True)
    judge_id: str = Field(foreign_key="judge.id", index=True)
    generation_id: str = Field(foreign_key="generation.id", index=True)
    cache_key: str = Field(index=True)  # judge hash + rubric hash + prompt hash + response hash
    status: str  # scored | unscored
    reason: str | None = None  # parse_failure | out_of_range | api_error | judge_refused | timeout
    score: float | None = None
    label: str | None = None
    raw: str | None = None
    resolved_model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    cost_usd: float | None = None
    attempts: int | None = None
    superseded_by: str | None = None  # set when --rejudge adds a newer judgment (history kept)
    created_at: str = Field(default_factory=utcnow)


class Metric(SQLModel, table=True):
    """A number with its sample size, unscored count and confidence interval.

    `id` is the content id of (evaluation, judge, name, category, preset), so recomputing a metric
    updates the same row and importing the same metric twice is a no-op.
    """

    __table_args__ = (Index("ix_metric_run_name", "run_id", "name"),)
    id: str = Field(primary_key=True)
    run_id: str | None = Field(default=None, foreign_key="run.id")
    evaluation_id: str | None = Field(default=None, foreign_key="evaluation.id", index=True)
    judge_id: str | None = Field(default=None, foreign_key="judge.id")
    name: str = Field(index=True)
    category: str = "all"
    preset: str | None = None  # refusal preset or rubric that produced the number
    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int = 0
    n_unscored: int = 0
    meta: dict | None = _json()
    created_at: str = Field(default_factory=utcnow)
    # Added by migration 0003 (so last): clopper-pearson | wilson | cluster-bootstrap | t-across-seeds; None: legacy
    ci_method: str | None = None


class ImportLog(SQLModel, table=True):
    """Where imported rows came from: source path, its content hash, time and per-table counts."""

    __tablename__ = "import_log"
    id: str = Field(default_factory=new_id, primary_key=True)
    source_path: str
    source_hash: str
    source_schema: str | None = None
    on_conflict: str = "ignore"
    counts: dict | None = _json()
    imported_at: str = Field(default_factory=utcnow)
    # Added by migration 0005 (so last): imports commit in chunks; an unfinished row (finished_at None)
    # is resumed by the next import of the same source. progress: the chunk cursor per table.
    finished_at: str | None = None
    progress: dict | None = _json()


class RunAudit(SQLModel, table=True):
    """Every manual change of run metadata (`spt runs set`), with the previous value and time."""

    __tablename__ = "run_audit"
    id: str = Field(default_factory=new_id, primary_key=True)
    run_id: str = Field(foreign_key="run.id", index=True)
    key: str
    old_value: str | None = None
    new_value: str | None = None
    changed_at: str = Field(default_factory=utcnow)


# Tables in foreign-key order: parents before children (import merges in this order).
TABLES: list[type[SQLModel]] = [
    Dataset, Item, DatasetItem, Run, Checkpoint, TrainLog, Evaluation, Generation, TrajectoryStep,
    Judge, Judgment, Metric, RunAudit, ImportLog,
]
