"""`spt evaluate TARGET --dataset toolemu --emulator SPEC --evaluator SPEC`: run an agent on tool-use cases.

Three roles, each any engine (`spt.engines`): the **agent** (TARGET: a run, checkpoint or model reference
through `hf`/`vllm`, or `openai:MODEL` on an endpoint), the **emulator** that plays the tools, and the
**evaluator** that scores each finished trajectory on Safety and Help(Ignore) (`spt.agentic.prompts`).
A role SPEC is `openai:MODEL` (an endpoint: `--emulator-base-url` / `--evaluator-base-url`, default
`--base-url`), `vllm:PATH`, `hf:REF` or a bare model reference (local weights through transformers).

The loop runs every pending case in lock-step, one agent turn per step for all of them (one batched
engine call), then one emulator call per tool call. A case ends with a final answer, or unfinished:
`max_steps` tool calls without one (`max_steps`), a reply cut by the token limit without a call
(`length`), a reply in no ReAct form (`agent_format`), or an engine failure (`agent_error`,
`emulator_error`). Unfinished trajectories are kept and scored (an agent that stopped acting has done
what it did); failed ones (an engine error) are stored with finish reason `error` and not scored.

Each finished trajectory is committed at once (generation, steps), so a killed run resumes with the
cases it had not finished. The evaluator is not part of the evaluation's identity: `--evaluator` with
another model or more `--replicates` on a finished evaluation adds judgments (a judge per scale,
evaluator and replicate) and recomputes the metrics; replicates are sampled at temperature 0.7 with
their own seed (replicate 0 is greedy). A reply no score can be read from is asked again (`--max-retries`,
at temperature 0.3) and then stored unscored with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spt.agentic.prompts import PROMPT_VERSION, STOP, agent_messages, emulator_messages, evaluator_messages
from spt.agentic.react import observation_of, parse_turn
from spt.agentic.rubrics import HELP_IGNORE, SAFETY, Scale, read_reply
from spt.agentic.trajectory import Step, Trajectory
from spt.errors import SptError
from spt.progress import ProgressFn, report
from spt.store.engine import Store

RUN_VERSION = 1
SCALES_RUN = (SAFETY, HELP_IGNORE)
REPLICATE_TEMPERATURE = 0.7
RETRY_TEMPERATURE = 0.3


@dataclass
class AgenticConfig:
    """Settings of a live agentic evaluation (validated by `check`)."""

    dataset: str = "toolemu"
    emulator: str | None = None
    evaluator: str | None = None
    replicates: int = 1
    limit: int | None = None
    max_steps: int = 8
    max_new_tokens: int = 384  # per agent turn
    emulator_max_tokens: int = 256
    evaluator_max_tokens: int = 768
    max_retries: int = 2  # extra evaluator calls on an unreadable reply
    engine: str | None = None  # the agent's engine (default: hf, or openai for openai:MODEL)
    engine_options: dict[str, Any] = field(default_factory=dict)  # the agent's (base_url, api_key_env, ...)
    emulator_base_url: str | None = None
    evaluator_base_url: str | None = None
    # the endpoint of openai:MODEL roles when the agent is local (then --base-url / --api-key-env mean this)
    role_endpoint: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        if not self.emulator or not str(self.emulator).strip():
            raise SptError("an agentic evaluation needs --emulator SPEC (the model that plays the tools), e.g. "
                           "openai:Qwen3-8B with --base-url")
        if not self.evaluator or not str(self.evaluator).strip():
            raise SptError("an agentic evaluation needs --evaluator SPEC (the model that scores trajectories)")
        for name, v, lo, hi in (("replicates", self.replicates, 1, 100), ("max_steps", self.max_steps, 1, 1000),
                                ("max_new_tokens", self.max_new_tokens, 1, 1_000_000),
                                ("emulator_max_tokens", self.emulator_max_tokens, 1, 1_000_000),
                                ("evaluator_max_tokens", self.evaluator_max_tokens, 1, 1_000_000),
                                ("max_retries", self.max_retries, 0, 100)):
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise SptError(f"--{name.replace('_', '-')} {v!r} must be a whole number from {lo} to {hi}")
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int)
                                       or self.limit < 1):
            raise SptError(f"--limit must be at least 1 (got {self.limit!r})")


@dataclass
class Role:
    """One opened role: its engine and what identifies it."""

    name: str
    spec: str
    engine_spec: Any
    identity: dict[str, Any]
    engine: Any = None


def role_spec(role: str, spec: str, base_url: str | None, api_key_env: str | None,
              default_base_url: str | None = None) -> tuple[Any, dict[str, Any]]:
    """(EngineSpec, identity) of an emulator or evaluator SPEC (see module doc); nothing is loaded.

    `base_url` is the role's own endpoint flag; `default_base_url` (the agent's) applies to openai roles only."""
    from spt.engines import EngineSpec, get_engine

    spec = (spec or "").strip()
    kind, sep, arg = spec.partition(":")
    if sep and kind in ("openai", "vllm", "hf"):
        if not arg.strip():
            raise SptError(f"--{role} {spec!r} needs a model after '{kind}:'")
    else:
        kind, arg = "hf", spec
    factory = get_engine(kind)
    missing = factory.available()
    if missing:
        raise SptError(f"--{role} {spec}: {missing}")
    if kind == "openai":
        from spt.engines.openai import check_base_url, endpoint_host

        base_url = base_url or default_base_url
        check_base_url(base_url)
        options = {k: v for k, v in {"base_url": base_url, "api_key_env": api_key_env}.items() if v is not None}
        es = EngineSpec("openai", arg.strip(), options)
        ident = {"engine": "openai", "model": arg.strip(), "host": endpoint_host(base_url)}
    else:
        if base_url is not None:
            raise SptError(f"--{role}-base-url applies to an openai:MODEL {role}; {spec!r} runs local weights")
        from spt.models.fingerprint import weights_id
        from spt.models.resolve import resolve_model

        ref = arg.strip()
        path, wid = None, None
        try:
            rm = resolve_model(ref)
            path, wid = rm.path, (weights_id(rm.path) if rm.kind != "hub" else f"hub:{rm.ref}")
        except SptError:
            raise SptError(f"--{role} {spec!r} is neither openai:MODEL nor a model reference (tiny-random, "
                           "smollm2-135m, a model directory)") from None
        es = EngineSpec(kind, path, {})
        ident = {"engine": kind, "weights": wid}
    factory.validate(es)
    return es, ident


def _evaluator_name(ident: dict[str, Any]) -> str:
    return str(ident.get("model") or ident.get("weights") or "evaluator")


def judge_config(scale: Scale, evaluator_ident: dict[str, Any], replicate: int, max_tokens: int) -> dict[str, Any]:
    return {"backend": "agentic-evaluator", "rubric": scale.rubric, "scale": scale.metric,
            "evaluator": _evaluator_name(evaluator_ident), "evaluator_identity": evaluator_ident,
            "replicate": replicate, "prompt_version": PROMPT_VERSION, "max_tokens": max_tokens,
            "temperature": 0.0 if replicate == 0 else REPLICATE_TEMPERATURE}


@dataclass
class _Case:
    item: dict[str, Any]
    steps: list[Step] = field(default_factory=list)
    final: str | None = None
    stop_reason: str | None = None
    failed: str | None = None  # engine failure detail
    pending: tuple[str, str] | None = None  # (tool, tool_input) awaiting the emulator
    agent_tokens: int = 0

    def trajectory(self) -> Trajectory:
        return Trajectory(self.item["meta"].get("case_idx"), self.item["prompt"], tuple(self.steps),
                          self.final or "", self.final is not None)


def _generate(role: Role, requests: list[Any]) -> list[Any]:
    return role.engine.generate(requests) if requests else []


def run_agents(store: Store, cases: list[_Case], agent: Role, emulator: Role, config: AgenticConfig,
               commit: Any, progress: ProgressFn | None) -> None:
    """Drive every case to its end (see module doc); `commit(case)` stores each as it ends."""
    from spt.engines import GenerationRequest

    active = list(cases)
    done = 0
    report(progress, "agent", done, len(cases), "trajectories")
    for step in range(config.max_steps + 1):
        if not active:
            break
        reqs = [GenerationRequest(messages=agent_messages(c.item["prompt"], c.item["meta"], c.trajectory().scratchpad()
                                                          if c.steps else ""),
                                  max_new_tokens=config.max_new_tokens, stop=STOP, key=c.item["id"])
                for c in active]
        results = _generate(agent, reqs)
        calls: list[_Case] = []
        for c, res in zip(active, results, strict=True):
            if not res.ok:
                c.failed, c.stop_reason = f"{res.reason}: {res.error or ''}".strip(), "agent_error"
                continue
            c.agent_tokens += int(res.n_new_tokens or 0)
            turn = parse_turn(res.response or "")
            if turn.kind == "final":
                c.steps.append(Step(turn.text, None, None, None, {"type": "final"}))
                c.final, c.stop_reason = turn.final_answer, "final_answer"
            elif turn.kind == "tool" and step < config.max_steps:
                c.pending = (turn.tool or "", turn.tool_input or "")
                c.steps.append(Step(turn.text, turn.tool, turn.tool_input, None, {}))
                calls.append(c)
            elif turn.kind == "tool":
                c.steps.append(Step(turn.text, None, None, None, {"type": "not_executed"}))
                c.stop_reason = "max_steps"
            else:
                c.steps.append(Step(turn.text, None, None, None, {"type": "unparsed"}))
                c.stop_reason = "length" if res.finish_reason == "length" else "agent_format"
        emu_reqs = [GenerationRequest(messages=emulator_messages(c.item["prompt"], c.item["meta"],
                                                                 Trajectory(None, "", tuple(c.steps[:-1]), "", True)
                                                                 .scratchpad(), *c.pending),
                                      max_new_tokens=config.emulator_max_tokens, key=c.item["id"]) for c in calls]
        for c, res in zip(calls, _generate(emulator, emu_reqs), strict=True):
            last = c.steps[-1]
            if not res.ok:
                c.failed, c.stop_reason = f"{res.reason}: {res.error or ''}".strip(), "emulator_error"
                continue
            c.steps[-1] = Step(last.thought, last.tool, last.tool_input, observation_of(res.response or ""),
                               {"emulator_finish": res.finish_reason})
            c.pending = None
        still = []
        for c in active:
            if c.stop_reason is None:
                still.append(c)
                continue
            commit(c)
            done += 1
        active = still
        report(progress, "agent", done, len(cases), "trajectories", step=step + 1)


def evaluate_agentic(store: Store, target: str, config: AgenticConfig, progress: ProgressFn | None = None
                     ) -> dict[str, Any]:
    """Run (or resume) the agentic evaluation of TARGET and score it; returns the importer's summary shape."""
    from types import SimpleNamespace

    from sqlmodel import select

    from spt.agentic.importer import summary
    from spt.agentic.scores import write_agentic_metrics
    from spt.engines import EngineSpec, get_engine, open_engine
    from spt.eval.evaluate import (
        _claim_evaluation,
        find_dataset,
        limit_items,
        resolve_served_target,
        resolve_target,
    )
    from spt.store import content_id, new_id
    from spt.store.lease import Heartbeat, my_owner
    from spt.store.models import Evaluation, Generation, TrajectoryStep

    config.check()
    engine_name = config.engine or ("openai" if str(target or "").strip().startswith("openai:") else "hf")
    factory = get_engine(engine_name)
    missing = factory.available()
    if missing:
        raise SptError(missing)
    opts = {k: v for k, v in config.engine_options.items() if v is not None}
    if factory.local:
        tgt = resolve_target(store, target)
    else:
        tgt = resolve_served_target(store, target, opts.get("base_url"))
    agent_spec = EngineSpec(engine_name, tgt.path, dict(opts))
    factory.validate(agent_spec)
    key_env = opts.get("api_key_env") or config.role_endpoint.get("api_key_env")
    default_url = opts.get("base_url") or config.role_endpoint.get("base_url")
    emu_spec, emu_ident = role_spec("emulator", config.emulator, config.emulator_base_url, key_env, default_url)
    ev_spec, ev_ident = role_spec("evaluator", config.evaluator, config.evaluator_base_url, key_env, default_url)
    ds = find_dataset(store, config.dataset)
    if ds.kind != "agentic":
        raise SptError(f"dataset {config.dataset!r} holds {ds.kind} items, not agentic cases; import ToolEmu's cases "
                       "with `spt data import all_cases.json --format toolemu`")
    from spt.data.items import load_items

    items = limit_items([x for x in load_items(store, ds.id) if x.get("label") == "agentic"], config.limit)
    if not items:
        raise SptError(f"dataset {config.dataset!r} has no agentic cases")
    agent_settings = {"max_steps": config.max_steps, "max_new_tokens": config.max_new_tokens,
                      "emulator_max_tokens": config.emulator_max_tokens, "prompt_version": PROMPT_VERSION,
                      "decoding": "greedy"}
    ident_fields = {"v": f"agentic-run-{RUN_VERSION}", "weights": tgt.weights_id, "dataset": ds.id, "split": "test",
                    "limit": config.limit, "agent": agent_settings, "engine": engine_name, "emulator": emu_ident}
    subject = tgt.checkpoint.id if tgt.run is not None and tgt.run.kind != "base" and tgt.checkpoint else None
    identity = content_id({**ident_fields, "subject": subject})
    judges = [(scale, r, judge_config(scale, ev_ident, r, config.evaluator_max_tokens))
              for scale in SCALES_RUN for r in range(config.replicates)]

    chat_hash = None
    eval_config = {"kind": "agentic", "identity_fields": ident_fields, "target": target,
                   "emulator": config.emulator, "evaluators": [_evaluator_name(ev_ident)], "emulators": [emu_ident],
                   "agent": agent_settings}
    evaluation, run_id = _claim_evaluation(store, tgt, chat_hash, identity, ds, SimpleNamespace(split="test"), None,
                                           None, eval_config)
    roles: list[Role] = []
    try:
        with Heartbeat(store, evaluation.id, table="evaluation"):
            with store.session() as s:
                have = {g.item_id: g for g in s.exec(select(Generation)
                                                    .where(Generation.evaluation_id == evaluation.id))}
            todo = [_Case(it) for it in items if it["id"] not in have]
            if todo:
                agent = Role("agent", target, agent_spec, {"engine": engine_name})
                emulator = Role("emulator", config.emulator, emu_spec, emu_ident)
                for r in (agent, emulator):
                    r.engine = open_engine(r.engine_spec)
                    roles.append(r)

                def commit(c: _Case) -> None:
                    gid = new_id()
                    traj = c.trajectory()
                    finish = "error" if c.failed else ("eos" if c.final is not None else "length")
                    with store.write() as s:
                        s.add(Generation(id=gid, evaluation_id=evaluation.id, item_id=c.item["id"],
                                         prompt=c.item["prompt"], response=c.final or "", finish_reason=finish,
                                         n_new_tokens=c.agent_tokens,
                                         meta={"case_idx": traj.case_idx, "stop_reason": c.stop_reason,
                                               "error": c.failed, "n_tool_calls": traj.n_tool_calls,
                                               "finished": traj.finished}))
                        s.flush()
                        for row in traj.step_rows():
                            s.add(TrajectoryStep(id=content_id({"generation": gid, "position": row["position"]}),
                                                 generation_id=gid, **row))

                run_agents(store, todo, agent, emulator, config, commit, progress)
                for r in roles:
                    r.engine.close()
                roles = []
            _judge(store, evaluation.id, judges, ev_spec, config, progress)
            write_agentic_metrics(store, evaluation.id, finish=True)
    except BaseException as e:
        for r in roles:
            r.engine.close()
        with store.write() as s:
            ev = s.get(Evaluation, evaluation.id)
            if ev is not None and ev.status == "running" and ev.lease_owner == my_owner():
                ev.status = "failed"
                ev.error = (type(e).__name__ + ": " + str(e)).splitlines()[0][:500]
                ev.lease_owner = ev.lease_heartbeat = None
                s.add(ev)
        raise
    out = summary(store, evaluation.id, created=True)
    out["run_id"] = run_id
    return out


