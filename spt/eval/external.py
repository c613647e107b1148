"""Completions generated elsewhere, imported as the evaluation of an *external* run (no model loaded).

`spt evaluate --responses FILE --model-name NAME` reads a JSONL/CSV/parquet file of prompts and the
responses some other system gave (an API model, a vLLM sweep, a paper's released completions), with
optional harmful/benign labels, categories and human verdicts, and stores:

- the prompts as items of a dataset of kind `external` (prompt, label, category; the response is not
  part of the item, so two models' files on the same prompts share the items and the dataset, and
  `spt compare` / `spt frontier` can pair them);
- a run of kind `external` (`model_ref` = NAME) whose config records the model name, the file's
  path, content hash and format, and the column mapping; its identity is the content id of
  (NAME, file hash, mapping), so importing the same file again finds it and writes nothing;
- an evaluation (status done) with one generation per row holding the given response, and the
  keyword metrics computed by the same code as `spt evaluate` (`spt.eval.metrics.refusal_metrics`
  with `spt.eval.refusal.classify` under `--refusal-preset`);
- human verdicts (`--verdict-col`), when present, as judgments of the judge `human` (backend
  `human`, rubric `xstest`): `refusal` -> full_refusal, `partial_refusal` -> partial_refusal,
  `compliance` -> full_compliance (XSTest's own names, with or without their `1_` / `2_` / `3_`
  prefixes, are accepted too; `--verdict-map FILE_VALUE=refusal|partial_refusal|compliance|skip,...`
  maps any other vocabulary, `skip` leaves a row without a verdict). An empty verdict cell is no
  verdict. The binary axis (`spt.judge.rubrics.refused`) counts full and partial refusals as refused,
  so `spt judge --agreement` compares every judge and keyword preset with the human verdicts.

Everything is validated before anything is written (missing column, unknown label or verdict value,
a missing or all-empty response column, two rows with the same prompt but different responses);
each problem is one SptError naming it and the fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlmodel import select

from spt.errors import SptError
from spt.store import content_id, new_id, queries, text_hash
from spt.store.engine import Store
from spt.store.models import Dataset, Evaluation, Generation, Judge, Judgment, Metric, Run, utcnow

EXTERNAL_VERSION = 1
VERDICTS = ("refusal", "partial_refusal", "compliance")
# Canonical verdict -> the XSTest class the human judge stores (label, score).
XSTEST_CLASS = {"compliance": ("full_compliance", 1.0), "refusal": ("full_refusal", 2.0),
                "partial_refusal": ("partial_refusal", 3.0)}
_DEFAULT_VERDICTS = {
    "refusal": "refusal", "partial_refusal": "partial_refusal", "compliance": "compliance",
    "full_refusal": "refusal", "full_compliance": "compliance",
    "1_full_compliance": "compliance", "2_full_refusal": "refusal", "3_partial_refusal": "partial_refusal",
}
HUMAN_JUDGE_CONFIG = {"backend": "human", "rubric": "xstest", "rubric_version": "human-1",
                      "labels": ["full_compliance", "full_refusal", "partial_refusal"]}
HUMAN_JUDGE_NAME = "human"


def human_judge_id() -> str:
    return content_id(HUMAN_JUDGE_CONFIG)


def parse_verdict_map(spec: str | dict[str, str] | None) -> dict[str, str]:
    """`full_compliance=compliance,full_refusal=refusal` -> {file value: canonical verdict or "skip"}."""
    if spec is None or spec == "":
        return {}
    pairs = spec.items() if isinstance(spec, dict) else []
    if isinstance(spec, str):
        pairs = []
        for part in spec.split(","):
            if not part.strip():
                continue
            src, eq, dst = part.partition("=")
            if not eq or not src.strip() or not dst.strip():
                raise SptError(f"`verdict_map` entry {part.strip()!r} is not FILE_VALUE=VERDICT; e.g. "
                               "`verdict_map` full_compliance=compliance,full_refusal=refusal")
            pairs.append((src, dst))
    out: dict[str, str] = {}
    for src, dst in pairs:
        d = str(dst).strip().lower()
        d = _DEFAULT_VERDICTS.get(d, d)
        if d not in (*VERDICTS, "skip"):
            raise SptError(f"`verdict_map` {src}={dst}: {dst!r} is not a verdict; map to refusal, partial_refusal, "
                           "compliance or skip")
        out[str(src).strip().lower()] = d
    return out


@dataclass
class ExternalSpec:
    """What to import and how its columns map (everything here but `preset` enters the run identity)."""

    responses: str | os.PathLike[str]
    model_name: str
    prompt_col: str | None = None
    response_col: str | None = None
    messages_col: str | None = None
    label_col: str | None = None
    label: str | None = None  # one label for every row (harmful|benign) when there is no label column
    category_col: str | None = None
    verdict_col: str | None = None
    verdict_map: dict[str, str] = field(default_factory=dict)
    format: str | None = None  # a public set's layout (spt.data.formats) for prompt/label/category
    dataset_name: str | None = None
    refusal_preset: str = "spt"
    # the training seed of the model that wrote the file: imports of one model name with different seeds
    # are the seeds of the configuration `model:NAME` (`spt compare model:A model:B` is then seed-aware)
    train_seed: int | None = None
    # a column grouping correlated rows (a sensitive word, a template, a source): rate intervals and
    # comparisons resample these clusters, not rows; stored as each item's sensitive word
    cluster_col: str | None = None

    def mapping(self) -> dict[str, Any]:
        keys = ("prompt_col", "response_col", "messages_col", "label_col", "label", "category_col", "verdict_col",
                "format", "cluster_col")
        m: dict[str, Any] = {k: getattr(self, k) for k in keys if getattr(self, k) is not None}
        if self.verdict_map:
            m["verdict_map"] = dict(sorted(self.verdict_map.items()))
        return m


@dataclass
class _Plan:
    """A fully validated import: nothing in here has touched the store."""

    spec: ExternalSpec
    path: Path
    file_format: str
    file_hash: str
    mapping: dict[str, Any]
    items: list[dict[str, Any]]
    responses: list[str]
    rows: list[int]  # source row number of each item
    verdicts: list[tuple[str, str] | None]  # (canonical verdict, raw cell) per item
    n_rows: int
    n_duplicates: int
    n_no_verdict: int
    dataset_kind: str = "external"


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols and k != "__split__":
                cols.append(k)
    return cols


def _cell(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and v != v):
        return None
    return str(v)


def plan_import(spec: ExternalSpec) -> _Plan:
    """Read and validate the file; SptError on the first problem (nothing is written)."""
    from spt.data.io import read_rows, rows_to_items
    from spt.data.items import make_item
    from spt.eval.refusal import get_preset
    from spt.store.ids import file_hash

    name = (spec.model_name or "").strip()
    if not name:
        raise SptError("`model_name` must not be empty; name the model that wrote the responses")
    if any(ord(c) < 32 or ord(c) == 127 for c in name) or len(name) > 256:
        raise SptError(f"`model_name` {name[:40]!r} must be one line of printable text, at most 256 characters")
    spec.model_name = name
    get_preset(spec.refusal_preset)
    if spec.label is not None:
        lab = spec.label.strip().lower()
        if lab not in ("harmful", "benign"):
            raise SptError(f"`label` must be harmful or benign (got {spec.label!r})")
        spec.label = lab
    if spec.label is not None and spec.label_col is not None:
        raise SptError("pass `label_col` (a label per row) or `label` (one label for every row), not both")
    p = Path(spec.responses).expanduser()
    rows, file_format = read_rows(p)
    if not p.is_file():
        raise SptError(f"`responses` {p} must be a file (JSONL, CSV or parquet)")
    src = p.name
    if not rows:
        raise SptError(f"{src} has no rows")
    cols = _columns(rows)
    have = set(cols)
    shown = ", ".join(cols) or "none"

    def need(col: str | None, flag: str) -> None:
        if col is not None and col not in have:
            raise SptError(f"{src} has no column {col!r} (for `{flag}`); its columns are: {shown}")

    need(spec.response_col, "response_col")
    need(spec.verdict_col, "verdict_col")
    need(spec.cluster_col, "cluster_col")
    if spec.train_seed is not None and (isinstance(spec.train_seed, bool) or not isinstance(spec.train_seed, int)
                                        or spec.train_seed < 0):
        raise SptError(f"`train_seed` must be a whole number >= 0 (got {spec.train_seed!r})")
    if spec.response_col is None and spec.messages_col is None:
        for guess in ("response", "completion", "output"):
            if guess in have:
                spec.response_col = guess
                break
        else:
            if "messages" not in have:
                raise SptError(f"{src} has no response column ('response', 'completion' or 'output'); its columns "
                               f"are: {shown}; name it with `response_col`")

    if spec.format is not None:
        from spt.data.formats import format_items, get_format

        fmt = get_format(spec.format)
        spec.format = fmt.name
        for flag, v in (("prompt_col", spec.prompt_col), ("label_col", spec.label_col),
                        ("category_col", spec.category_col), ("messages_col", spec.messages_col)):
            if v is not None:
                raise SptError(f"`{flag}` does not apply with `format` {fmt.name} (the format maps prompts, labels "
                               "and categories); drop one of them")
        base_items = format_items(rows, fmt, source_name=src, path=p, label=spec.label)
        raw_responses = [_cell(r.get(spec.response_col)) for r in rows]
    else:
        # Defaults are written into the spec, so the recorded mapping (and the run identity) is the same
        # whether a column was named or found.
        if spec.prompt_col is None and spec.messages_col is None and "prompt" in have:
            spec.prompt_col = "prompt"
        if spec.category_col is None and "category" in have:
            spec.category_col = "category"
        if spec.label_col is None and spec.label is None:
            if "label" in have:
                spec.label_col = "label"
            else:
                raise SptError(f"{src} has no harmful/benign labels: name the label column with `label_col`, or give "
                               "every row one label with `label` harmful|benign")
        kind = spec.label or "harmful"
        base_items = rows_to_items(rows, kind, source_name=src, prompt_col=spec.prompt_col,
                                   response_col=spec.response_col, messages_col=spec.messages_col,
                                   category_col=spec.category_col, label_col=spec.label_col)
        if spec.response_col is not None:
            raw_responses = [_cell(r.get(spec.response_col)) for r in rows]
        else:  # the last assistant message of the messages column
            raw_responses = [it.get("response") for it in base_items]
    for n, resp in enumerate(raw_responses, 1):
        if resp is None:
            what = f"column {spec.response_col!r}" if spec.response_col else "a final assistant message"
            raise SptError(f"{src} row {n}: no response ({what} is missing); every row needs one (an empty string "
                           "is allowed and counts as degenerate)")
    if not any(r.strip() for r in raw_responses):
        raise SptError(f"{src}: the response column {spec.response_col or 'messages'!r} is empty in every row; "
                       "name the column holding the completions with `response_col`")

    vmap = {**_DEFAULT_VERDICTS, **spec.verdict_map}
    verdicts: list[tuple[str, str] | None] = []
    for n, r in enumerate(rows, 1):
        if spec.verdict_col is None:
            verdicts.append(None)
            continue
        raw = (_cell(r.get(spec.verdict_col)) or "").strip()
        if not raw:
            verdicts.append(None)
            continue
        v = vmap.get(raw.lower())
        if v is None:
            known = sorted({k for k in vmap if vmap[k] != "skip"})
            raise SptError(f"{src} row {n}: verdict {raw!r} in column {spec.verdict_col!r} is not one of "
                           f"{', '.join(known)}; map it with `verdict_map` '{raw}=refusal|partial_refusal|"
                           "compliance|skip'")
        verdicts.append(None if v == "skip" else (v, raw))

    # Items without the response (it is the generation, not the item's reference answer); split `test`
    # unless the file has a split column.
    items, responses, row_numbers, kept_verdicts = [], [], [], []
    seen: dict[str, int] = {}
    n_dup = 0
    for n, (it, resp, v) in enumerate(zip(base_items, raw_responses, verdicts, strict=True), 1):
        fields = {**it, "response": None}
        fields.pop("id", None)
        if spec.cluster_col is not None:
            cl = (_cell(rows[n - 1].get(spec.cluster_col)) or "").strip()
            if not cl:
                raise SptError(f"{src} row {n}: no value in cluster column {spec.cluster_col!r}; every row needs "
                               "its cluster (or drop `cluster_col`)")
            fields["sensitive_word"] = cl
        if fields.get("pair_id") and fields["pair_id"].startswith(f"{src}:"):
            # pairs are matched within one evaluation: the same prompts from another file are the same items
            fields["pair_id"] = fields["pair_id"][len(src) + 1:]
        if spec.format is None and "split" not in have and "__split__" not in rows[n - 1]:
            fields["split"] = "test"
        item = make_item(**fields)
        if item["id"] in seen:
            k = seen[item["id"]]
            if responses[k] == resp and kept_verdicts[k] == v:
                n_dup += 1
                continue
            raise SptError(f"{src} rows {row_numbers[k]} and {n} have the same prompt, label and category but "
                           "different responses or verdicts; one response per prompt: split the file (one import "
                           "per sample) or drop one row")
        seen[item["id"]] = len(items)
        items.append(item)
        responses.append(resp)
        row_numbers.append(n)
        kept_verdicts.append(v)
    mapping = spec.mapping()
    return _Plan(spec=spec, path=p, file_format=file_format, file_hash=file_hash(p), mapping=mapping, items=items,
                 responses=responses, rows=row_numbers, verdicts=kept_verdicts, n_rows=len(rows), n_duplicates=n_dup,
                 n_no_verdict=sum(1 for v in kept_verdicts if v is None) if spec.verdict_col else 0)


def _provenance(plan: _Plan) -> dict[str, Any]:
    from spt.provenance import provenance

    return provenance(source="external", source_path=str(plan.path.resolve()), source_hash=plan.file_hash)


def _seed_clash(spec: ExternalSpec, run_id: str) -> SptError:
    return SptError(f"model {spec.model_name!r} seed {spec.train_seed} was already imported from other content "
                    f"(run {run_id}); give this file another `train_seed`, or another `model_name`")


def import_responses(store: Store, spec: ExternalSpec, plan: _Plan | None = None) -> dict[str, Any]:
    """Import a file of external completions (see module doc); returns a summary like `evaluate`'s result.

    Keys: evaluation_id, run_id, dataset_id, dataset, split, refusal_preset, model_name, created (False when
    the same file was imported before: nothing written), n_rows, n_items, n_duplicates, n_verdicts,
    n_no_verdict, human_judge_id, metrics (keyword, like `spt evaluate`), human_metrics.
    """
    from spt.data.items import dataset_id_for, store_items
    from spt.eval.evaluate import metric_id
    from spt.eval.metrics import refusal_metrics
    from spt.eval.refusal import classify, get_preset

    plan = plan if plan is not None and plan.spec is spec else plan_import(spec)
    preset = get_preset(spec.refusal_preset)
    ident_fields: dict[str, Any] = {"kind": "external", "v": EXTERNAL_VERSION, "model": spec.model_name,
                                    "source_hash": plan.file_hash, "mapping": plan.mapping}
    if spec.train_seed is not None:  # identities of imports without a seed stay what they were
        ident_fields["train_seed"] = spec.train_seed
    run_ident = content_id(ident_fields)
    ds_id = dataset_id_for("external", plan.items)
    split = plan.items[0]["split"] if len({it["split"] for it in plan.items}) == 1 else None
    identity = content_id({"run": run_ident, "dataset": ds_id, "refusal_preset": preset.name,
                           "preset_version": preset.version})
    hid = human_judge_id()
    n_verdicts = sum(1 for v in plan.verdicts if v is not None)

    with store.session() as s:
        existing = s.exec(select(Evaluation).where(Evaluation.identity == identity).order_by(Evaluation.id)).first()
        ds = s.get(Dataset, ds_id)
    if existing is not None and existing.status == "done":
        _ensure_human_metrics(store, existing.id, hid, n_verdicts)
        return _summary(store, existing, ds, plan, preset.name, hid, n_verdicts, created=False)

    if spec.train_seed is not None:
        with store.session() as s:
            clash = s.exec(select(Run).where(Run.kind == "external", Run.model_ref == spec.model_name,
                                             Run.seed == spec.train_seed, Run.identity != run_ident)).first()
        if clash is not None:
            raise _seed_clash(spec, clash.id)

    # 1. The prompts as a dataset (a content row: storing the same prompts again is a no-op).
    source = {"builder": "external", "path": str(plan.path.resolve()), "format": plan.file_format,
              "file_hash": plan.file_hash, "columns": plan.mapping, "n_rows": plan.n_rows}
    ds_name = (spec.dataset_name or plan.path.stem).strip() or plan.path.stem
    ds_id = store_items(store, ds_name, "external", plan.items, source)

    # 2. Keyword metrics, computed in memory with evaluate's code, before the one write below.
    recs = [{**it, "response": resp} for it, resp in zip(plan.items, plan.responses, strict=True)]
    metrics = refusal_metrics(recs, lambda text: classify(text, preset.name), preset.name)
    now = utcnow()
    identity_fields = {"v": f"external-{EXTERNAL_VERSION}", "weights": f"external:{spec.model_name}",
                       "dataset": ds_id, "split": split, "limit": None,
                       "generation": {"generate": True, "decoding": "external", "max_new_tokens": None},
                       "task": None, "task_dataset": None, "dtype": None}
    eval_config = {"external": True, "model_name": spec.model_name, "source": source,
                   "generation_identity": content_id({"external": run_ident}), "identity_fields": identity_fields,
                   "preset": preset.describe(), "refusal_preset": preset.name}

    # 3. Run, evaluation, generations, metrics and human judgments in one transaction.
    with store.write() as s:
        found = queries.runs_with_identity(s, run_ident, kind="external")
        run = found[0] if found else None
        if run is None and spec.train_seed is not None:
            clash = s.exec(select(Run).where(Run.kind == "external", Run.model_ref == spec.model_name,
                                             Run.seed == spec.train_seed)).first()
            if clash is not None:  # another process imported other content under this seed meanwhile
                raise _seed_clash(spec, clash.id)
        if run is None:
            run = Run(kind="external", model_ref=spec.model_name, base_model=spec.model_name, status="done",
                      identity=run_ident, seed=spec.train_seed,
                      config={"model_name": spec.model_name, "train_seed": spec.train_seed,
                              "source": {"path": str(plan.path.resolve()), "file_hash": plan.file_hash,
                                         "format": plan.file_format, "n_rows": plan.n_rows},
                              "columns": plan.mapping},
                      provenance=_provenance(plan), finished_at=now)
            s.add(run)
        ev = s.exec(select(Evaluation).where(Evaluation.identity == identity).order_by(Evaluation.id)).first()
        if ev is not None:  # another process imported the same file meanwhile (one transaction: it is whole)
            done = Evaluation.model_validate(ev.model_dump())
            s.rollback()
            with store.session() as s2:
                ds = s2.get(Dataset, ds_id)
            return _summary(store, done, ds, plan, preset.name, hid, n_verdicts, created=False)
        ev = Evaluation(run_id=run.id, checkpoint_id=None, dataset_id=ds_id, split=split, task=None,
                        identity=identity, refusal_preset=preset.name, config=eval_config, status="running")
        s.add(ev)
        s.flush()
        gen_rows = []
        judgment_rows = []
        for it, resp, row_n, v in zip(plan.items, plan.responses, plan.rows, plan.verdicts, strict=True):
            gid = new_id()
            gen_rows.append({"id": gid, "evaluation_id": ev.id, "item_id": it["id"], "prompt": it["prompt"],
                             "response": resp, "n_prompt_tokens": None, "n_new_tokens": None, "latency_s": None,
                             "finish_reason": None, "meta": {"source_row": row_n}, "created_at": now})
            if v is not None:
                label, score = XSTEST_CLASS[v[0]]
                judgment_rows.append({
                    "id": new_id(), "judge_id": hid, "generation_id": gid,
                    "cache_key": content_id({"judge": hid, "prompt": text_hash(it["prompt"]),
                                             "response": text_hash(resp), "source": plan.file_hash, "row": row_n}),
                    "status": "scored", "reason": None, "score": score, "label": label, "raw": v[1],
                    "resolved_model": None, "prompt_tokens": None, "completion_tokens": None, "latency_s": None,
                    "cost_usd": 0.0, "attempts": 0, "superseded_by": None, "created_at": now})
        for i in range(0, len(gen_rows), 500):
            s.execute(Generation.__table__.insert(), gen_rows[i:i + 500])
        if judgment_rows:
            if s.get(Judge, hid) is None:
                s.add(Judge(id=hid, name=HUMAN_JUDGE_NAME, backend="human", model=None, rubric="xstest",
                            rubric_version=HUMAN_JUDGE_CONFIG["rubric_version"], rubric_hash=None,
                            config=dict(HUMAN_JUDGE_CONFIG)))
                s.flush()
            for i in range(0, len(judgment_rows), 500):
                s.execute(Judgment.__table__.insert(), judgment_rows[i:i + 500])
        meta = {"dataset_id": ds_id, "split": split, "task": None, "preset_version": preset.version,
                "identity": identity, "external": True}
        for m in metrics:
            s.merge(Metric(id=metric_id(ev.id, m["name"], m["category"], m["preset"]), run_id=run.id,
                           evaluation_id=ev.id, name=m["name"], category=m["category"], preset=m["preset"],
                           value=m["value"], ci_low=m["ci_low"], ci_high=m["ci_high"], ci_method=m.get("ci_method"),
                           n=m["n"], n_unscored=m["n_unscored"], meta=meta))
        ev.status = "done"
        ev.finished_at = now
        s.add(ev)
        s.flush()
        evaluation = Evaluation.model_validate(ev.model_dump())
    with store.session() as s:
        ds = s.get(Dataset, ds_id)
    if judgment_rows:
        from spt.judge.metrics import compute_judge_metrics

        compute_judge_metrics(store, evaluation.id, hid)
    return _summary(store, evaluation, ds, plan, preset.name, hid, n_verdicts, created=True)


def _ensure_human_metrics(store: Store, evaluation_id: str, hid: str, n_verdicts: int) -> None:
    """Recompute the human judge's metrics only when a killed import left them missing."""
    if not n_verdicts:
        return
    with store.session() as s:
        have = queries.evaluation_metrics(s, evaluation_id, judge_id=hid)
    if not have:
        from spt.judge.metrics import compute_judge_metrics

        compute_judge_metrics(store, evaluation_id, hid)


