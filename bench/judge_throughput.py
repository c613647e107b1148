"""`spt judge` (openai:MODEL against a local endpoint) vs a sequential `openai` client loop.

Both sides render the same rubric prompt for the same generations, send it to the same fake
OpenAI-compatible endpoint (its own process on 127.0.0.1, fixed per-request latency) and parse the
reply with the same parser. spt additionally stores every judgment and computes the metrics; the
baseline only keeps verdicts in a list. A second `spt judge` on the same evaluation must make no call.

    python bench/judge_throughput.py                       # 2000 generations, 50 ms latency
    python bench/judge_throughput.py --n 300 --latency-ms 50 --baseline-n 100   # quick
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    EndpointProcess,
    Timer,
    emit,
    log,
    machine,
    synthetic_prompt,
    synthetic_response,
)

MODEL = "fake-judge"


def build_evaluation(store, n: int, seed: int = 0) -> tuple[str, list[tuple[str, str]]]:
    """One run, one HarmOR-like dataset of n items, one finished evaluation with n generations."""
    from spt.store import content_id
    from spt.store.models import Dataset, DatasetItem, Evaluation, Generation, Item, Run

    rng = random.Random(seed)
    pairs = [(f"{synthetic_prompt(rng)} (#{i})", synthetic_response(rng)) for i in range(n)]
    with store.write() as s:
        run = Run(kind="base", model_ref="tiny-random")
        s.add(run)
        items = [Item(id=content_id({"bench": "judge", "i": i, "p": p}), prompt=p,
                      label="harmful" if i % 2 else "benign", category=("violence", "fraud", "privacy")[i % 3])
                 for i, (p, _) in enumerate(pairs)]
        s.add_all(items)
        ds = Dataset(id=content_id({"bench": "judge", "n": n, "seed": seed}), name="bench-judge", kind="harmor",
                     n_items=n)
        s.add(ds)
        s.add_all(DatasetItem(dataset_id=ds.id, item_id=it.id, split="test", position=i)
                  for i, it in enumerate(items))
        ev = Evaluation(run_id=run.id, dataset_id=ds.id, split="test", identity=content_id({"bench": n}),
                        status="done")
        s.add(ev)
        s.add_all(Generation(evaluation_id=ev.id, item_id=it.id, prompt=p, response=r)
                  for it, (p, r) in zip(items, pairs, strict=True))
        ev_id = ev.id
    return ev_id, pairs


class PhaseClock:
    """A progress listener for judge_evaluations that records when the first and last judgment were
    recorded, to split the call phase from the set-up before it and the metrics after it."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.last: float | None = None

    def __call__(self, p) -> None:
        if p.done == 0:  # the report before the first call
            return
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.last = now


