"""The store: round-trips of every table, ids, concurrent writers, open/refuse behaviour."""

from __future__ import annotations

import multiprocessing as mp
import re
import sqlite3
import uuid

import pytest
from sqlmodel import select

from spt.errors import NotAStoreError, SchemaTooNewError, SptError
from spt.store import BatchWriter, content_id, file_hash, new_id, open_store, text_hash
from spt.store.models import (
    TABLES,
    Checkpoint,
    Dataset,
    DatasetItem,
    Evaluation,
    Generation,
    ImportLog,
    Item,
    Judge,
    Judgment,
    Metric,
    Run,
    RunAudit,
    TrainLog,
    TrajectoryStep,
)
from spt.store.schema import HEAD

UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def sample_rows() -> list:
    """One fully populated row of every table, in foreign-key order, with nested JSON values."""
    item = Item(id=content_id({"prompt": "p1"}), prompt="How do I bake bread? ünï ✓", response="Knead.",
                category="cooking", label="benign", pair_id="pair-1", template_id="t1",
                contrast_type="homonym", sensitive_word="kill", answer="42", meta={"src": [1, 2, {"x": None}]})
    ds = Dataset(id=content_id({"kind": "harmor", "items": [item.id]}), name="harmor-v1", kind="harmor",
                 n_items=1, source={"builder": "harmor", "seed": 7, "params": {"a": [1.5, True]}},
                 meta={"note": "ünïcode ✓"})
    member = DatasetItem(dataset_id=ds.id, item_id=item.id, split="test", position=3)
    base = Run(kind="base", model_ref="tiny/model", base_model="tiny/model", config={"dtype": "float32"},
               tags=["a", "b"], provenance={"torch": "2.x", "seeds": [1, 2]})
    run = Run(kind="finetune", parent_run_id=base.id, model_ref="tiny/model", base_model="tiny/model",
              task="gsm8k", defense="lisa", lam=0.5, poison_ratio=0.1, seed=3, lora=True,
              config={"lr": 1e-4, "nested": {"k": [1, 2, 3]}}, identity="sha256:abc", status="done",
              error=None, provenance={"host": "h"}, tags=["x"], notes="note", finished_at="2026-01-01T00:00:00")
    ckpt = Checkpoint(run_id=run.id, step=10, kind="adapter", path="/tmp/ck", content_hash="sha256:ff",
                      is_final=True, meta={"chat_template_hash": "sha256:00"})
    log = TrainLog(run_id=run.id, step=1, name="loss", value=1.25)
    ev = Evaluation(run_id=run.id, checkpoint_id=ckpt.id, dataset_id=ds.id, split="test", task="gsm8k",
                    identity="sha256:ev", refusal_preset="spt", config={"max_new_tokens": 32}, status="done",
                    finished_at="2026-01-01T00:00:01")
    gen = Generation(evaluation_id=ev.id, item_id=item.id, prompt="How do I bake bread?", response="Like so.",
                     n_prompt_tokens=5, n_new_tokens=3, latency_s=0.25, finish_reason="eos", meta={"t": [0.1]})
    step = TrajectoryStep(id=content_id({"generation": gen.id, "position": 0}), generation_id=gen.id, position=0,
                          thought="Thought: search first.", tool="TodoistSearchTasks",
                          tool_input='{"keywords": "Test"}',
                          observation='{"tasks": []}', meta={"emulator_summary": "valid"})
    judge = Judge(id=content_id({"backend": "keyword"}), name="keyword:spt", backend="keyword", model=None,
                  rubric="harmfulness", rubric_version="1", rubric_hash=text_hash("rubric"), config={"k": 1})
    jm = Judgment(judge_id=judge.id, generation_id=gen.id, cache_key="sha256:ck", status="scored",
                  reason=None, score=0.75, label="harmful", raw="{...}", resolved_model="m", prompt_tokens=10,
                  completion_tokens=2, latency_s=0.5, cost_usd=0.001, attempts=1)
    metric = Metric(id=content_id({"evaluation": ev.id, "name": "hs"}), run_id=run.id, evaluation_id=ev.id,
                    judge_id=judge.id, name="harmful_score", category="all", preset="spt", value=0.5,
                    ci_low=0.4, ci_high=0.6, n=100, n_unscored=2, meta={"boot": 1000})
    audit = RunAudit(run_id=run.id, key="notes", old_value=None, new_value="note")
    imp = ImportLog(source_path="/x/other.db", source_hash="sha256:11", source_schema="0001_initial",
                    on_conflict="replace", counts={"run": {"inserted": 2, "skipped": 0}})
    return [ds, item, member, base, run, ckpt, log, ev, gen, step, judge, jm, metric, audit, imp]


def _pk(row):
    return tuple(getattr(row, c.name) for c in type(row).__table__.primary_key.columns)