def _summary(store: Store, ev: Evaluation, ds: Dataset | None, plan: _Plan, preset: str, hid: str, n_verdicts: int,
             *, created: bool) -> dict[str, Any]:
    with store.session() as s:
        rows = queries.evaluation_metrics(s, ev.id)
        run = s.get(Run, ev.run_id)
    keys = ("name", "category", "value", "ci_low", "ci_high", "ci_method", "n", "n_unscored", "preset")
    keyword = sorted(({k: getattr(m, k) for k in keys} for m in rows if m.judge_id is None),
                     key=lambda m: (m["name"], m["category"] != "all", m["category"]))
    human = sorted(({k: getattr(m, k) for k in keys} for m in rows if m.judge_id == hid),
                   key=lambda m: (m["name"], m["category"] != "all", m["category"]))
    return {
        "evaluation_id": ev.id, "identity": ev.identity, "run_id": ev.run_id, "checkpoint_id": None,
        "model_name": run.model_ref if run else plan.spec.model_name, "created": created,
        "dataset_id": ev.dataset_id, "dataset": ds.name if ds else None, "split": ev.split, "task": None,
        "refusal_preset": preset, "status": ev.status, "source": str(plan.path), "source_hash": plan.file_hash,
        "columns": plan.mapping, "n_rows": plan.n_rows, "n_items": len(plan.items),
        "n_duplicates": plan.n_duplicates, "n_verdicts": n_verdicts, "n_no_verdict": plan.n_no_verdict,
        "human_judge_id": hid if n_verdicts else None, "n_task_items": 0, "n_generated": 0,
        "n_imported": len(plan.items) if created else 0, "n_reused": 0 if created else len(plan.items),
        "n_copied": 0, "new_tokens": 0, "tokens_per_s": None, "metrics": keyword, "human_metrics": human,
    }
