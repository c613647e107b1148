"""Batched writes: rows accumulate and are committed in short transactions.

Long jobs (generation, judging) add rows as they are produced; each flush is one immediate write
transaction, so a killed process loses at most the rows since the last flush and other processes
get the write lock between batches.
"""

from __future__ import annotations

import time
from typing import Any

from sqlmodel import SQLModel

from spt.store.engine import Store


class BatchWriter:
    """Collects model instances and commits them every `batch_size` rows or `interval_s` seconds."""

    def __init__(self, store: Store, batch_size: int = 64, interval_s: float = 2.0):
        self.store = store
        self.batch_size = batch_size
        self.interval_s = interval_s
        self._pending: list[SQLModel] = []
        self._last_flush = time.monotonic()
        self.written = 0

    def add(self, row: SQLModel) -> None:
        self._pending.append(row)
        if len(self._pending) >= self.batch_size or time.monotonic() - self._last_flush >= self.interval_s:
            self.flush()

    def add_all(self, rows: list[SQLModel]) -> None:
        for row in rows:
            self.add(row)

    def flush(self) -> None:
        if self._pending:
            with self.store.write() as s:
                s.add_all(self._pending)
            self.written += len(self._pending)
            self._pending = []
        self._last_flush = time.monotonic()

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.flush()
