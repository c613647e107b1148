"""Running lm-eval's requests a chunk of documents at a time, and turning each document into a sample record.

`lm_eval.simple_evaluate` builds every request, runs them all, and only then scores; a killed run keeps
nothing. Here the requests are built for every document at once, exactly as lm-eval builds them (so the
few-shot examples, drawn from one seeded generator in document order, are the ones an uninterrupted
lm-eval run would draw), and then run and scored a chunk of documents at a time with lm-eval's own model
calls, filters (`FilterEnsemble.apply`) and `process_results`, so each chunk can be committed as it is
done and a re-run only runs the documents it has no sample for. The per-sample values are the ones
lm-eval would aggregate (a test checks the aggregates against `simple_evaluate`).
"""

from __future__ import annotations

import inspect
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from spt.eval.lmeval.tasks import doc_hash


@dataclass
class DocRequests:
    """One document of one task with its lm-eval requests (one per choice for multiple-choice)."""

    task: str
    doc_id: int
    doc: Any
    instances: list[Any]
    prompt: str
    target: Any  # doc_to_target as lm-eval returns it (a choice index, a list, or a string)
    answer: str  # the target as text (the gold choice for multiple-choice)
    choices: list[str] | None
    doc_hash: str
    prompt_hash: str
    target_hash: str
    output_type: str


@dataclass
class SampleRecord:
    """What one document produced: the response text and everything to score it again."""

    doc: DocRequests
    response: str
    metrics: dict[str, dict[str, Any]]  # filter -> metric -> per-sample value (JSON-safe)
    meta: dict[str, Any] = field(default_factory=dict)


def build_requests(task_name: str, task: Any, *, limit: int | None, lm: Any, apply_chat_template: bool,
                   fewshot_as_multiturn: bool, system_instruction: str | None) -> list[DocRequests]:
    """Every document's requests, built by lm-eval for all documents in one pass (see module doc)."""
    from lm_eval.utils import hash_string

    task.build_all_requests(
        limit=limit, rank=0, world_size=1, cache_requests=False, system_instruction=system_instruction,
        apply_chat_template=bool(apply_chat_template), fewshot_as_multiturn=fewshot_as_multiturn,
        chat_template=getattr(lm, "apply_chat_template", None) if apply_chat_template else None,
        tokenizer_name=getattr(lm, "tokenizer_name", "") if apply_chat_template else "",
    )
    by_doc: dict[int, list[Any]] = defaultdict(list)
    for inst in task.instances:
        by_doc[inst.doc_id].append(inst)
    output_type = task.get_config("output_type")
    out: list[DocRequests] = []
    for doc_id in sorted(by_doc):
        insts = sorted(by_doc[doc_id], key=lambda x: x.idx)
        doc = insts[0].doc
        target = task.doc_to_target(doc)
        choices = None
        if output_type == "multiple_choice":
            choices = [str(c) for c in task.doc_to_choice(doc)]
        prompt = insts[0].arguments[0] if isinstance(insts[0].arguments, tuple) else insts[0].arguments
        out.append(DocRequests(
            task=task_name, doc_id=int(doc_id), doc=doc, instances=insts, prompt=str(prompt), target=target,
            answer=_answer_text(target, choices), choices=choices, doc_hash=doc_hash(doc),
            prompt_hash=hash_string(str(prompt)), target_hash=hash_string(str(target)), output_type=output_type))
    return out


def _answer_text(target: Any, choices: list[str] | None) -> str:
    if choices is not None:
        idx = target if isinstance(target, list) else [target]
        names = []
        for t in idx:
            if isinstance(t, int) and 0 <= t < len(choices):
                names.append(choices[t])
            else:
                names.append(str(t))
        return " | ".join(names)
    return str(target)


def _call(lm: Any, reqtype: str, requests: list[Any]) -> list[Any]:
    fn = getattr(lm, reqtype)
    try:
        takes_tqdm = "disable_tqdm" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        takes_tqdm = False
    return fn(requests, disable_tqdm=True) if takes_tqdm else fn(requests)


