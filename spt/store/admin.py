"""Store administration: status (schema, row counts, size) and consistent backups."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from spt.errors import SptError
from spt.store.engine import Store
from spt.store.models import TABLES
from spt.store.schema import HEAD


def store_status(store: Store) -> dict[str, Any]:
    """Schema revision, head, per-table row counts and file size (including the WAL)."""
    counts: dict[str, int] = {}
    with store.engine.connect() as conn:
        for model in TABLES:
            name = model.__tablename__
            counts[name] = conn.exec_driver_sql(f'SELECT count(*) FROM "{name}"').scalar_one()
    wal = store.path.with_name(store.path.name + "-wal")
    size = store.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    return {
        "path": str(store.path),
        "schema": store.revision(),
        "head": HEAD,
        "up_to_date": store.revision() == HEAD,
        "size_bytes": size,
        "tables": counts,
    }


def backup_store(store: Store, dest: str | Path) -> Path:
    """A consistent copy with SQLite's `VACUUM INTO`, safe while other processes write."""
    dest = Path(dest).expanduser()
    if dest.exists():
        raise SptError(f"{dest} already exists; choose a new backup path")
    if not dest.parent.exists():
        raise SptError(f"directory {dest.parent} does not exist; create it or choose another path")
    con = sqlite3.connect(store.path, timeout=60)
    try:
        con.execute("VACUUM INTO ?", (str(dest),))
    except sqlite3.Error as e:
        raise SptError(f"backup to {dest} failed ({e})") from None
    finally:
        con.close()
    return dest