def test_round_trip_every_table(store):
    rows = sample_rows()
    assert {type(r) for r in rows} == set(TABLES)  # the sample covers every table
    expected = [r.model_dump() for r in rows]
    with store.write() as s:
        s.add_all(rows)
    store.close()
    with open_store(store.path) as again, again.session() as s:
        for want, row in zip(expected, rows, strict=True):
            got = s.get(type(row), _pk(row))
            assert got is not None, type(row).__name__
            assert got.model_dump() == want, type(row).__name__
        for model in TABLES:
            want_n = sum(type(r) is model for r in rows)
            assert len(s.exec(select(model)).all()) == want_n, model.__name__


def test_json_columns_round_trip(store):
    config = {"z": 1, "a": [1, 2.5, None, True, "ü"], "nested": {"deep": {"list": [{"k": "v"}]}}, "empty": {}}
    run = Run(kind="base", model_ref="m", config=config, tags=[], provenance=None)
    with store.write() as s:
        s.add(run)
    with store.session() as s:
        got = s.get(Run, run.id)
    assert got.config == config
    assert got.tags == []
    assert got.provenance is None


def test_write_rolls_back_on_error(store):
    with pytest.raises(RuntimeError):
        with store.write() as s:
            s.add(Run(kind="base", model_ref="m"))
            s.flush()
            raise RuntimeError("boom")
    with store.session() as s:
        assert s.exec(select(Run)).all() == []


def test_foreign_keys_enforced(store):
    with pytest.raises(Exception, match="FOREIGN KEY"):
        with store.write() as s:
            s.add(Checkpoint(run_id="no-such-run", path="/x"))
    with store.session() as s:
        assert s.exec(select(Checkpoint)).all() == []
    # the failed transaction left nothing behind and the store still takes writes
    with store.write() as s:
        s.add(Run(kind="base", model_ref="m"))


def test_children_added_before_parents_in_one_transaction(store):
    """The ORM does not order inserts by foreign keys (no relationships declared): checks are deferred."""
    run = Run(kind="base", model_ref="m")
    child = Run(kind="finetune", model_ref="m", parent_run_id=run.id)
    with store.write() as s:
        s.add_all([Checkpoint(run_id=child.id, path="/c"), TrainLog(run_id=run.id, step=0, name="x", value=1.0),
                   child, run])
    with store.session() as s:
        assert len(s.exec(select(Run)).all()) == 2
        assert s.exec(select(Checkpoint)).one().run_id == child.id


def test_pragmas(store):
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one().lower() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() >= 5000


def test_batch_writer_flushes_in_batches_and_on_exit(store):
    run = Run(kind="base", model_ref="m")
    with store.write() as s:
        s.add(run)
    with BatchWriter(store, batch_size=10, interval_s=3600) as w:
        for i in range(25):
            w.add(TrainLog(run_id=run.id, step=i, name="loss", value=float(i)))
        assert w.written == 20  # two full batches committed, five pending
        with store.session() as s:
            assert len(s.exec(select(TrainLog)).all()) == 20
    assert w.written == 25
    with store.session() as s:
        assert sorted(r.step for r in s.exec(select(TrainLog)).all()) == list(range(25))


# ---------------------------------------------------------------------------------------------- ids


def test_new_id_is_uuid7_and_strictly_increasing():
    ids = [new_id() for _ in range(20000)]
    assert all(UUID7.match(i) for i in ids)
    assert all(a < b for a, b in zip(ids, ids[1:], strict=False))
    assert len(set(ids)) == len(ids)
    u = uuid.UUID(ids[0])
    assert u.version == 7
    assert u.variant == uuid.RFC_4122


def test_new_id_embeds_time():
    import time

    before = time.time_ns() // 1_000_000
    i = new_id()
    after = time.time_ns() // 1_000_000
    ms = int(i.replace("-", "")[:12], 16)
    assert before <= ms <= after + 1


def _ids_worker(n: int) -> list[str]:
    from spt.store import new_id

    return [new_id() for _ in range(n)]


def test_new_id_unique_across_processes():
    ctx = mp.get_context("spawn")
    with ctx.Pool(4) as pool:
        results = pool.map(_ids_worker, [5000] * 4)
    all_ids = [i for r in results for i in r]
    assert len(all_ids) == 20000
    assert len(set(all_ids)) == 20000
    for r in results:
        assert all(a < b for a, b in zip(r, r[1:], strict=False))
        assert all(UUID7.match(i) for i in r)


