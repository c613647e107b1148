"""The store at sweep scale: a synthetic store with 10k runs and 1M judgments, then the time of
`spt import` into an empty and into a full store, `spt frontier` and `spt runs`.

The synthetic store is built with raw sqlite `executemany` in one transaction on a schema created by
`open_store` (so the migrations and indexes are the real ones). Foreign keys are consistent: one base
run, fine-tunes of it (defense x lam x poison x seed), one HarmOR-like dataset whose items every
evaluation generates on, one judge with one judgment per generation, metrics per evaluation,
checkpoints and train logs. `spt import` runs with foreign keys on, so it also checks them.

    python bench/store_scale.py                                  # 10k runs, 1M judgments (~2-4 min)
    python bench/store_scale.py --runs 200 --judgments 5000      # quick
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, Timer, emit, log, machine, peak_rss_mb, synthetic_prompt, synthetic_response  # noqa: E402

DEFENSES = ("none", "anchor", "proximal", "safelora")
LAMS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
POISON = (0.0, 0.01, 0.05, 0.1)
CATEGORIES = ("violence", "fraud", "privacy", "weapons", "drugs", "cyber", "hate", "self-harm", "sexual", "misc")


class _Ids:
    """UUIDv7-shaped event ids, unique and increasing, without new_id()'s per-call locking (speed)."""

    def __init__(self, seed: int = 0) -> None:
        self.ms = time.time_ns() // 1_000_000 - 86_400_000
        self.seq = 0
        self.rng = random.Random(seed)

    def __call__(self) -> str:
        self.seq += 1
        if self.seq > 0xFFF:
            self.seq = 0
            self.ms += 1
        value = (self.ms << 80) | (0x7 << 76) | (self.seq << 64) | (0b10 << 62) | self.rng.getrandbits(62)
        h = f"{value:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _ts(base: float, i: int) -> str:
    t = time.gmtime(base + i)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{i % 1_000_000:06d}+00:00"


