"""`spt db path|status|backup|upgrade`."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from typer.testing import CliRunner

from spt.cli import app
from spt.store import file_hash, open_store
from spt.store.engine import _make_engine, read_revision, upgrade_store
from spt.store.models import TABLES, Checkpoint, Run
from spt.store.schema import HEAD

runner = CliRunner()
TABLE_NAMES = [m.__tablename__ for m in TABLES]


def _ok(args, **kw):
    result = runner.invoke(app, args, **kw)
    assert result.exit_code == 0, result.output
    return result


def _dump(path: Path) -> dict[str, list[tuple]]:
    with sqlite3.connect(path) as con:
        out = {n: sorted(con.execute(f'SELECT * FROM "{n}"').fetchall(), key=repr) for n in TABLE_NAMES}
    con.close()
    return out


def _add_runs(path: Path, n: int) -> None:
    with open_store(path) as store:
        for i in range(n):
            run = Run(kind="base", model_ref=f"m{i}", config={"i": i})
            with store.write() as s:
                s.add_all([run, Checkpoint(run_id=run.id, path=f"/c{i}")])


# ------------------------------------------------------------------------------------------ status


def test_status_creates_new_store_at_head(tmp_path):
    path = tmp_path / "new" / "x.db"
    result = _ok(["--db", str(path), "db", "status"])
    assert path.exists()
    assert read_revision(path) == HEAD
    assert HEAD in result.stdout
    assert str(path) in result.stdout


def test_status_json(tmp_path):
    path = tmp_path / "x.db"
    data = json.loads(_ok(["--db", str(path), "db", "status", "--json"]).stdout)
    assert data["schema"] == data["head"] == HEAD
    assert data["up_to_date"] is True
    assert data["path"] == str(path)
    assert data["size_bytes"] > 0
    assert data["tables"] == {n: 0 for n in TABLE_NAMES}
    _add_runs(path, 3)
    data = json.loads(_ok(["db", "status", "--db", str(path), "--json"]).stdout)
    assert data["tables"]["run"] == 3 and data["tables"]["checkpoint"] == 3


def test_status_refuses_non_store(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello\n" * 100)
    before = file_hash(p)
    result = runner.invoke(app, ["--db", str(p), "db", "status"])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert file_hash(p) == before


# -------------------------------------------------------------------------------------------- path


def test_path_honours_db_option(tmp_path):
    assert _ok(["--db", str(tmp_path / "a.db"), "db", "path"]).stdout.strip() == str(tmp_path / "a.db")
    assert _ok(["db", "path", "--db", str(tmp_path / "b.db")]).stdout.strip() == str(tmp_path / "b.db")
    # the command's own --db wins over the global one
    out = _ok(["--db", str(tmp_path / "a.db"), "db", "path", "--db", str(tmp_path / "b.db")]).stdout
    assert out.strip() == str(tmp_path / "b.db")
    assert not (tmp_path / "a.db").exists()  # `db path` creates nothing


def test_path_honours_spt_db(tmp_path, monkeypatch):
    monkeypatch.setenv("SPT_DB", str(tmp_path / "env.db"))
    assert _ok(["db", "path"]).stdout.strip() == str(tmp_path / "env.db")
    # --db beats SPT_DB
    assert _ok(["--db", str(tmp_path / "opt.db"), "db", "path"]).stdout.strip() == str(tmp_path / "opt.db")


def test_path_honours_spt_home(tmp_path, monkeypatch):
    monkeypatch.delenv("SPT_DB", raising=False)
    monkeypatch.setenv("SPT_HOME", str(tmp_path / "home"))
    assert _ok(["db", "path"]).stdout.strip() == str(tmp_path / "home" / "spt.db")
    monkeypatch.setenv("SPT_DB", str(tmp_path / "env.db"))  # SPT_DB beats SPT_HOME
    assert _ok(["db", "path"]).stdout.strip() == str(tmp_path / "env.db")


def test_default_store_is_used_by_status(tmp_path, monkeypatch):
    monkeypatch.setenv("SPT_HOME", str(tmp_path / "home"))
    data = json.loads(_ok(["db", "status", "--json"]).stdout)
    assert data["path"] == str(tmp_path / "home" / "spt.db")
    assert (tmp_path / "home" / "spt.db").exists()


# ------------------------------------------------------------------------------------------ backup


def test_backup_copies_rows(tmp_path):
    src = tmp_path / "s.db"
    _add_runs(src, 5)
    dest = tmp_path / "backup.db"
    data = json.loads(_ok(["--db", str(src), "db", "backup", str(dest), "--json"]).stdout)
    assert data["backup"] == str(dest)
    assert _dump(dest) == _dump(src)
    with open_store(dest) as b:
        assert b.revision() == HEAD
    assert _dump(dest) == _dump(src)


def test_backup_refuses_existing_destination(tmp_path):
    src = tmp_path / "s.db"
    _add_runs(src, 1)
    dest = tmp_path / "exists.db"
    dest.write_text("precious")
    result = runner.invoke(app, ["--db", str(src), "db", "backup", str(dest)])
    assert result.exit_code == 2
    assert "already exists" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert dest.read_text() == "precious"


def test_backup_refuses_missing_directory_and_missing_store(tmp_path):
    src = tmp_path / "s.db"
    _add_runs(src, 1)
    result = runner.invoke(app, ["--db", str(src), "db", "backup", str(tmp_path / "no" / "dir" / "b.db")])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    missing = tmp_path / "missing.db"
    result = runner.invoke(app, ["--db", str(missing), "db", "backup", str(tmp_path / "b.db")])
    assert result.exit_code == 2
    assert not missing.exists() and not (tmp_path / "b.db").exists()


def test_backup_is_consistent_while_another_writer_commits(tmp_path):
    """Each transaction adds a run and its checkpoint: a consistent copy always has equal counts."""
    src = tmp_path / "s.db"
    open_store(src).close()
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer():
        try:
            with open_store(src) as store:
                while not stop.is_set():
                    run = Run(kind="base", model_ref="m")
                    with store.write() as s:
                        s.add_all([run, Checkpoint(run_id=run.id, path="/c")])
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=writer)
    t.start()
    try:
        for i in range(3):
            dest = tmp_path / f"b{i}.db"
            _ok(["--db", str(src), "db", "backup", str(dest)])
            with sqlite3.connect(dest) as con:
                runs = con.execute("SELECT count(*) FROM run").fetchone()[0]
                ckpts = con.execute("SELECT count(*) FROM checkpoint").fetchone()[0]
                assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            con.close()
            assert runs == ckpts
    finally:
        stop.set()
        t.join()
    assert not errors


# ----------------------------------------------------------------------------------------- upgrade


def test_upgrade_old_store(tmp_path):
    path = tmp_path / "old.db"
    engine = _make_engine(path)
    upgrade_store(engine, "0001_initial")
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO run (id, kind, model_ref, status, created_at, updated_at) "
                             "VALUES ('r1', 'base', 'tiny', 'done', 't', 't')")
    engine.dispose()
    data = json.loads(_ok(["--db", str(path), "db", "upgrade", "--json"]).stdout)
    assert data == {"path": str(path), "from": "0001_initial", "to": HEAD}
    assert read_revision(path) == HEAD
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT model_ref FROM run WHERE id = 'r1'").fetchone() == ("tiny",)
    con.close()
    out = _ok(["--db", str(path), "db", "upgrade"]).stdout  # already at head: a no-op
    assert HEAD in out


def test_upgrade_new_path(tmp_path):
    path = tmp_path / "fresh.db"
    data = json.loads(_ok(["--db", str(path), "db", "upgrade", "--json"]).stdout)
    assert data["from"] is None and data["to"] == HEAD


def test_upgrade_refuses_newer_store(tmp_path):
    path = tmp_path / "x.db"
    open_store(path).close()
    with sqlite3.connect(path) as con:
        con.execute("UPDATE alembic_version SET version_num = '9999_future'")
    con.close()
    before = file_hash(path)
    result = runner.invoke(app, ["--db", str(path), "db", "upgrade"])
    assert result.exit_code == 2
    assert "newer" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert file_hash(path) == before


def test_backup_to_and_from_paths_with_uri_characters(tmp_path):
    src = tmp_path / "a #dir?" / "s.db"
    _add_runs(src, 2)
    dest = tmp_path / "b %20 dir#" / "copy?.db"
    dest.parent.mkdir()
    _ok(["--db", str(src), "db", "backup", str(dest)])
    assert _dump(dest) == _dump(src)
