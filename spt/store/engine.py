"""Opening a store: WAL, busy_timeout, foreign keys, immediate write transactions, migrations.

Write sessions start with `BEGIN IMMEDIATE`, so two processes writing at once queue on the
busy_timeout instead of failing with "database is locked" when a read lock is upgraded.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Engine
from sqlmodel import Session, SQLModel, create_engine

from spt.errors import NotAStoreError, SchemaTooNewError, SptError
from spt.store.schema import HEAD, REVISIONS, migrations_dir

BUSY_TIMEOUT_MS = 60_000
WRITE_WAIT_ENV = "SPT_WRITE_WAIT_S"  # how long a writer waits in all for the write lock (default 3600 s)
DEFAULT_WRITE_WAIT_S = 3600.0


def write_wait_s() -> float:
    """The bound on waiting for the write lock: $SPT_WRITE_WAIT_S, else one hour."""
    from spt.env import env_float

    return env_float(WRITE_WAIT_ENV, DEFAULT_WRITE_WAIT_S)


def _is_locked(e: BaseException) -> bool:
    msg = str(getattr(e, "orig", e)).lower()
    return "database is locked" in msg or "database is busy" in msg


def readonly_uri(path: str | Path) -> str:
    """A read-only SQLite URI for `path`, percent-encoded (paths may contain `#`, `?`, `%`)."""
    return Path(path).absolute().as_uri() + "?mode=ro"


def _needs_recovery(e: BaseException) -> bool:
    """A read-only connection refused a WAL store left by a killed process: its wal-index needs rebuilding,
    which only a writable connection may do (SQLITE_READONLY_RECOVERY and friends)."""
    return "readonly" in str(e).lower()


def connect_readonly(path: str | Path, timeout: float = 5.0) -> sqlite3.Connection:
    """A connection that only reads `path`: read-only, unless the store was left by a killed process and
    needs WAL recovery first, in which case a writable connection does the recovery (no content changes)."""
    con = sqlite3.connect(readonly_uri(path), uri=True, timeout=timeout)
    try:
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return con
    except sqlite3.OperationalError as e:
        if not _needs_recovery(e):
            con.close()
            raise
    con.close()
    con = sqlite3.connect(Path(path).absolute().as_uri() + "?mode=rw", uri=True, timeout=timeout)
    con.execute("PRAGMA query_only=ON")
    return con


def read_revision(path: str | Path) -> str | None:
    """The store's schema revision, None for an empty database; raises NotAStoreError otherwise."""
    path = Path(path)
    try:
        con = connect_readonly(path)
    except sqlite3.OperationalError as e:
        raise NotAStoreError(f"{path} cannot be opened as SQLite ({e})") from None
    except sqlite3.Error as e:
        raise NotAStoreError(f"{path} is not a SQLite database ({e}); pass an spt store (.db)") from None
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            return None
        if "alembic_version" not in tables:
            raise NotAStoreError(f"{path} is a SQLite database but not an spt store (no schema version)")
        row = con.execute("SELECT version_num FROM alembic_version").fetchone()
        if row is None:
            raise NotAStoreError(f"{path} is a SQLite database but not an spt store (empty schema version)")
        return row[0]
    except sqlite3.DatabaseError as e:
        raise NotAStoreError(f"{path} is not a SQLite database ({e}); pass an spt store (.db)") from None
    finally:
        con.close()


def check_revision(path: str | Path, revision: str | None) -> None:
    """Refuse stores made by a newer spt (unknown revision)."""
    if revision is not None and revision not in REVISIONS:
        raise SchemaTooNewError(
            f"{path} has schema {revision!r}, newer than this spt knows (head {HEAD}); upgrade spt"
        )


