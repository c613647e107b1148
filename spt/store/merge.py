"""`spt import`: merge another spt store into this one, keeping ids and recording provenance.

The source is copied (SQLite backup API, consistent even while it is written), the copy is
migrated to this spt's schema, and every table is merged inside one write transaction with plain
SQL, so a million-row store imports in seconds. Rows are matched by primary key:
- absent in the target: inserted;
- present with identical content (creation times aside): skipped;
- present with different content: a conflict, kept (`ignore`) or overwritten (`replace`).
Any refusal happens before the target is touched.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from spt.errors import NotAStoreError, SptError
from spt.store.engine import BUSY_TIMEOUT_MS, check_revision, open_store, read_revision, readonly_uri
from spt.store.ids import file_hash, new_id
from spt.store.models import TABLES, utcnow

ON_CONFLICT = ("ignore", "replace")
BULK_ROWS = 10_000  # from this many source rows into an empty table, indexes are rebuilt after the insert
# Not content: the same judge, dataset or metric recorded on two machines has the same content id
# but a different creation time, and is the same row, not a conflict.
NOT_COMPARED = frozenset({"created_at"})


def _validate_source(source: Path, target: Path) -> str:
    if not source.exists():
        raise SptError(f"{source} does not exist; pass the path of an spt store to import")
    if source.is_dir():
        raise SptError(f"{source} is a directory; pass the path of an spt store file")
    if target.exists() and (source.resolve() == target.resolve() or os.path.samefile(source, target)):
        raise SptError(f"{source} is the target store itself; import another store")
    if source.stat().st_size == 0:
        raise NotAStoreError(f"{source} is empty, not an spt store")
    with open(source, "rb") as f:
        if f.read(16) != b"SQLite format 3\x00":
            raise NotAStoreError(f"{source} is not a SQLite database; pass an spt store (.db)")
    revision = read_revision(source)
    if revision is None:
        raise NotAStoreError(f"{source} is an empty SQLite database, not an spt store")
    check_revision(source, revision)
    return revision


def _copy_consistent(source: Path, dest: Path) -> None:
    src = sqlite3.connect(readonly_uri(source), uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    dst = sqlite3.connect(dest)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def clean_import_leftovers(tmp_root: Path | str | None = None) -> list[str]:
    """Remove source copies (`spt-import-PID-*`) left in the temp folder by imports that were killed."""
    from spt.store.lease import _pid_alive

    removed = []
    for d in Path(tmp_root or tempfile.gettempdir()).glob("spt-import-*-*"):
        pid = d.name.split("-")[2]
        if d.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d.name)
    return removed


def import_store(target: Path | str, source: Path | str, on_conflict: str = "ignore") -> dict[str, Any]:
    """Merge the store at `source` into the store at `target`; returns per-table counts."""
    if on_conflict not in ON_CONFLICT:
        raise SptError(f"--on-conflict must be one of {', '.join(ON_CONFLICT)}, not {on_conflict!r}")
    source, target = Path(source).expanduser(), Path(target).expanduser()
    revision = _validate_source(source, target)
    source_hash = file_hash(source)

    clean_import_leftovers()
    tmpdir = Path(tempfile.mkdtemp(prefix=f"spt-import-{os.getpid()}-"))
    try:
        copy = tmpdir / "source.db"
        _copy_consistent(source, copy)
        open_store(copy).close()  # migrate the copy to the current schema
        store = open_store(target)
        store.close()
        log = {
            "id": new_id(), "source_path": str(source.resolve()), "source_hash": source_hash,
            "source_schema": revision, "on_conflict": on_conflict, "counts": {}, "imported_at": utcnow(),
        }
        log["counts"] = _merge(target, copy, on_conflict, log)
        return log
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _merge(target: Path, copy: Path, on_conflict: str, log: dict[str, Any]) -> dict[str, dict[str, int]]:
    con = sqlite3.connect(target, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    counts: dict[str, dict[str, int]] = {}
    try:
        con.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        con.execute("PRAGMA foreign_keys=ON")
        con.execute("ATTACH DATABASE ? AS src", (str(copy),))
        con.execute("BEGIN IMMEDIATE")
        try:
            for model in TABLES:
                counts[model.__tablename__] = _merge_table(con, model, on_conflict)
            _record(con, {**log, "counts": counts})
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:  # some errors (disk full, I/O) already rolled back
                con.execute("ROLLBACK")
            raise
        con.execute("DETACH DATABASE src")
    except sqlite3.IntegrityError as e:
        raise SptError(f"import failed, target unchanged: inconsistent source rows ({e})") from None
    finally:
        con.close()
    return counts


def _merge_table(con: sqlite3.Connection, model: Any, on_conflict: str) -> dict[str, int]:
    table = model.__table__
    name = table.name
    cols = [c.name for c in table.columns]
    pks = [c.name for c in table.primary_key.columns]
    q = lambda c: f'"{c}"'  # noqa: E731
    collist = ", ".join(q(c) for c in cols)
    match = " AND ".join(f"m.{q(c)} = s.{q(c)}" for c in pks)
    compared = [c for c in cols if c not in pks and c not in NOT_COMPARED]
    differs = " OR ".join(f"m.{q(c)} IS NOT s.{q(c)}" for c in compared) or "0"

    total = con.execute(f'SELECT count(*) FROM src."{name}"').fetchone()[0]
    if total == 0:
        return {"source": 0, "inserted": 0, "skipped": 0, "conflicting": 0, "replaced": 0}
    conflicting = con.execute(
        f'SELECT count(*) FROM src."{name}" s JOIN main."{name}" m ON {match} WHERE {differs}'
    ).fetchone()[0]
    existing = con.execute(f'SELECT count(*) FROM src."{name}" s JOIN main."{name}" m ON {match}').fetchone()[0]
    new = total - existing
    # Bulk load into an empty table: build its secondary indexes once afterwards (a sort) instead of
    # updating them row by row (random b-tree inserts for hash-keyed indexes). Same transaction.
    deferred: list[str] = []
    if total >= BULK_ROWS and con.execute(f'SELECT 1 FROM main."{name}" LIMIT 1').fetchone() is None:
        deferred = [r[0] for r in con.execute(
            "SELECT sql FROM main.sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL", (name,))]
        for (index,) in con.execute(
                "SELECT name FROM main.sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
                (name,)).fetchall():
            con.execute(f'DROP INDEX main."{index}"')
    cur = con.execute(
        f'INSERT OR IGNORE INTO main."{name}" ({collist}) SELECT {collist} FROM src."{name}" s '
        f'WHERE NOT EXISTS (SELECT 1 FROM main."{name}" m WHERE {match})'
    )
    inserted = cur.rowcount
    for sql in deferred:
        con.execute(sql)
    blocked = new - inserted  # new ids that collide with a unique constraint: conflicts too
    replaced = 0
    if on_conflict == "replace" and conflicting:
        sets = ", ".join(f"{q(c)} = s.{q(c)}" for c in cols if c not in pks)
        where = " AND ".join(f'main."{name}".{q(c)} = s.{q(c)}' for c in pks)
        differs_u = " OR ".join(f'main."{name}".{q(c)} IS NOT s.{q(c)}' for c in compared) or "0"
        cur = con.execute(f'UPDATE main."{name}" SET {sets} FROM src."{name}" s WHERE {where} AND ({differs_u})')
        replaced = cur.rowcount
    return {
        "source": total, "inserted": inserted, "skipped": existing - conflicting,
        "conflicting": conflicting + blocked, "replaced": replaced,
    }


def _record(con: sqlite3.Connection, log: dict[str, Any]) -> None:
    con.execute(
        "INSERT INTO main.import_log (id, source_path, source_hash, source_schema, on_conflict, counts, "
        "imported_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (log["id"], log["source_path"], log["source_hash"], log["source_schema"], log["on_conflict"],
         json.dumps(log["counts"]), log["imported_at"]),
    )
