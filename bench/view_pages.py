"""`spt view` at scale: the time of each page over real HTTP on a store with 100k generations.

The store is bench/store_scale.py's synthetic store (real schema, bulk-inserted with sqlite) plus a second
judge that disagrees with the first on ~10% of responses, so the agreement and "judges disagree" pages have
work to do. Two shapes of 100k generations: many evaluations (50 runs x 2000 prompts) and few large ones
(2 runs x 50000 prompts, the worst case for the evaluation browser). The app is served by uvicorn on
127.0.0.1 in this process, and each page is fetched with urllib: the first (cold) time, then the median of
`--repeat` warm fetches.

    python bench/view_pages.py                      # both shapes, 100k generations each (~2-3 min to build)
    python bench/view_pages.py --generations 20000  # quick
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Timer, emit, log, machine  # noqa: E402
from store_scale import build_store  # noqa: E402


def add_second_judge(path: Path) -> int:
    """A keyword-style judge on every generation, disagreeing with the first on every 10th; 1 in 50 unscored."""
    import sqlite3

    judge_id = "sha256:" + hashlib.sha256(b"bench-keyword-judge").hexdigest()
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA synchronous=OFF")
    con.execute("BEGIN")
    con.execute("INSERT INTO judge (id, name, backend, model, rubric, rubric_version, created_at) "
                "VALUES (?, 'keyword:spt', 'keyword', NULL, 'refusal', 'keyword', '2026-01-01T00:00:00+00:00')",
                (judge_id,))
    con.execute(
        "INSERT INTO judgment (id, judge_id, generation_id, cache_key, status, reason, score, label, created_at) "
        "SELECT 'k' || j.id, ?, j.generation_id, 'k' || j.cache_key, "
        "CASE WHEN abs(random()) % 50 = 0 THEN 'unscored' ELSE 'scored' END, NULL, j.score, "
        "CASE WHEN abs(random()) % 10 = 0 THEN (CASE j.label WHEN 'refusal' THEN 'compliance' ELSE 'refusal' END) "
        "ELSE j.label END, j.created_at FROM judgment j", (judge_id,))
    con.execute("UPDATE judgment SET reason = 'parse_failure', score = NULL, label = NULL "
                "WHERE judge_id = ? AND status = 'unscored'", (judge_id,))
    n = con.execute("SELECT COUNT(*) FROM judgment WHERE judge_id = ?", (judge_id,)).fetchone()[0]
    con.execute("COMMIT")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return n


def serve(store):
    import uvicorn

    from spt.commands.view import bind
    from spt.view.app import create_app

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(store), log_level="warning", access_log=False,
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}"


def fetch(url: str) -> tuple[float, int, bytes]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as r:
        body = r.read()
        status = r.status
    return time.perf_counter() - t0, status, body


def measure(path: Path, repeat: int) -> dict:
    from sqlalchemy import text

    from spt.store.browse import open_readonly

    store = open_readonly(path)
    with store.engine.connect() as conn:
        evs = [r[0] for r in conn.execute(text(
            "SELECT e.id FROM evaluation e JOIN run r ON r.id = e.run_id ORDER BY r.created_at DESC")).all()]
        run_id = conn.execute(text("SELECT run_id FROM evaluation WHERE id = :e"), {"e": evs[0]}).scalar()
        n_gen = conn.execute(text("SELECT COUNT(*) FROM generation")).scalar()
        per_eval = conn.execute(text("SELECT COUNT(*) FROM generation WHERE evaluation_id = :e"),
                                {"e": evs[0]}).scalar()
    ev, other = evs[0], evs[1]
    last_page = max(1, -(-per_eval // 2 // 25))
    pages = {
        "runs": "/runs",
        "run": f"/runs/{run_id}",
        # the synthetic sweep mixes poison ratios, so rank by poison (by defense is refused, as in the CLI)
        "frontier": "/frontier?group_by=poison",
        "frontier_or_bench_one_poison": "/frontier?x=over_refusal_rate&y=refusal_rate&poison_ratio=0.05",
        "evaluations": "/evals",
        "pairs": f"/pairs?eval={ev}",
        "pairs_last_page": f"/pairs?eval={ev}&page={last_page}",
        "pairs_word": f"/pairs?eval={ev}&q=nuclear",
        "pairs_category": f"/pairs?eval={ev}&category=fraud",
        "pairs_verdict": f"/pairs?eval={ev}&verdict=answered&side=harmful",
        "pairs_disagree": f"/pairs?eval={ev}&disagree=1",
        "pairs_compare": f"/pairs?eval={ev}&compare={other}",
        "pairs_compare_disagree_word": f"/pairs?eval={ev}&compare={other}&disagree=1&q=the",
        "judges": "/judges",
        "judges_one_evaluation": f"/judges?eval={ev}",
    }
    server, thread, base = serve(store)
    out: dict = {"load_average_before": [round(x, 2) for x in os.getloadavg()], "generations": n_gen,
                 "generations_per_evaluation": per_eval, "evaluations": len(evs), "pages": {}}
    try:  # cold: the first visit of each page on a fresh app, nothing cached, no warm-up; warm: visits after it
        for name, url in pages.items():
            cold, status, body = fetch(base + url)
            size = len(body)
            warm = [fetch(base + url)[0] for _ in range(repeat)]
            out["pages"][name] = {"url": url, "status": status, "kb": round(size / 1024, 1),
                                  "error_on_page": b'class="error"' in body,
                                  "cold_s": round(cold, 3), "warm_median_s": round(statistics.median(warm), 3),
                                  "warm_max_s": round(max(warm), 3)}
            log(f"  {name:28s} {status} cold {cold:.3f}s warm {statistics.median(warm):.3f}s ({size // 1024} kB)")
    finally:
        server.should_exit = True
        thread.join(10)
        store.close()
    worst = max(p["cold_s"] for p in out["pages"].values())
    out["slowest_page_cold_s"] = worst
    out["slowest_page_warm_s"] = max(p["warm_median_s"] for p in out["pages"].values())
    out["all_cold_under_1s"] = worst < 1.0 and all(p["status"] == 200 for p in out["pages"].values())
    # what `spt view` does: a fresh server warms the slowest data (Site.warm) before it prints its URL;
    # then each page's first visit
    fresh = open_readonly(path)
    server, thread, base = serve(fresh)
    try:
        with Timer() as tw:
            server.config.app.state.site.warm()
        out["warmup_s"] = round(tw.s, 2)
        for name, url in pages.items():
            first = fetch(base + url)[0]
            out["pages"][name]["first_after_warmup_s"] = round(first, 3)
            log(f"  {name:28s} first visit after warm-up {first:.3f}s")
    finally:
        server.should_exit = True
        thread.join(10)
        fresh.close()
    out["slowest_first_visit_after_warmup_s"] = max(p["first_after_warmup_s"] for p in out["pages"].values())
    out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generations", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--shapes", default="many,few", help="many: 50 evaluations; few: 2 large evaluations")
    ap.add_argument("--keep", default=None, help="directory to keep the stores in (default: a temp dir)")
    args = ap.parse_args(argv)
    tmpctx = tempfile.TemporaryDirectory(prefix="spt-bench-view-") if args.keep is None else None
    tmp = Path(args.keep or tmpctx.name)  # type: ignore[union-attr]
    tmp.mkdir(parents=True, exist_ok=True)
    result: dict = {"benchmark": "view_pages", "machine": machine(),
                    "params": {"generations": args.generations, "repeat": args.repeat}, "shapes": {}}
    shapes = {"many": 50, "few": 2}
    try:
        for shape in args.shapes.split(","):
            n_runs = shapes[shape]
            path = tmp / f"view-{shape}.db"
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
            log(f"building {shape}: {n_runs} runs x {args.generations // n_runs} generations in {path}")
            with Timer() as tb:
                counts = build_store(path, n_runs, args.generations, train_logs=20)
                counts["judgment"] += add_second_judge(path)
                counts["judge"] += 1
            log(f"built in {tb.s:.1f}s")
            before = hashlib.sha256(path.read_bytes()).hexdigest()
            res = measure(path, args.repeat)
            res["build_s"] = round(tb.s, 1)
            res["rows"] = counts
            res["size_mb"] = round(path.stat().st_size / 2**20, 1)
            res["store_unchanged"] = hashlib.sha256(path.read_bytes()).hexdigest() == before
            result["shapes"][shape] = res
    finally:
        if tmpctx is not None:
            tmpctx.cleanup()
    emit(result)
    return result


if __name__ == "__main__":
    main()