def sequential_baseline(base_url: str, pairs: list[tuple[str, str]], timeout: float) -> tuple[float, list]:
    """What a user writes without spt: one client, one request after another, parse each reply."""
    import openai

    from spt.judge.specs import parse_judge_spec

    spec = parse_judge_spec(f"openai:{MODEL}", "refusal")
    client = openai.OpenAI(base_url=base_url, api_key="EMPTY", timeout=timeout, max_retries=4)
    verdicts = []
    t0 = time.perf_counter()
    for prompt, response in pairs:
        resp = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": spec.rubric.render(prompt, response)}],
            temperature=0.0, max_tokens=spec.max_tokens or None)
        verdicts.append(spec.rubric.parse(resp.choices[0].message.content))
    el = time.perf_counter() - t0
    client.close()
    return el, verdicts


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="generations judged by spt (default 2000)")
    ap.add_argument("--baseline-n", type=int, default=300,
                    help="generations judged by the sequential loop (its rate is flat; default 300)")
    ap.add_argument("--latency-ms", type=float, default=50.0, help="per-request latency of the endpoint")
    ap.add_argument("--jitter", type=float, default=0.0, help="latency jitter as a fraction (0.2 = ±20%%)")
    ap.add_argument("--max-connections", type=int, default=None,
                    help="spt judge --max-connections (default: spt's default)")
    ap.add_argument("--also-connections", default="",
                    help="comma list of further --max-connections values to time, each on a fresh evaluation")
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args(argv)

    from spt.judge import JudgeOptions, judge_evaluations
    from spt.store import open_store

    default_conn = JudgeOptions().max_connections
    conns = args.max_connections or default_conn
    baseline_n = min(args.baseline_n, args.n)
    result: dict = {"benchmark": "judge_throughput", "machine": machine(),
                    "params": {"n": args.n, "baseline_n": baseline_n, "latency_ms": args.latency_ms,
                               "jitter": args.jitter, "max_connections": conns,
                               "spt_default_max_connections": default_conn}}
    with tempfile.TemporaryDirectory(prefix="spt-bench-judge-") as tmp, \
            EndpointProcess(args.latency_ms / 1000, args.jitter) as ep:
        store = open_store(Path(tmp) / "bench.db")
        ev_id, pairs = build_evaluation(store, args.n)
        log(f"endpoint {ep.base_url}; {args.n} generations")

        # warm both clients' imports outside the timings
        import openai  # noqa: F401

        c0 = ep.calls
        base_s, verdicts = sequential_baseline(ep.base_url, pairs[:baseline_n], args.timeout)
        base_calls = ep.calls - c0
        base_rate = baseline_n / base_s
        log(f"sequential: {baseline_n} in {base_s:.2f}s = {base_rate:.1f}/s")

        c0 = ep.calls
        clock = PhaseClock()
        with Timer() as t:
            summary = judge_evaluations(store, [ev_id], judges=[f"openai:{MODEL}"], base_url=ep.base_url,
                                        max_connections=conns, timeout=args.timeout, progress=clock)
        spt_calls = ep.calls - c0
        j = summary.to_dict()["judges"][0]
        spt_rate = j["judged"] / t.s
        calls_s = (clock.last or t.t0) - t.t0  # start of the call to the last judgment recorded
        calls_rate = j["judged"] / calls_s if calls_s > 0 else float("nan")
        after_s = t.s - calls_s  # the rest: flushing the last batch, metrics with bootstrap CIs
        log(f"spt judge: {j['judged']} in {t.s:.2f}s = {spt_rate:.1f}/s")

        c0 = ep.calls
        with Timer() as t2:
            summary2 = judge_evaluations(store, [ev_id], judges=[f"openai:{MODEL}"], base_url=ep.base_url,
                                         max_connections=conns, timeout=args.timeout)
        rerun_calls = ep.calls - c0
        j2 = summary2.to_dict()["judges"][0]

        # the same verdicts on the generations both judged
        from sqlmodel import select

        from spt.store.models import Generation, Judgment

        with store.session() as s:
            rows = s.exec(select(Generation.prompt, Judgment.label).join(Judgment, Judgment.generation_id ==
                                                                         Generation.id)
                          .where(Generation.evaluation_id == ev_id, Judgment.superseded_by.is_(None))).all()
        spt_labels = dict(rows)
        mismatch = sum(1 for (p, _), v in zip(pairs[:baseline_n], verdicts, strict=True)
                       if spt_labels.get(p) != v.label)

        sweep = []
        for k, c in enumerate(int(x) for x in args.also_connections.split(",") if x.strip()):
            ev_k, _ = build_evaluation(store, args.n, seed=k + 1)
            clock_k = PhaseClock()
            with Timer() as tk:
                sk = judge_evaluations(store, [ev_k], judges=[f"openai:{MODEL}"], base_url=ep.base_url,
                                       max_connections=c, timeout=args.timeout, progress=clock_k)
            jk = sk.to_dict()["judges"][0]
            until = (clock_k.last or tk.t0) - tk.t0
            sweep.append({"max_connections": c, "judgments": jk["judged"], "seconds": round(tk.s, 3),
                          "judgments_per_s": round(jk["judged"] / tk.s, 2),
                          "judgments_per_s_until_last": round(jk["judged"] / until, 2) if until > 0 else None,
                          "ratio": round(jk["judged"] / tk.s / base_rate, 2)})
            log(f"spt judge --max-connections {c}: {jk['judged'] / tk.s:.1f}/s")
        store.close()

    ideal = conns / (args.latency_ms / 1000) if args.latency_ms > 0 else None
    result.update({
        "sequential": {"judgments": baseline_n, "seconds": round(base_s, 3), "judgments_per_s": round(base_rate, 2),
                       "calls": base_calls},
        "spt": {"judgments": j["judged"], "seconds": round(t.s, 3), "judgments_per_s": round(spt_rate, 2),
                "calls": spt_calls, "reported_calls": j["calls"], "retries": j["retries"],
                "unscored": j["unscored"],
                "until_last_judgment_s": round(calls_s, 3), "judgments_per_s_until_last": round(calls_rate, 2),
                "after_last_judgment_s": round(after_s, 3), "ideal_per_s": round(ideal, 1) if ideal else None,
                "efficiency_vs_ideal": round(spt_rate / ideal, 3) if ideal else None},
        "rerun": {"seconds": round(t2.s, 3), "calls": rerun_calls, "reported_calls": j2["calls"],
                  "cached": j2["cached"], "judged": j2["judged"]},
        "ratio": round(spt_rate / base_rate, 2),
        "ratio_until_last_judgment": round(calls_rate / base_rate, 2),
        "verdict_mismatches": mismatch,
        "connections_sweep": sweep,
        "targets": {"ratio_ge_10x": spt_rate / base_rate >= 10, "rerun_zero_calls": rerun_calls == 0},
    })
    emit(result)
    return result


if __name__ == "__main__":
    main()