def run_chunk(lm: Any, task: Any, docs: list[DocRequests], reasoning: Any = None) -> list[SampleRecord]:
    """Run, filter and score `docs` (lm-eval's `evaluate` loop, restricted to these documents).

    `reasoning` (a `spt.eval.reasoning` format): generated text is split before lm-eval's filters and
    metrics see it, so the task scores the answer alone; an unfinished thought scores as an empty answer
    (wrong, never a lucky number from inside the thought). The thinking and the raw text go to meta.
    """
    instances = [inst for d in docs for inst in d.instances]
    for inst in instances:
        inst.resps, inst.filtered_resps = [], {}
    by_type: dict[str, list[Any]] = defaultdict(list)
    for inst in instances:
        by_type[inst.request_type].append(inst)
    for reqtype, reqs in by_type.items():
        cloned = [req for req in reqs for _ in range(req.repeats or 1)]
        resps = _call(lm, reqtype, cloned)
        for x, req in zip(resps, cloned, strict=True):
            if reasoning is not None and reqtype == "generate_until" and isinstance(x, str):
                sp = reasoning.split(x)
                req.spt_reasoning = {"raw": x, "thinking": sp.thinking, "unfinished": sp.unfinished}
                x = "" if sp.unfinished else sp.answer
            req.resps.append(x)
    for ensemble in getattr(task, "_filters", []) or []:
        ensemble.apply(instances)
    if instances and not instances[0].filtered_resps:  # a task without filters: lm-eval's "none" pass-through
        for inst in instances:
            inst.filtered_resps["none"] = inst.resps[0] if len(inst.resps) == 1 else inst.resps
    filters = list(instances[0].filtered_resps) if instances else []
    out: list[SampleRecord] = []
    for d in docs:
        metrics = {fk: {k: json_safe(v) for k, v in
                        task.process_results(d.doc, [req.filtered_resps[fk] for req in d.instances]).items()}
                   for fk in filters}
        response, meta = _render(d, filters)
        out.append(SampleRecord(doc=d, response=response, metrics=metrics, meta=meta))
    return out


def _render(d: DocRequests, filters: list[str]) -> tuple[str, dict[str, Any]]:
    """The Generation's response text and the raw outputs kept in its meta."""
    meta: dict[str, Any] = {"filtered": {fk: json_safe(_first(d.instances, fk)) for fk in filters}}
    if d.output_type == "multiple_choice":
        pairs = [inst.resps[0] for inst in d.instances]
        lls = [float(p[0]) for p in pairs]
        meta.update(loglikelihoods=lls, is_greedy=[bool(p[1]) for p in pairs])
        meta.pop("filtered")  # for multiple-choice the filtered outputs are these log-likelihoods again
        n = len(d.choices or [])
        best = max(range(min(n, len(lls))), key=lambda i: lls[i]) if n else None
        meta["chosen"] = best
        return (d.choices[best] if best is not None and d.choices else ""), meta
    if d.output_type == "loglikelihood":
        ll, greedy = d.instances[0].resps[0]
        meta.update(loglikelihood=float(ll), is_greedy=bool(greedy))
        return f"loglikelihood {float(ll):.4f}", meta
    if d.output_type == "loglikelihood_rolling":
        ll = float(d.instances[0].resps[0])
        meta.update(loglikelihood=ll)
        return f"loglikelihood {ll:.4f}", meta
    texts = [[str(r) for r in inst.resps] for inst in d.instances]
    meta["resps"] = texts
    split = getattr(d.instances[0], "spt_reasoning", None) if d.instances else None
    if split is not None:
        meta.update(thinking=split["thinking"], raw_response=split["raw"], unfinished_thought=split["unfinished"])
    return (texts[0][0] if texts and texts[0] else ""), meta


def _first(instances: list[Any], fk: str) -> Any:
    vals = [inst.filtered_resps.get(fk) for inst in instances]
    return vals[0] if len(vals) == 1 else vals


def json_safe(v: Any) -> Any:
    """A per-sample value as JSON keeps it: numpy scalars as Python numbers, tuples as lists, NaN as None."""
    if hasattr(v, "item") and not isinstance(v, (list, tuple, dict, str)):
        try:
            v = v.item()
        except (TypeError, ValueError):
            v = str(v)
    if isinstance(v, bool):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, (int, str)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    if isinstance(v, dict):
        return {str(k): json_safe(x) for k, x in v.items()}
    try:
        json.dumps(v)
        return v
    except TypeError:
        return str(v)
