"""`spt import`: merging stores keeps ids, is idempotent, handles conflicts and refuses bad sources."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spt.cli import app
from spt.errors import NotAStoreError, SchemaTooNewError, SptError
from spt.store import content_id, file_hash, open_store, text_hash
from spt.store.engine import _make_engine, upgrade_store
from spt.store.merge import import_store
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
)

runner = CliRunner()
TABLE_NAMES = [m.__tablename__ for m in TABLES]


def rows_for(tag: str) -> list:
    """Rows in every table; content rows (items, judge) are shared between tags, events are not."""
    shared_item = Item(id=content_id({"prompt": "shared"}), prompt="shared", label="benign", meta={"k": [1]})
    item = Item(id=content_id({"prompt": tag}), prompt=f"prompt {tag}", label="harmful", category="c")
    ds = Dataset(id=content_id({"ds": tag}), name=f"ds-{tag}", kind="harmor", n_items=2, source={"seed": 1})
    members = [DatasetItem(dataset_id=ds.id, item_id=i.id, split="test", position=k)
               for k, i in enumerate([shared_item, item])]
    base = Run(kind="base", model_ref="tiny", config={"tag": tag, "nested": {"a": [1, 2]}}, tags=[tag])
    run = Run(kind="finetune", model_ref="tiny", parent_run_id=base.id, lam=0.1, lora=True, status="done")
    ckpt = Checkpoint(run_id=run.id, path=f"/ck/{tag}", meta={"dtype": "float32"})
    logs = [TrainLog(run_id=run.id, step=s, name="loss", value=1.0 / (s + 1)) for s in range(3)]
    ev = Evaluation(run_id=run.id, checkpoint_id=ckpt.id, dataset_id=ds.id, identity=f"sha256:{tag}",
                    config={"n": 2})
    gens = [Generation(evaluation_id=ev.id, item_id=i.id, prompt=i.prompt, response=f"r-{tag}")
            for i in (shared_item, item)]
    judge = Judge(id=content_id({"backend": "keyword"}), name="keyword:spt", backend="keyword",
                  rubric_hash=text_hash("r"), created_at=f"2026-01-01T00:00:00+00:00 on {tag}")
    jms = [Judgment(judge_id=judge.id, generation_id=g.id, cache_key=f"ck-{g.id}", status="scored", score=0.0)
           for g in gens]
    metric = Metric(id=content_id({"ev": ev.id, "name": "hs"}), run_id=run.id, evaluation_id=ev.id,
                    judge_id=judge.id, name="hs", value=0.5, n=2)
    audit = RunAudit(run_id=run.id, key="notes", new_value=tag)
    log = ImportLog(source_path=f"/elsewhere/{tag}.db", source_hash="sha256:00", counts={"run": {"inserted": 1}})
    return [shared_item, item, ds, *members, base, run, ckpt, *logs, ev, *gens, judge, *jms, metric, audit, log]


def make_store(path: Path, tag: str, extra: list | None = None) -> Path:
    with open_store(path) as store:
        with store.write() as s:
            s.add_all(rows_for(tag) + (extra or []))
    return path


def dump(path: Path, exclude: tuple[str, ...] = ()) -> dict[str, set[tuple]]:
    """Every row of every table, as plain tuples."""
    with sqlite3.connect(path) as con:
        out = {name: set(con.execute(f'SELECT * FROM "{name}"').fetchall())
               for name in TABLE_NAMES if name not in exclude}
    con.close()
    return out


@pytest.fixture
def target(tmp_path) -> Path:
    return make_store(tmp_path / "target.db", "target")


@pytest.fixture
def source(tmp_path) -> Path:
    return make_store(tmp_path / "source.db", "source")


def test_import_keeps_ids_and_content(target, source):
    src, before = dump(source), dump(target)
    reports = []
    log = import_store(target, source, progress=reports.append)
    after = dump(target)
    n_source = sum(c["source"] for c in log["counts"].values())
    assert {(p.task, p.unit, p.total) for p in reports} == {("import", "rows", n_source)}
    assert reports[0].done == 0 and reports[-1].done == n_source  # rows merged so far, per chunk
    assert [p.done for p in reports] == sorted(p.done for p in reports)
    for name in TABLE_NAMES:
        if name in ("import_log", "judge"):
            continue
        assert src[name] <= after[name], name  # every source row, ids and all, is in the target
        assert before[name] <= after[name], name
        assert after[name] == src[name] | before[name], name
    # the judge is shared content recorded at different times on the two machines: one row, ours
    assert after["judge"] == before["judge"]
    assert {r[0] for r in src["judge"]} == {r[0] for r in after["judge"]}
    c = log["counts"]
    assert c["item"] == {"source": 2, "inserted": 1, "skipped": 1, "conflicting": 0, "replaced": 0}
    assert c["judge"]["inserted"] == 0 and c["judge"]["skipped"] == 1
    assert c["run"]["inserted"] == 2 and c["generation"]["inserted"] == 2 and c["judgment"]["inserted"] == 2
    assert c["import_log"]["inserted"] == 1  # the source's own import history comes along
    assert all(v["conflicting"] == 0 for v in c.values())


def test_import_log_records_source(target, source):
    h = file_hash(source)
    log = import_store(target, source)
    with open_store(target) as store, store.session() as s:
        entry = s.get(ImportLog, log["id"])
    assert entry is not None
    assert entry.source_path == str(source.resolve())
    assert entry.source_hash == h
    assert entry.source_schema == log["source_schema"]
    assert entry.on_conflict == "ignore"
    assert entry.counts == log["counts"]
    assert entry.counts["run"]["inserted"] == 2


def test_import_is_idempotent(target, source):
    first = import_store(target, source)
    after_first = dump(target, exclude=("import_log",))
    second = import_store(target, source)
    assert dump(target, exclude=("import_log",)) == after_first
    for name, c in second["counts"].items():
        assert c["inserted"] == 0, name
        assert c["conflicting"] == 0, name
        assert c["skipped"] == c["source"] == first["counts"][name]["source"], name
    with sqlite3.connect(target) as con:
        n_logs = con.execute("SELECT count(*) FROM import_log").fetchone()[0]
    assert n_logs == 1 + 1 + 2  # target's own row, source's row, one per import


def test_import_into_new_target(tmp_path, source):
    new = tmp_path / "fresh" / "spt.db"
    log = import_store(new, source)
    assert dump(new, exclude=("import_log",)) == dump(source, exclude=("import_log",))
    assert sum(c["inserted"] for c in log["counts"].values()) == sum(len(v) for v in dump(source).values())


def test_import_leaves_source_unchanged(target, source):
    h = file_hash(source)
    import_store(target, source)
    assert file_hash(source) == h
    assert dump(source)["run"]


def test_import_sees_rows_still_in_the_source_wal(target, tmp_path):
    """A source held open by another writer: committed rows still in its WAL are imported."""
    path = tmp_path / "busy.db"
    store = open_store(path)
    try:
        with store.write() as s:
            s.add_all(rows_for("busy"))
        assert path.with_name("busy.db-wal").stat().st_size > 0
        log = import_store(target, path)
    finally:
        store.close()
    assert log["counts"]["run"]["inserted"] == 2


def test_import_from_store_at_first_revision(target, tmp_path):
    old = tmp_path / "old.db"
    engine = _make_engine(old)
    upgrade_store(engine, "0001_initial")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO run (id, kind, model_ref, status, created_at, updated_at) "
            "VALUES ('01900000-0000-7000-8000-000000000001', 'base', 'tiny', 'done', 't', 't')")
    engine.dispose()
    h = file_hash(old)
    log = import_store(target, old)
    assert log["source_schema"] == "0001_initial"
    assert log["counts"]["run"]["inserted"] == 1
    assert log["counts"]["run_audit"]["source"] == 0
    assert file_hash(old) == h  # the copy was migrated, not the source
    with open_store(target) as store, store.session() as s:
        assert s.get(Run, "01900000-0000-7000-8000-000000000001").model_ref == "tiny"


# ------------------------------------------------------------------------------------- conflicts


@pytest.fixture
def conflicting(tmp_path):
    """Two stores sharing a run id and a metric id whose contents differ."""
    run_id = "01900000-0000-7000-8000-0000000000aa"
    mid = content_id({"metric": "same"})
    t = make_store(tmp_path / "t.db", "t", [Run(id=run_id, kind="base", model_ref="ours", notes="ours"),
                                             Metric(id=mid, name="acc", value=0.1, n=10)])
    s = make_store(tmp_path / "s.db", "s", [Run(id=run_id, kind="base", model_ref="theirs", notes="theirs"),
                                             Metric(id=mid, name="acc", value=0.9, n=10)])
    return t, s, run_id, mid


def _get(path, model, pk):
    with open_store(path) as store, store.session() as s:
        return s.get(model, pk)


def test_conflict_ignore_keeps_target(conflicting):
    t, s, run_id, mid = conflicting
    log = import_store(t, s, on_conflict="ignore")
    assert log["counts"]["run"]["conflicting"] == 1
    assert log["counts"]["run"]["replaced"] == 0
    assert log["counts"]["metric"]["conflicting"] == 1
    assert _get(t, Run, run_id).model_ref == "ours"
    assert _get(t, Metric, mid).value == 0.1
    again = import_store(t, s, on_conflict="ignore")  # still conflicting, still nothing inserted
    assert again["counts"]["run"]["conflicting"] == 1
    assert sum(c["inserted"] for c in again["counts"].values()) == 0


def test_conflict_replace_takes_source(conflicting):
    t, s, run_id, mid = conflicting
    log = import_store(t, s, on_conflict="replace")
    assert log["counts"]["run"]["conflicting"] == 1
    assert log["counts"]["run"]["replaced"] == 1
    assert log["counts"]["metric"]["replaced"] == 1
    got = _get(t, Run, run_id)
    assert (got.model_ref, got.notes) == ("theirs", "theirs")
    assert _get(t, Metric, mid).value == 0.9
    again = import_store(t, s, on_conflict="replace")  # now identical: skipped
    assert again["counts"]["run"]["conflicting"] == 0
    assert again["counts"]["run"]["replaced"] == 0


def test_conflict_on_unique_constraint_is_counted(tmp_path):
    """Different ids for the same (evaluation, item) generation: not inserted, counted as a conflict."""
    src_rows = rows_for("x")
    ev = next(r for r in src_rows if isinstance(r, Evaluation))
    gen = next(r for r in src_rows if isinstance(r, Generation))
    t = tmp_path / "t.db"
    with open_store(t) as store, store.write() as sess:
        sess.add_all(src_rows)
    s = tmp_path / "s.db"
    with sqlite3.connect(t) as con:  # the source: same store, but one generation re-made under a new id
        con.execute(f"VACUUM INTO '{s}'")
    con.close()
    with open_store(s) as store, store.write() as sess:
        sess.connection().exec_driver_sql("DELETE FROM judgment WHERE generation_id = ?", (gen.id,))
        sess.connection().exec_driver_sql("DELETE FROM generation WHERE id = ?", (gen.id,))
        sess.add(Generation(evaluation_id=ev.id, item_id=gen.item_id, prompt="p", response="other"))
    log = import_store(t, s)
    assert log["counts"]["generation"]["inserted"] == 0
    assert log["counts"]["generation"]["conflicting"] == 1


def test_inconsistent_source_is_refused_and_target_unchanged(target, tmp_path):
    bad = make_store(tmp_path / "bad.db", "bad")
    with sqlite3.connect(bad) as con:  # foreign keys are off in a plain connection
        con.execute("INSERT INTO checkpoint (id, run_id, step, kind, path, is_final, created_at) "
                    "VALUES ('c1', 'no-such-run', 0, 'full', '/x', 0, 't')")
    con.close()
    before = file_hash(target)
    with pytest.raises(SptError, match="target unchanged"):
        import_store(target, bad)
    assert file_hash(target) == before


# -------------------------------------------------------------------------------------- refusals


def _text(tmp_path):
    p = tmp_path / "notes.db"
    p.write_text("not a database\n" * 50)
    return p


def _foreign_sqlite(tmp_path):
    p = tmp_path / "foreign.db"
    with sqlite3.connect(p) as con:
        con.execute("CREATE TABLE things (x)")
        con.execute("INSERT INTO things VALUES (1)")
    con.close()
    return p


def _empty_sqlite(tmp_path):
    p = tmp_path / "empty.db"
    with sqlite3.connect(p) as con:
        con.execute("PRAGMA user_version=1")  # a valid header, no tables
    con.close()
    return p


def _zero_bytes(tmp_path):
    p = tmp_path / "zero.db"
    p.write_bytes(b"")
    return p


def _newer(tmp_path):
    p = make_store(tmp_path / "newer.db", "newer")
    with sqlite3.connect(p) as con:
        con.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    con.close()
    return p


REFUSALS = {
    "missing": (lambda tmp, target: tmp / "nope.db", SptError, "does not exist"),
    "directory": (lambda tmp, target: tmp, SptError, "directory"),
    "text": (lambda tmp, target: _text(tmp), NotAStoreError, "not a SQLite"),
    "zero-bytes": (lambda tmp, target: _zero_bytes(tmp), NotAStoreError, "empty"),
    "foreign-sqlite": (lambda tmp, target: _foreign_sqlite(tmp), NotAStoreError, "not an spt store"),
    "empty-sqlite": (lambda tmp, target: _empty_sqlite(tmp), NotAStoreError, "not an spt store"),
    "newer": (lambda tmp, target: _newer(tmp), SchemaTooNewError, "newer"),
    "itself": (lambda tmp, target: target, SptError, "target store itself"),
    "itself-other-spelling": (lambda tmp, target: target.parent / "." / ".." / target.parent.name / target.name,
                              SptError, "target store itself"),
}


def _hardlink(tmp, target):
    p = tmp / "link.db"
    os.link(target, p)
    return p


REFUSALS["itself-hardlink"] = (_hardlink, SptError, "target store itself")


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refused_import_library(case, target, tmp_path):
    make, exc, msg = REFUSALS[case]
    src = make(tmp_path, target)
    before = file_hash(target)
    with pytest.raises(exc, match=msg):
        import_store(target, src)
    assert file_hash(target) == before


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refused_import_cli(case, target, tmp_path):
    make, _, msg = REFUSALS[case]
    src = make(tmp_path, target)
    before = file_hash(target)
    src_before = file_hash(src) if src.is_file() else None
    result = runner.invoke(app, ["--db", str(target), "import", str(src)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and msg in lines[0]
    assert "Traceback" not in result.output
    assert file_hash(target) == before
    if src_before is not None:
        assert file_hash(src) == src_before


def test_refused_invalid_on_conflict(target, source):
    before = file_hash(target)
    with pytest.raises(SptError, match="`on_conflict`"):
        import_store(target, source, on_conflict="merge")
    result = runner.invoke(app, ["--db", str(target), "import", str(source), "--on-conflict", "merge"])
    assert result.exit_code != 0
    assert len(result.stderr.strip().splitlines()) == 1
    assert file_hash(target) == before


def test_refused_import_into_newer_target(tmp_path, source):
    target = _newer(tmp_path)
    before = file_hash(target)
    result = runner.invoke(app, ["--db", str(target), "import", str(source)])
    assert result.exit_code == 2
    assert "newer" in result.stderr
    assert file_hash(target) == before


# ------------------------------------------------------------------------------------------- CLI


def test_cli_import_json(target, source):
    result = runner.invoke(app, ["--db", str(target), "import", str(source), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["source_path"] == str(source.resolve())
    assert data["source_hash"] == file_hash(source)
    assert data["counts"]["run"]["inserted"] == 2
    assert set(data["counts"]) == set(TABLE_NAMES)
    result = runner.invoke(app, ["--db", str(target), "import", str(source), "--json"])
    assert result.exit_code == 0
    assert all(c["inserted"] == 0 for c in json.loads(result.stdout)["counts"].values())


def test_cli_import_table_and_replace(conflicting):
    t, s, run_id, _ = conflicting
    result = runner.invoke(app, ["import", str(s), "--db", str(t), "--on-conflict", "replace"])
    assert result.exit_code == 0, result.output
    assert "conflicting" in result.stdout and "replace" in result.stdout
    assert _get(t, Run, run_id).model_ref == "theirs"


def test_cli_import_uses_spt_db(monkeypatch, target, source):
    monkeypatch.setenv("SPT_DB", str(target))
    result = runner.invoke(app, ["import", str(source), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["counts"]["run"]["inserted"] == 2
    assert dump(source, exclude=("import_log",))["run"] <= dump(target)["run"]


def test_import_from_path_with_uri_characters(tmp_path, target):
    src = make_store(tmp_path / "odd #?%20 dir" / "src.db", "odd")
    log = import_store(target, src)
    assert log["counts"]["run"]["inserted"] == 2


def test_import_child_rows_stored_before_their_parents(tmp_path, target):
    """Source rows in any physical order (a child run before its parent) merge in one statement."""
    parent = Run(kind="base", model_ref="p")
    child = Run(kind="finetune", model_ref="c", parent_run_id=parent.id)
    grandchild = Run(kind="merge", model_ref="g", parent_run_id=child.id)
    src = tmp_path / "src.db"
    with open_store(src) as store:
        with store.write() as s:
            s.add(parent)
        with store.write() as s:  # the grandchild is written before its parent (keys checked at commit)
            s.add(grandchild)
            s.flush()
            s.add(child)
    with sqlite3.connect(src) as con:
        order = [r[0] for r in con.execute("SELECT model_ref FROM run ORDER BY rowid")]
    con.close()
    assert order == ["p", "g", "c"]
    log = import_store(target, src)
    assert log["counts"]["run"]["inserted"] == 3
    assert _get(target, Run, grandchild.id).parent_run_id == child.id


def test_import_own_backup_is_a_no_op(target, tmp_path):
    backup = tmp_path / "backup.db"
    result = runner.invoke(app, ["--db", str(target), "db", "backup", str(backup)])
    assert result.exit_code == 0, result.output
    log = import_store(target, backup)
    assert all(c["inserted"] == 0 and c["conflicting"] == 0 for c in log["counts"].values())


def test_refused_import_into_non_store_target(tmp_path, source):
    target = tmp_path / "notes.db"
    target.write_text("my notes\n")
    result = runner.invoke(app, ["--db", str(target), "import", str(source)])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert target.read_text() == "my notes\n"