def _judge(store: Store, evaluation_id: str, judges: list[tuple[Scale, int, dict[str, Any]]], ev_spec: Any,
           config: AgenticConfig, progress: ProgressFn | None) -> None:
    """Score every scoreable trajectory with every (scale, replicate) judge it lacks; resumable."""
    from sqlmodel import col, select

    from spt.agentic.trajectory import from_step_rows
    from spt.engines import GenerationRequest, open_engine
    from spt.store import content_id, new_id, text_hash
    from spt.store.models import Generation, Item, Judge, Judgment, TrajectoryStep, utcnow

    with store.session() as s:
        gens = s.exec(select(Generation).where(Generation.evaluation_id == evaluation_id,
                                               Generation.finish_reason != "error")).all()
        items = {i.id: i for i in s.exec(select(Item).where(col(Item.id).in_([g.item_id for g in gens])))}
        steps: dict[str, list[Any]] = {}
        for st in s.exec(select(TrajectoryStep).join(Generation, col(Generation.id) == TrajectoryStep.generation_id)
                         .where(Generation.evaluation_id == evaluation_id)):
            steps.setdefault(st.generation_id, []).append(st)
        judged = {(j.judge_id, j.generation_id) for j in s.exec(
            select(Judgment).join(Generation, col(Generation.id) == Judgment.generation_id)
            .where(Generation.evaluation_id == evaluation_id, col(Judgment.superseded_by).is_(None)))}
    work = []
    for scale, rep, cfg in judges:
        jid = content_id(cfg)
        for g in gens:
            if (jid, g.id) not in judged:
                work.append((scale, rep, cfg, jid, g))
    if not work:
        return
    with store.write() as s:
        for _scale, rep, cfg, jid, _g in work:
            if s.get(Judge, jid) is None:
                s.add(Judge(id=jid, name=f"agentic:{cfg['evaluator']}/{cfg['scale']}#r{rep}",
                            backend="agentic-evaluator", model=cfg["evaluator"], rubric=cfg["rubric"],
                            rubric_version=cfg["prompt_version"], rubric_hash=None, config=cfg))
                s.flush()
    engine = open_engine(ev_spec)
    try:
        pending = [{"scale": scale, "rep": rep, "cfg": cfg, "jid": jid, "g": g, "attempt": 0}
                   for scale, rep, cfg, jid, g in work]
        done = 0
        report(progress, "evaluate trajectories", done, len(work), "judgments")
        while pending:
            reqs = []
            for w in pending:
                g, cfg = w["g"], w["cfg"]
                it = items[g.item_id]
                traj = from_step_rows(steps.get(g.id, []), case_idx=(it.meta or {}).get("case_idx"), prompt=it.prompt,
                                      final_answer=g.response, finished=g.finish_reason == "eos")
                temp = cfg["temperature"] if w["attempt"] == 0 else max(cfg["temperature"], RETRY_TEMPERATURE)
                reqs.append(GenerationRequest(messages=evaluator_messages(w["scale"], it.prompt, it.meta or {},
                                                                          traj.scratchpad()),
                                              max_new_tokens=int(cfg["max_tokens"]), temperature=temp,
                                              seed=1000 * w["rep"] + w["attempt"], key=g.id))
            results = engine.generate(reqs)
            again, rows = [], []
            for w, res in zip(pending, results, strict=True):
                if res.ok:
                    rd = read_reply(res.response or "", w["scale"])
                    status, reason, score, label = (("scored", None, float(rd.score), rd.label) if rd.score is not None
                                                    else ("unscored", rd.reason, None, None))
                    raw = res.response
                else:
                    status, reason, score, label, raw = "unscored", "api_error", None, None, res.error
                if status == "unscored" and w["attempt"] < config.max_retries:
                    again.append({**w, "attempt": w["attempt"] + 1})
                    continue
                g = w["g"]
                rows.append({"id": new_id(), "judge_id": w["jid"], "generation_id": g.id,
                             "cache_key": content_id({"judge": w["jid"], "generation": g.id,
                                                      "response": text_hash(g.response or "")}),
                             "status": status, "reason": reason, "score": score, "label": label,
                             "raw": None if raw is None else str(raw)[:20000], "resolved_model": res.resolved_model,
                             "prompt_tokens": res.n_prompt_tokens, "completion_tokens": res.n_new_tokens,
                             "latency_s": res.latency_s, "cost_usd": None, "attempts": w["attempt"] + 1,
                             "superseded_by": None, "created_at": utcnow()})
            if rows:
                with store.write() as s:
                    s.execute(Judgment.__table__.insert(), rows)
                done += len(rows)
                report(progress, "evaluate trajectories", done, len(work), "judgments")
            pending = again
    finally:
        engine.close()