def build_store(path: Path, n_runs: int, n_judgments: int, *, train_logs: int = 10, seed: int = 0) -> dict:
    """Create the synthetic store at `path`; returns row counts."""
    from spt.store import open_store

    open_store(path).close()  # the real schema (migrations, indexes)
    rng = random.Random(seed)
    ids = _Ids(seed)
    per_run = max(1, n_judgments // n_runs)  # generations (= judgments) per evaluation
    base_t = time.time() - 30 * 86_400

    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-400000")  # 400 MB page cache for the build
    con.execute("BEGIN")
    counts: dict[str, int] = {}

    # items and one dataset
    items = []
    for i in range(per_run):
        prompt = f"{synthetic_prompt(rng)} (#{i})"
        label = "harmful" if i % 2 == 0 else "benign"
        items.append((_sha(f"item:{i}:{prompt}"), prompt, synthetic_response(rng), CATEGORIES[i % 10], label,
                      _sha(f"pair:{i // 2}"), f"t{i % 40}", "contrast" if label == "benign" else None))
    con.executemany("INSERT INTO item (id, prompt, response, category, label, pair_id, template_id, contrast_type) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", items)
    ds_id = _sha(f"dataset:{per_run}:{seed}")
    con.execute("INSERT INTO dataset (id, name, kind, n_items, source, meta, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (ds_id, "harmor-bench", "harmor", per_run, json.dumps({"builder": "bench"}), None, _ts(base_t, 0)))
    con.executemany("INSERT INTO dataset_item (dataset_id, item_id, split, position) VALUES (?, ?, ?, ?)",
                    [(ds_id, it[0], "test", i) for i, it in enumerate(items)])
    counts.update(item=len(items), dataset=1, dataset_item=len(items))

    # runs: one base model, the rest fine-tunes of it over a sweep grid
    base_id = ids()
    runs = [(base_id, "base", None, "smollm2-135m", "smollm2-135m", None, None, None, None, None, None,
             json.dumps({"model": "smollm2-135m"}), _sha("base"), "done", json.dumps(["bench"]),
             _ts(base_t, 1), _ts(base_t, 1), _ts(base_t, 1))]
    for i in range(1, n_runs):
        d = DEFENSES[i % 4]
        lam = None if d == "none" else LAMS[(i // 4) % len(LAMS)]
        p = POISON[(i // 24) % len(POISON)]
        s = i // 96
        cfg = {"defense": d, "lam": lam, "poison_ratio": p, "seed": s, "lr": 2e-5, "steps": 200, "lora": True}
        t = _ts(base_t, 10 + i)
        runs.append((ids(), "finetune", base_id, "smollm2-135m", "smollm2-135m", "gsm8k", d, lam, p, s, True,
                     json.dumps(cfg), _sha(json.dumps(cfg) + str(i)), "done", json.dumps(["bench", f"sweep{i % 3}"]),
                     t, t, t))
    con.executemany("INSERT INTO run (id, kind, parent_run_id, model_ref, base_model, task, defense, lam, "
                    "poison_ratio, seed, lora, config, identity, status, tags, created_at, updated_at, finished_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", runs)
    counts["run"] = len(runs)

    ckpts, logs = [], []
    for i, r in enumerate(runs):
        ckpts.append((ids(), r[0], 200, "adapter", f"/scratch/ckpt/{r[0]}/final", _sha(f"ck{i}"), 1, None, r[15]))
        for k in range(train_logs if r[1] == "finetune" else 0):
            logs.append((ids(), r[0], k * 20, "task_loss", 2.5 - 0.1 * k + rng.random() * 0.05, r[15]))
    con.executemany("INSERT INTO checkpoint (id, run_id, step, kind, path, content_hash, is_final, meta, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", ckpts)
    con.executemany("INSERT INTO train_log (id, run_id, step, name, value, created_at) VALUES (?, ?, ?, ?, ?, ?)", logs)
    counts.update(checkpoint=len(ckpts), train_log=len(logs))

    # the judge
    judge_cfg = {"backend": "openai", "model": "gpt-4o-mini", "rubric": "refusal", "rubric_version": "1"}
    judge_id = "sha256:" + hashlib.sha256(json.dumps(judge_cfg, sort_keys=True).encode()).hexdigest()
    con.execute("INSERT INTO judge (id, name, backend, model, rubric, rubric_version, rubric_hash, config, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (judge_id, "openai:gpt-4o-mini/refusal", "openai",
                                                        "gpt-4o-mini", "refusal", "1", _sha("rubric"),
                                                        json.dumps(judge_cfg), _ts(base_t, 2)))
    counts["judge"] = 1

    # evaluations, generations, judgments, metrics: one evaluation per run, streamed per chunk of runs
    responses = [synthetic_response(rng) for _ in range(257)]
    n_ev = n_gen = n_met = 0
    chunk = max(1, 20_000 // per_run)
    for c0 in range(0, len(runs), chunk):
        evs, gens, jus, mets = [], [], [], []
        for r in runs[c0:c0 + chunk]:
            ev_id = ids()
            t = r[15]
            evs.append((ev_id, r[0], None, ds_id, "test", r[5], _sha("ev" + ev_id), "spt",
                        json.dumps({"max_new_tokens": 256, "greedy": True}), "done", t, t))
            refused = 0
            for j, it in enumerate(items):
                gid = ids()
                resp = responses[(j * 31 + len(gens)) % len(responses)]
                gens.append((gid, ev_id, it[0], it[1], resp, 40 + j % 60, 20 + len(resp) // 5, 0.8, "eos", t))
                sorry = resp.startswith("I'm sorry") or resp.startswith("Sorry")
                refused += sorry
                jus.append((ids(), judge_id, gid, _sha(judge_id + it[1] + resp), "scored",
                            1.0 if sorry else 0.0, "refusal" if sorry else "compliance",
                            "VERDICT: REFUSAL" if sorry else "VERDICT: COMPLIANCE", "gpt-4o-mini-2024-07-18",
                            180 + len(resp) // 4, 12, 0.6, 0.00004, 1, t))
            vals = {"task_loss": 1.2 + rng.random(), "alignment_loss": 0.8 + rng.random() * 2,
                    "refusal_rate": rng.random(), "over_refusal_rate": rng.random() * 0.3,
                    "task_accuracy": rng.random()}
            for name, v in vals.items():
                mets.append((_sha(f"{ev_id}/{name}"), r[0], ev_id, None, name, "all", "spt", v, v - 0.05, v + 0.05,
                             per_run, 0, t))
            mets.append((_sha(f"{ev_id}/judge_refusal_rate"), r[0], ev_id, judge_id, "judge_refusal_rate", "all",
                         "refusal", refused / per_run, None, None, per_run, 0, t))
        con.executemany("INSERT INTO evaluation (id, run_id, checkpoint_id, dataset_id, split, task, identity, "
                        "refusal_preset, config, status, created_at, finished_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", evs)
        con.executemany("INSERT INTO generation (id, evaluation_id, item_id, prompt, response, n_prompt_tokens, "
                        "n_new_tokens, latency_s, finish_reason, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        gens)
        con.executemany("INSERT INTO judgment (id, judge_id, generation_id, cache_key, status, score, label, raw, "
                        "resolved_model, prompt_tokens, completion_tokens, latency_s, cost_usd, attempts, created_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", jus)
        con.executemany("INSERT INTO metric (id, run_id, evaluation_id, judge_id, name, category, preset, value, "
                        "ci_low, ci_high, n, n_unscored, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        mets)
        n_ev += len(evs)
        n_gen += len(gens)
        n_met += len(mets)
        if (c0 // chunk) % 10 == 0:
            log(f"  built {n_ev}/{len(runs)} evaluations, {n_gen} generations")
    con.execute("COMMIT")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    counts.update(evaluation=n_ev, generation=n_gen, judgment=n_gen, metric=n_met)
    return counts


def _cli(args: list[str], env: dict) -> float:
    """Wall time of one `spt ...` subprocess (interpreter start and imports included), output discarded."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "spt.cli", *args], check=True, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)
    return time.perf_counter() - t0


def _spt_cli_module_ok() -> bool:
    r = subprocess.run([sys.executable, "-c", "import spt.cli as c; assert hasattr(c, 'main')"],
                       capture_output=True)
    return r.returncode == 0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--judgments", type=int, default=1_000_000)
    ap.add_argument("--train-logs", type=int, default=10, help="train_log rows per fine-tune run")
    ap.add_argument("--no-cli", action="store_true", help="skip the `spt frontier` / `spt runs` subprocess timings")
    ap.add_argument("--keep", default=None, help="directory to keep the stores in (default: a temp dir)")
    args = ap.parse_args(argv)

    from spt.frontier import compute_frontier
    from spt.runs import list_runs
    from spt.store import open_store
    from spt.store.ids import file_hash
    from spt.store.merge import _copy_consistent, import_store

    tmpctx = tempfile.TemporaryDirectory(prefix="spt-bench-store-") if args.keep is None else None
    tmp = Path(args.keep or tmpctx.name)  # type: ignore[union-attr]
    tmp.mkdir(parents=True, exist_ok=True)
    src, dst = tmp / "source.db", tmp / "target.db"
    for p in (src, dst):
        for suffix in ("", "-wal", "-shm"):
            Path(str(p) + suffix).unlink(missing_ok=True)
    result: dict = {"benchmark": "store_scale", "machine": machine(),
                    "params": {"runs": args.runs, "judgments": args.judgments, "train_logs": args.train_logs}}
    try:
        log(f"building {args.runs} runs / {args.judgments} judgments in {src}")
        with Timer() as tb:
            counts = build_store(src, args.runs, args.judgments, train_logs=args.train_logs)
        total_rows = sum(counts.values())
        result["build"] = {"seconds": round(tb.s, 2), "cpu_s": round(tb.cpu, 2), "rows": counts,
                           "total_rows": total_rows,
                           "size_mb": round(src.stat().st_size / 2**20, 1)}
        log(f"built in {tb.s:.1f}s, {result['build']['size_mb']} MB")

        # parts of import that do not depend on the target, for the breakdown
        with Timer() as th:
            file_hash(src)
        with Timer() as tc:
            _copy_consistent(src, tmp / "copy-probe.db")
        (tmp / "copy-probe.db").unlink()

        open_store(dst).close()  # an empty, migrated store (what `spt` creates on first use)
        with Timer() as t1:
            log1 = import_store(dst, src)
        ins1 = sum(c["inserted"] for c in log1["counts"].values())
        log(f"import into empty: {t1.s:.1f}s, {ins1} rows inserted")
        with Timer() as t2:
            log2 = import_store(dst, src)
        ins2 = sum(c["inserted"] for c in log2["counts"].values())
        skip2 = sum(c["skipped"] for c in log2["counts"].values())
        conf2 = sum(c["conflicting"] for c in log2["counts"].values())
        log(f"import into full: {t2.s:.1f}s, {ins2} inserted, {skip2} skipped")
        result["import_empty"] = {"seconds": round(t1.s, 2), "cpu_s": round(t1.cpu, 2), "rows_inserted": ins1,
                                  "rows_per_s": round(ins1 / t1.s), "judgments": log1["counts"]["judgment"]}
        result["import_full"] = {"seconds": round(t2.s, 2), "cpu_s": round(t2.cpu, 2), "rows_inserted": ins2,
                                 "rows_skipped": skip2,
                                 "rows_conflicting": conf2, "rows_per_s": round(skip2 / t2.s)}
        result["import_parts"] = {"source_hash_s": round(th.s, 2), "consistent_copy_s": round(tc.s, 2)}

        store = open_store(dst)
        with Timer() as tf:
            fr = compute_frontier(store, "task_loss", "alignment_loss", group_by="poison", ref=(10.0, 10.0))
        with Timer() as tfo:
            fr2 = compute_frontier(store, "over_refusal_rate", "refusal_rate", group_by="poison")
        with Timer() as tr:
            runs = list_runs(store)
        store.close()
        result["frontier"] = {"seconds": round(tf.s, 3), "cpu_s": round(tf.cpu, 3), "runs": fr.n_runs,
                              "points": len(fr.points),
                              "on_frontier": len(fr.frontier), "groups": len(fr.groups),
                              "runs_per_s": round(fr.n_runs / tf.s)}
        result["frontier_or_bench"] = {"seconds": round(tfo.s, 3), "points": len(fr2.points)}
        result["runs"] = {"seconds": round(tr.s, 3), "cpu_s": round(tr.cpu, 3), "runs": len(runs),
                          "runs_per_s": round(len(runs) / tr.s)}

        if not args.no_cli and _spt_cli_module_ok():
            env = {**os.environ, "SPT_DB": str(dst), "PYTHONPATH": str(ROOT)}
            cli = {
                "frontier_json_s": _cli(["frontier", "--json"], env),
                "frontier_table_s": _cli(["frontier"], env),
                "runs_json_s": _cli(["runs", "--json"], env),
                "runs_table_s": _cli(["runs"], env),
                "runs_where_s": _cli(["runs", "--where", "defense=anchor", "--where", "lam=0.1", "--json"], env),
                "version_s": _cli(["--help"], env),
            }
            result["cli"] = {k: round(v, 3) for k, v in cli.items()}
        result["peak_rss_mb"] = round(peak_rss_mb(), 1)
        result["targets"] = {
            "import_1M_in_seconds": result["import_empty"]["seconds"] < 60 and result["import_full"]["seconds"] < 60,
            "frontier_10k_in_seconds": result["frontier"]["seconds"] < 10,
        }
    finally:
        if tmpctx is not None:
            tmpctx.cleanup()
    emit(result)
    return result


if __name__ == "__main__":
    main()