def _make_engine(path: Path) -> Engine:
    # URL.create, not an f-string: a `?` or `#` in the path must not be parsed as URL syntax.
    url = URL.create("sqlite", database=str(path))
    from spt.env import env_int

    # one wait for the lock, before a retry (tests shorten it)
    busy_ms = env_int("SPT_BUSY_TIMEOUT_MS", BUSY_TIMEOUT_MS)
    engine = create_engine(url, connect_args={"timeout": busy_ms / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_con: Any, _record: Any) -> None:
        dbapi_con.isolation_level = None  # we issue BEGIN ourselves (see _on_begin)
        cur = dbapi_con.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={busy_ms}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_con: Any, _record: Any) -> None:
        # A COMMIT refused by a deferred foreign-key check leaves SQLite's transaction open while
        # SQLAlchemy considers it ended; roll it back so the pooled connection is clean again.
        if dbapi_con is not None and dbapi_con.in_transaction:
            dbapi_con.rollback()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("spt_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
        # Foreign keys are checked at COMMIT: the ORM flushes tables in its own order (it only
        # orders by relationships, which the models do not declare), so a run and its checkpoint
        # added in one transaction must not fail on insertion order. Resets at every COMMIT.
        conn.exec_driver_sql("PRAGMA defer_foreign_keys=ON")

    return engine


def upgrade_store(engine: Engine, target: str = "head") -> None:
    """Apply alembic migrations up to `target` on an open engine."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        # Batch-mode migrations recreate tables (copy, drop, rename); with foreign keys on, dropping
        # a parent table that has children fails. The pragma only takes effect outside a transaction.
        raw.execute("PRAGMA foreign_keys=OFF")
        try:
            # BEGIN IMMEDIATE: processes opening a new or old store at once migrate one at a time,
            # and alembic reads the current version only once it holds the write lock.
            with conn.execution_options(spt_write=True).begin():
                before = len(conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall())
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, target)
                bad = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if len(bad) > before:
                    raise SptError(f"migration would break references ({bad[:3]}); store left unchanged")
        finally:
            raw.execute("PRAGMA foreign_keys=ON")


class Store:
    """An open spt store. `session()` reads, `write()` is one short immediate write transaction."""

    def __init__(self, path: Path, engine: Engine):
        self.path = path
        self.engine = engine
        self._write_engine = engine.execution_options(spt_write=True)

    def session(self) -> Session:
        """A session for reads (and writes the caller commits itself)."""
        return Session(self.engine, expire_on_commit=False)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction that takes the write lock up front and commits on exit.

        The lock is taken before the body runs (BEGIN IMMEDIATE). A writer that finds it held for longer
        than the busy timeout (a large import, another process's long transaction) retries with backoff,
        reporting each wait on stderr, for up to $SPT_WRITE_WAIT_S seconds, instead of failing.
        """
        with Session(self._write_engine, expire_on_commit=False) as s:
            self._acquire(s)
            yield s
            s.commit()

    def _acquire(self, s: Session) -> None:
        import random
        import sys
        import time

        from sqlalchemy.exc import OperationalError

        t0 = time.monotonic()
        limit = write_wait_s()
        attempt = 0
        while True:
            try:
                s.connection()  # BEGIN IMMEDIATE: waits up to the busy timeout for the write lock
                if attempt:
                    sys.stderr.write(f"spt: got the write lock of {self.path} after "
                                     f"{time.monotonic() - t0:.0f} s\n")
                return
            except OperationalError as e:
                if not _is_locked(e):
                    raise
                s.rollback()
                waited = time.monotonic() - t0
                if waited >= limit:
                    raise SptError(f"{self.path} stayed locked by another writer for {waited:.0f} s "
                                   f"(limit {WRITE_WAIT_ENV}={limit:g}); retry when it is done") from None
                attempt += 1
                sys.stderr.write(f"spt: {self.path} is locked by another writer; waited {waited:.0f} s, "
                                 f"retrying (up to {limit:g} s)\n")
                sys.stderr.flush()
                time.sleep(min(limit - waited, min(5.0, 0.1 * 2 ** attempt) * (0.5 + random.random())))

    def revision(self) -> str | None:
        return read_revision(self.path)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_store(path: str | Path, *, upgrade: bool = True, create: bool = True) -> Store:
    """Open (creating if needed) the store at `path`, migrating it to the current schema.

    Raises NotAStoreError for files that are not spt stores and SchemaTooNewError for stores made
    by a newer spt; neither case modifies the file.
    """
    path = Path(path).expanduser()
    exists = path.exists() and path.stat().st_size > 0
    if not exists and not create:
        raise SptError(f"store {path} does not exist; check `db` or SPT_DB")
    if path.exists() and path.is_dir():
        raise SptError(f"{path} is a directory; `db` must name a store file")
    revision = read_revision(path) if exists else None
    check_revision(path, revision)
    if not exists:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SptError(f"cannot create the store directory {path.parent} ({e.strerror}); pass `db`") from None
    engine = _make_engine(path)
    if revision != HEAD:
        if not upgrade:
            raise SptError(f"store {path} is at schema {revision}, not {HEAD}; run `spt db upgrade`")
        upgrade_store(engine)
    return Store(path, engine)


def create_tables_directly(engine: Engine) -> None:
    """Create tables from the models without alembic (only for the models-vs-migrations test)."""
    SQLModel.metadata.create_all(engine)
