"""`spt import`: merge another spt store into this one, keeping ids and recording provenance.

The source is copied (SQLite backup API, consistent even while it is written), the copy is
migrated to this spt's schema, and every table is merged with plain SQL. Rows are matched by primary key:
- absent in the target: inserted;
- present with identical content (creation times aside): skipped;
- present with different content: a conflict, kept (`ignore`) or overwritten (`replace`).
Any refusal (not a store, newer schema, rows referencing rows that exist in neither store) happens before
the target is touched.

The merge commits in chunks of source rows (`$SPT_IMPORT_CHUNK_ROWS`, default 20 000; a table that refers
to itself, `run`, goes in one statement so a child may precede its parent), each chunk one short immediate
transaction, so other writers (a training run's logger, a sweep worker) get the lock between chunks
instead of waiting minutes. Each chunk also advances the import's `import_log` row (per-table counts and
a cursor, `progress`) in the same transaction, so a killed import is resumed by the next import of the
same source into the same store: it continues after the last committed chunk and ends with the same rows
and the same counts as an uninterrupted import. `finished_at` is set when the last chunk is in.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spt.errors import NotAStoreError, SptError
from spt.progress import ProgressFn, report
from spt.store.engine import BUSY_TIMEOUT_MS, check_revision, connect_readonly, open_store, read_revision
from spt.store.ids import file_hash, new_id
from spt.store.models import TABLES, utcnow

ON_CONFLICT = ("ignore", "replace")
CHUNK_ENV = "SPT_IMPORT_CHUNK_ROWS"
DEFAULT_CHUNK_ROWS = 20_000
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
    src = connect_readonly(source, timeout=BUSY_TIMEOUT_MS / 1000)
    dst = sqlite3.connect(dest)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def clean_import_leftovers(tmp_root: Path | str | None = None) -> list[str]:
    """Remove source copies (`spt-import-PID-*`) left in the temp folder by imports that were killed."""
    from spt.tmpfiles import pid_alive

    removed = []
    for d in Path(tmp_root or tempfile.gettempdir()).glob("spt-import-*-*"):
        pid = d.name.split("-")[2]
        if d.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d.name)
    return removed


def chunk_rows() -> int:
    """Source rows per committed chunk: $SPT_IMPORT_CHUNK_ROWS, else 20 000."""
    from spt.env import env_int

    return env_int(CHUNK_ENV, DEFAULT_CHUNK_ROWS)


def import_store(target: Path | str, source: Path | str, on_conflict: str = "ignore",
                 progress: ProgressFn | None = None) -> dict[str, Any]:
    """Merge the store at `source` into the store at `target`; returns the import_log entry with counts.

    Resumes an unfinished import of the same source (same path and content hash) into this target.
    `progress` gets `Progress("import", rows merged, rows in the source, "rows", table=...)` per chunk.
    """
    if on_conflict not in ON_CONFLICT:
        raise SptError(f"`on_conflict` must be one of {', '.join(ON_CONFLICT)}, not {on_conflict!r}")
    source, target = Path(source).expanduser(), Path(target).expanduser()
    revision = _validate_source(source, target)
    source_hash = file_hash(source)

    clean_import_leftovers()
    tmpdir = Path(tempfile.mkdtemp(prefix=f"spt-import-{os.getpid()}-"))
    try:
        copy = tmpdir / "source.db"
        _copy_consistent(source, copy)
        open_store(copy).close()  # migrate the copy to the current schema
        _check_tables(source, copy)
        store = open_store(target)
        store.close()
        log = {
            "id": new_id(), "source_path": str(source.resolve()), "source_hash": source_hash,
            "source_schema": revision, "on_conflict": on_conflict, "counts": {}, "imported_at": utcnow(),
        }
        return _merge(target, copy, on_conflict, log, progress)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _connect(target: Path) -> sqlite3.Connection:
    con = sqlite3.connect(target, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    con.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    con.execute("PRAGMA foreign_keys=ON")
    return con


def _begin(con: sqlite3.Connection, target: Path) -> None:
    """BEGIN IMMEDIATE, waiting out long foreign transactions like `Store.write` does (bounded, reported)."""
    import random
    import sys
    import time

    from spt.store.engine import WRITE_WAIT_ENV, _is_locked, write_wait_s

    t0, limit, attempt = time.monotonic(), write_wait_s(), 0
    while True:
        try:
            con.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as e:
            waited = time.monotonic() - t0
            if not _is_locked(e):
                raise
            if waited >= limit:
                raise SptError(f"{target} stayed locked by another writer for {waited:.0f} s "
                               f"(limit {WRITE_WAIT_ENV}={limit:g}); re-run the import to resume it") from None
            attempt += 1
            sys.stderr.write(f"spt: {target} is locked by another writer; waited {waited:.0f} s, retrying\n")
            time.sleep(min(limit - waited, min(5.0, 0.1 * 2 ** attempt) * (0.5 + random.random())))


def _commit_chunk(con: sqlite3.Connection, target: Path, work: Any) -> Any:
    _begin(con, target)
    try:
        out = work()
        con.execute("COMMIT")
        return out
    except BaseException:
        if con.in_transaction:  # some errors (disk full, I/O) already rolled back
            con.execute("ROLLBACK")
        raise


def _unfinished(con: sqlite3.Connection, log: dict[str, Any], into: str) -> dict[str, Any] | None:
    """The newest unfinished import of this very source into this very target (a killed one), if any."""
    for row in con.execute(
            "SELECT id, imported_at, counts, progress FROM main.import_log WHERE finished_at IS NULL "
            "AND source_path = ? AND source_hash = ? AND on_conflict = ? ORDER BY id DESC",
            (log["source_path"], log["source_hash"], log["on_conflict"])):
        progress = json.loads(row[3]) if row[3] else {}
        if progress.get("into") == into:
            return {"id": row[0], "imported_at": row[1], "counts": json.loads(row[2]) if row[2] else {},
                    "progress": progress}
    return None


def _check_tables(source: Path, copy: Path) -> None:
    """Refuse a source whose schema revision claims tables or columns it lacks (a damaged or hand-edited
    store): the merge would fail half-way on the first missing one."""
    con = sqlite3.connect(copy)
    try:
        for model in TABLES:
            table = model.__table__
            have = {r[1] for r in con.execute(f'PRAGMA table_info("{table.name}")')}
            if not have:
                raise NotAStoreError(f"{source} has no {table.name} table, so it is not a complete spt store; "
                                     "import the original file")
            missing = sorted({c.name for c in table.columns} - have)
            if missing:
                raise NotAStoreError(f"{source}: table {table.name} lacks column {missing[0]}, so it is not a "
                                     "complete spt store; import the original file")
    finally:
        con.close()


def _check_references(con: sqlite3.Connection) -> None:
    """Refuse, before anything is written, source rows whose parent row is in neither store."""
    for model in TABLES:
        table = model.__table__
        for fk in table.foreign_keys:
            col, parent, pcol = fk.parent.name, fk.column.table.name, fk.column.name
            bad = con.execute(
                f'SELECT s."{col}" FROM src."{table.name}" s WHERE s."{col}" IS NOT NULL '
                f'AND NOT EXISTS (SELECT 1 FROM src."{parent}" p WHERE p."{pcol}" = s."{col}") '
                f'AND NOT EXISTS (SELECT 1 FROM main."{parent}" p WHERE p."{pcol}" = s."{col}") LIMIT 1'
            ).fetchone()
            if bad is not None:
                raise SptError(f"import failed, target unchanged: inconsistent source rows ({table.name}.{col} "
                               f"{bad[0]!r} refers to no {parent} row in either store)")


def _merge(target: Path, copy: Path, on_conflict: str, log: dict[str, Any],
           listener: ProgressFn | None = None) -> dict[str, Any]:
    con = _connect(target)
    into = str(target.resolve())
    size = chunk_rows()
    try:
        con.execute("ATTACH DATABASE ? AS src", (str(copy),))
        resumed = _unfinished(con, log, into)
        if resumed is not None:
            log = {**log, "id": resumed["id"], "imported_at": resumed["imported_at"], "counts": resumed["counts"]}
            progress = resumed["progress"]
        else:
            _check_references(con)
            progress = {"into": into, "tables": {}}

            def start() -> None:
                con.execute(
                    "INSERT INTO main.import_log (id, source_path, source_hash, source_schema, on_conflict, counts, "
                    "imported_at, finished_at, progress) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?)",
                    (log["id"], log["source_path"], log["source_hash"], log["source_schema"], log["on_conflict"],
                     json.dumps({}), log["imported_at"], json.dumps(progress)))
            _commit_chunk(con, target, start)
        counts: dict[str, dict[str, int]] = log["counts"]
        total = sum(con.execute(f'SELECT count(*) FROM src."{m.__table__.name}"').fetchone()[0] for m in TABLES)

        def tick(table: str) -> None:
            report(listener, "import", sum(c["source"] for c in counts.values()), total, "rows", table=table)

        tick("")
        for model in TABLES:
            _merge_table(con, target, model, on_conflict, size, log["id"], counts, progress, tick)

        def finish() -> None:
            con.execute("UPDATE main.import_log SET counts = ?, finished_at = ?, progress = NULL WHERE id = ?",
                        (json.dumps(counts), utcnow(), log["id"]))
        _commit_chunk(con, target, finish)
        con.execute("DETACH DATABASE src")
    except sqlite3.IntegrityError as e:
        raise SptError(f"import stopped: inconsistent source rows ({e}); the chunks merged so far are complete "
                       "and consistent, fix the source and import again") from None
    finally:
        con.close()
    return {**log, "counts": counts, "resumed": resumed is not None}


ZERO = {"source": 0, "inserted": 0, "skipped": 0, "conflicting": 0, "replaced": 0}


def _merge_table(con: sqlite3.Connection, target: Path, model: Any, on_conflict: str, size: int, log_id: str,
                 counts: dict[str, dict[str, int]], progress: dict[str, Any],
                 tick: Callable[[str], None] = lambda table: None) -> None:
    """Merge one table chunk by chunk (source rowid ranges), each chunk with its counts and cursor committed."""
    table = model.__table__
    name = table.name
    done = progress["tables"].get(name)
    if done == "done":
        return
    counts.setdefault(name, dict(ZERO))
    cols = [c.name for c in table.columns]
    pks = [c.name for c in table.primary_key.columns]
    q = lambda c: f'"{c}"'  # noqa: E731
    collist = ", ".join(q(c) for c in cols)
    match = " AND ".join(f"m.{q(c)} = s.{q(c)}" for c in pks)
    compared = [c for c in cols if c not in pks and c not in NOT_COMPARED]
    differs = " OR ".join(f"m.{q(c)} IS NOT s.{q(c)}" for c in compared) or "0"
    self_ref = any(fk.column.table.name == name for fk in table.foreign_keys)
    last = int(done) if done is not None else None
    rng = "s.rowid > ? AND s.rowid <= ?"

    while True:
        lo = last if last is not None else -(2 ** 63)
        if self_ref:  # one statement: a child row may precede its parent (checked at its end)
            hi_row = con.execute(f'SELECT max(rowid) FROM src."{name}" WHERE rowid > ?', (lo,)).fetchone()
        else:
            hi_row = con.execute(f'SELECT rowid FROM src."{name}" WHERE rowid > ? ORDER BY rowid LIMIT 1 OFFSET ?',
                                 (lo, size - 1)).fetchone()
            if hi_row is None:
                hi_row = con.execute(f'SELECT max(rowid) FROM src."{name}" WHERE rowid > ?', (lo,)).fetchone()
        hi = hi_row[0] if hi_row else None
        if hi is None:  # nothing (left) to merge
            def close_table() -> None:
                progress["tables"][name] = "done"
                con.execute("UPDATE main.import_log SET counts = ?, progress = ? WHERE id = ?",
                            (json.dumps(counts), json.dumps(progress), log_id))
            _commit_chunk(con, target, close_table)
            return

        def chunk(lo: int = lo, hi: int = hi) -> None:
            c = counts[name]
            total = con.execute(f'SELECT count(*) FROM src."{name}" s WHERE {rng}', (lo, hi)).fetchone()[0]
            existing, conflicting = con.execute(
                f'SELECT count(*), coalesce(sum({differs}), 0) FROM src."{name}" s JOIN main."{name}" m ON {match} '
                f'WHERE {rng}', (lo, hi)).fetchone()
            cur = con.execute(
                f'INSERT OR IGNORE INTO main."{name}" ({collist}) SELECT {collist} FROM src."{name}" s '
                f'WHERE {rng} AND NOT EXISTS (SELECT 1 FROM main."{name}" m WHERE {match}) ORDER BY s.rowid',
                (lo, hi))
            inserted = cur.rowcount
            blocked = (total - existing) - inserted  # new ids that collide with a unique index: conflicts too
            replaced = 0
            if on_conflict == "replace" and conflicting:
                sets = ", ".join(f"{q(col)} = s.{q(col)}" for col in cols if col not in pks)
                where = " AND ".join(f'main."{name}".{q(col)} = s.{q(col)}' for col in pks)
                differs_u = " OR ".join(f'main."{name}".{q(col)} IS NOT s.{q(col)}' for col in compared) or "0"
                cur = con.execute(f'UPDATE main."{name}" SET {sets} FROM src."{name}" s WHERE {where} '
                                  f'AND ({differs_u}) AND {rng}', (lo, hi))
                replaced = cur.rowcount
            c["source"] += total
            c["inserted"] += inserted
            c["skipped"] += existing - conflicting
            c["conflicting"] += conflicting + blocked
            c["replaced"] += replaced
            progress["tables"][name] = hi
            con.execute("UPDATE main.import_log SET counts = ?, progress = ? WHERE id = ?",
                        (json.dumps(counts), json.dumps(progress), log_id))
        before = json.loads(json.dumps(counts[name]))
        try:
            _commit_chunk(con, target, chunk)
        except BaseException:
            counts[name] = before  # the chunk rolled back: so do its counts
            progress["tables"][name] = last
            raise
        last = hi
        tick(name)
