"""Migrations: the models and the alembic revisions agree, old stores upgrade, schema.py is in sync."""

from __future__ import annotations

import sqlite3

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.operations import Operations
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlmodel import SQLModel, create_engine

from spt.errors import SptError
from spt.store import content_id, open_store
from spt.store.engine import _make_engine, read_revision, upgrade_store
from spt.store.models import TABLES, Checkpoint, Dataset, DatasetItem, Item, Run, RunAudit
from spt.store.schema import HEAD, REVISIONS, migrations_dir

FIRST = "0001_initial"


def _script() -> ScriptDirectory:
    return ScriptDirectory(str(migrations_dir()))


def test_models_and_migrations_agree(tmp_path):
    engine = _make_engine(tmp_path / "m.db")
    upgrade_store(engine)
    with engine.connect() as conn:
        mc = MigrationContext.configure(conn, opts={"compare_type": True, "render_as_batch": True})
        diff = compare_metadata(mc, SQLModel.metadata)
    engine.dispose()
    assert diff == []


def test_compare_detects_a_difference(tmp_path):
    """The agreement test above can fail: a store missing a revision differs from the models."""
    engine = _make_engine(tmp_path / "m.db")
    upgrade_store(engine, FIRST)
    with engine.connect() as conn:
        mc = MigrationContext.configure(conn, opts={"compare_type": True, "render_as_batch": True})
        diff = compare_metadata(mc, SQLModel.metadata)
    engine.dispose()
    assert any(d[0] == "add_table" and d[1].name == "run_audit" for d in diff)


def test_every_model_table_is_migrated(store):
    tables = set(inspect(store.engine).get_table_names())
    assert {m.__tablename__ for m in TABLES} <= tables
    assert set(SQLModel.metadata.tables) == {m.__tablename__ for m in TABLES}


def test_schema_constants_match_script_directory():
    script = _script()
    revs = [r.revision for r in script.walk_revisions()][::-1]  # walk is newest first
    assert tuple(revs) == REVISIONS
    assert script.get_current_head() == HEAD
    assert len(script.get_heads()) == 1
    assert REVISIONS[0] == FIRST
    assert (migrations_dir() / "env.py").exists()


def test_migrations_ship_inside_the_package():
    import spt.migrations

    assert migrations_dir() == __import__("pathlib").Path(spt.migrations.__file__).parent
    assert (migrations_dir() / "versions" / "0001_initial.py").exists()


def test_upgrade_from_first_revision_keeps_rows(tmp_path):
    path = tmp_path / "old.db"
    engine = _make_engine(path)
    upgrade_store(engine, FIRST)
    assert read_revision(path) == FIRST
    assert "run_audit" not in inspect(engine).get_table_names()

    item = Item(id=content_id({"p": "x"}), prompt="x", label="benign", meta={"k": [1, 2]})
    ds = Dataset(id=content_id({"d": 1}), name="d", kind="harmor", n_items=1, source={"seed": 1})
    base = Run(kind="base", model_ref="tiny", config={"a": {"b": 1}}, tags=["t"])
    child = Run(kind="finetune", model_ref="tiny", parent_run_id=base.id, lam=0.5, lora=True)
    ckpt = Checkpoint(run_id=child.id, path="/ck", meta={"dtype": "float32"})
    rows = [item, ds, DatasetItem(dataset_id=ds.id, item_id=item.id, split="test"), base, child, ckpt]
    dumped = [r.model_dump() for r in rows]
    # Insert only the columns the old schema has (later revisions add columns to these tables).
    with engine.connect() as conn, conn.begin():
        for r in rows:
            table = type(r).__table__
            old_cols = {c["name"] for c in inspect(conn).get_columns(table.name)}
            conn.execute(table.insert().values({c.name: getattr(r, c.name) for c in table.columns
                                                if c.name in old_cols}))
    engine.dispose()

    with open_store(path) as store:
        assert store.revision() == HEAD
        assert "run_audit" in inspect(store.engine).get_table_names()
        with store.session() as s:
            for want, row in zip(dumped, rows, strict=True):
                pk = tuple(getattr(row, c.name) for c in type(row).__table__.primary_key.columns)
                assert s.get(type(row), pk).model_dump() == want
        with store.write() as s:  # the new table works
            s.add(RunAudit(run_id=base.id, key="notes", new_value="n"))
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []


def test_open_without_upgrade_refuses_old_store(tmp_path):
    path = tmp_path / "old.db"
    engine = _make_engine(path)
    upgrade_store(engine, FIRST)
    engine.dispose()
    with pytest.raises(SptError, match="spt db upgrade"):
        open_store(path, upgrade=False)
    assert read_revision(path) == FIRST


def test_upgrade_store_runs_with_foreign_keys_off(tmp_path, monkeypatch):
    """A revision that recreates a parent table must not trip foreign keys during the upgrade."""
    path = tmp_path / "s.db"
    with open_store(path) as store:
        run = Run(kind="base", model_ref="m")
        with store.write() as s:
            s.add_all([run, Checkpoint(run_id=run.id, path="/c")])
    seen = {}

    import alembic.command

    def fake_upgrade(cfg, target):
        conn = cfg.attributes["connection"]
        seen["fk"] = conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one()
        ops = Operations(MigrationContext.configure(conn))
        with ops.batch_alter_table("run", recreate="always") as batch:
            batch.alter_column("notes", existing_type=None, nullable=True)

    monkeypatch.setattr(alembic.command, "upgrade", fake_upgrade)
    engine = _make_engine(path)
    upgrade_store(engine)
    with engine.connect() as conn:  # foreign keys are back on for the pooled connection
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
    engine.dispose()
    assert seen["fk"] == 0
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT count(*) FROM checkpoint").fetchone()[0] == 1