def test_content_id_stable_and_key_order_independent():
    a = {"b": 1, "a": [1, 2, {"y": 2, "x": 1}], "c": "ü"}
    b = {"c": "ü", "a": [1, 2, {"x": 1, "y": 2}], "b": 1}
    assert content_id(a) == content_id(b)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", content_id(a))
    # a fixed value: the hash must not change between versions or machines
    assert content_id({"b": 1, "a": 2}) == text_hash('{"a":2,"b":1}')
    assert text_hash("abc") == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert content_id(a) != content_id({**a, "b": 2})
    assert content_id([1, 2]) != content_id([2, 1])  # list order matters


def test_file_hash(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"abc")
    assert file_hash(p) == text_hash("abc")


# ------------------------------------------------------------------------------ concurrent writers


def _writer_worker(args: tuple[str, str, int]) -> int:
    path, tag, n = args
    from spt.store import BatchWriter, open_store
    from spt.store.models import Run, TrainLog

    store = open_store(path)
    run = Run(kind="base", model_ref=tag)
    with store.write() as s:
        s.add(run)
    for i in range(n):  # many short write transactions
        with store.write() as s:
            s.add(TrainLog(run_id=run.id, step=i, name=f"{tag}-short", value=float(i)))
    with BatchWriter(store, batch_size=25, interval_s=3600) as w:
        for i in range(n * 4):
            w.add(TrainLog(run_id=run.id, step=i, name=f"{tag}-batch", value=float(i)))
    store.close()
    return n


def test_concurrent_writers_no_lock_errors(db_path):
    open_store(db_path).close()  # created up front; concurrent creation has its own test
    n = 150
    ctx = mp.get_context("spawn")
    with ctx.Pool(3) as pool:
        done = pool.map(_writer_worker, [(str(db_path), f"p{k}", n) for k in range(3)])
    assert done == [n] * 3
    with open_store(db_path) as store, store.session() as s:
        runs = s.exec(select(Run)).all()
        assert sorted(r.model_ref for r in runs) == ["p0", "p1", "p2"]
        for k in range(3):
            short = s.exec(select(TrainLog).where(TrainLog.name == f"p{k}-short")).all()
            batch = s.exec(select(TrainLog).where(TrainLog.name == f"p{k}-batch")).all()
            assert sorted(r.step for r in short) == list(range(n))
            assert sorted(r.step for r in batch) == list(range(n * 4))


def _open_worker(path: str) -> str:
    from spt.store import open_store

    with open_store(path) as store:
        return store.revision()


def test_concurrent_creation_of_new_store(tmp_path):
    path = tmp_path / "new" / "spt.db"
    ctx = mp.get_context("spawn")
    with ctx.Pool(3) as pool:
        revs = pool.map(_open_worker, [str(path)] * 3)
    assert revs == [HEAD] * 3
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT count(*) FROM alembic_version").fetchone()[0] == 1


# ------------------------------------------------------------------------------------ open / refuse


def test_open_store_creates_at_head(tmp_path):
    path = tmp_path / "sub" / "dir" / "spt.db"
    with open_store(path) as store:
        assert store.revision() == HEAD
    assert path.exists()


def test_open_store_create_false(tmp_path):
    with pytest.raises(SptError, match="does not exist"):
        open_store(tmp_path / "missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()


def test_open_store_refuses_text_file(tmp_path):
    p = tmp_path / "notes.db"
    p.write_text("hello\n" * 100)
    before = file_hash(p)
    with pytest.raises(NotAStoreError):
        open_store(p)
    assert file_hash(p) == before


def test_open_store_refuses_foreign_sqlite(tmp_path):
    p = tmp_path / "other.db"
    with sqlite3.connect(p) as con:
        con.execute("CREATE TABLE t (x)")
        con.execute("INSERT INTO t VALUES (1)")
    con.close()
    before = file_hash(p)
    with pytest.raises(NotAStoreError, match="not an spt store"):
        open_store(p)
    assert file_hash(p) == before


def test_open_store_refuses_newer_schema(db_path):
    open_store(db_path).close()
    with sqlite3.connect(db_path) as con:
        con.execute("UPDATE alembic_version SET version_num = '9999_future'")
    con.close()
    before = file_hash(db_path)
    with pytest.raises(SchemaTooNewError, match="newer"):
        open_store(db_path)
    assert file_hash(db_path) == before


def test_open_store_refuses_directory(tmp_path):
    with pytest.raises(SptError, match="directory"):
        open_store(tmp_path)


@pytest.mark.parametrize("dirname", ["with space", "hash#dir", "q?mark", "pct%20x", "ünï"])
def test_paths_with_uri_characters(tmp_path, dirname):
    path = tmp_path / dirname / "spt.db"
    with open_store(path) as store:
        with store.write() as s:
            s.add(Run(kind="base", model_ref="m"))
        assert store.revision() == HEAD
    with open_store(path) as store, store.session() as s:
        assert len(s.exec(select(Run)).all()) == 1