def test_direct_create_all_matches_migrations(tmp_path):
    """Tables made from the models directly and by the migrations have the same columns."""
    from spt.store.engine import create_tables_directly

    direct = create_engine(f"sqlite:///{tmp_path / 'direct.db'}")
    create_tables_directly(direct)
    migrated = _make_engine(tmp_path / "migrated.db")
    upgrade_store(migrated)
    a, b = inspect(direct), inspect(migrated)
    for m in TABLES:
        name = m.__tablename__
        assert [c["name"] for c in a.get_columns(name)] == [c["name"] for c in b.get_columns(name)], name
    direct.dispose()
    migrated.dispose()


def test_upgrade_to_0005_resolves_duplicates_then_enforces_one_running_evaluation_and_one_current_judgment(
        tmp_path):
    """An old store may hold two running evaluations of one identity and two current judgments of one judge
    on one generation (older spt had no index). 0005 keeps the newest of each (ids are time-ordered), marks
    the others failed / superseded by it, and from then on the database refuses new duplicates."""
    from sqlalchemy.exc import IntegrityError

    from spt.store.ids import new_id

    path = tmp_path / "old.db"
    engine = _make_engine(path)
    upgrade_store(engine, "0004_run_leases")
    ids = sorted(new_id() for _ in range(9))  # time-ordered: a later id is a newer row
    run, ev_old, ev_mid, ev_new, ev_other, gen, j_old, j_new, j_other = ids
    judge, item, ds = "sha256:judge", "sha256:item", "sha256:ds"
    with engine.connect() as conn, conn.begin():
        x = conn.exec_driver_sql
        x("INSERT INTO run (id, kind, model_ref, status, created_at, updated_at) VALUES "
          "(?, 'base', 'm', 'done', 't', 't')", (run,))
        x("INSERT INTO item (id, prompt, label) VALUES (?, 'p', 'benign')", (item,))
        for eid, ident, status in ((ev_new, "A", "running"), (ev_old, "A", "running"), (ev_mid, "A", "done"),
                                   (ev_other, "B", "running")):
            x("INSERT INTO evaluation (id, run_id, identity, status, created_at) VALUES (?, ?, ?, ?, 't')",
              (eid, run, ident, status))
        x("INSERT INTO generation (id, evaluation_id, item_id, prompt, response, created_at) "
          "VALUES (?, ?, ?, 'p', 'r', 't')", (gen, ev_old, item))
        x("INSERT INTO judge (id, name, backend, created_at) VALUES (?, 'k', 'keyword', 't')", (judge,))
        for jid in (j_new, j_old, j_other):  # j_other: judged by the same judge, but already superseded
            x("INSERT INTO judgment (id, judge_id, generation_id, cache_key, status, superseded_by, created_at) "
              "VALUES (?, ?, ?, 'c', 'scored', ?, 't')", (jid, judge, gen, "someone" if jid == j_other else None))
        x("INSERT INTO import_log (id, source_path, source_hash, on_conflict, imported_at) "
          "VALUES (?, 's', 'h', 'ignore', 'when')", (ds,))
    engine.dispose()

    with open_store(path) as store:
        assert store.revision() == HEAD
        with store.engine.connect() as conn:
            q = lambda sql: conn.exec_driver_sql(sql).fetchall()  # noqa: E731
            assert dict(q("SELECT id, status FROM evaluation")) == {
                ev_old: "failed", ev_mid: "done", ev_new: "running", ev_other: "running"}
            assert "same identity" in q(f"SELECT error FROM evaluation WHERE id = '{ev_old}'")[0][0]
            assert dict(q("SELECT id, superseded_by FROM judgment")) == {
                j_old: j_new, j_new: None, j_other: "someone"}
            assert q("SELECT finished_at FROM import_log") == [("when",)]  # old imports were finished
        # the indexes now refuse a second running evaluation / a second current judgment
        with pytest.raises(IntegrityError), store.write() as s:
            s.exec(text("INSERT INTO evaluation (id, run_id, identity, status, created_at) "
                        f"VALUES ('{new_id()}', '{run}', 'A', 'running', 't')"))
        with pytest.raises(IntegrityError), store.write() as s:
            s.exec(text("INSERT INTO judgment (id, judge_id, generation_id, cache_key, status, created_at) "
                        f"VALUES ('{new_id()}', '{judge}', '{gen}', 'c', 'scored', 't')"))
        with store.write() as s:  # superseding first, then inserting, is allowed
            newer = new_id()
            s.exec(text(f"UPDATE judgment SET superseded_by = '{newer}' WHERE id = '{j_new}'"))
            s.exec(text("INSERT INTO judgment (id, judge_id, generation_id, cache_key, status, created_at) "
                        f"VALUES ('{newer}', '{judge}', '{gen}', 'c', 'scored', 't')"))
            # another identity may run alongside, and a done row of identity A may coexist with the running one
            s.exec(text("INSERT INTO evaluation (id, run_id, identity, status, created_at) "
                        f"VALUES ('{new_id()}', '{run}', 'A', 'done', 't')"))
