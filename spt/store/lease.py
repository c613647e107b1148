"""Leases on running runs and evaluations: who works on a row (host, pid, start time) and a heartbeat
renewed meanwhile.

A `running` run holds a lease: `run.lease_owner` = "HOST:PID:START" and `run.lease_heartbeat`, an
ISO time renewed every `heartbeat_interval()` seconds by a background thread while the process trains.
A lease is *stale* when its heartbeat is older than the lease timeout ($SPT_LEASE_TIMEOUT_S, default
300 s), or at once when its owner is a process on this host that no longer exists. `--resume` and
sweeps adopt only runs whose lease is stale; `spt runs` marks stale rows and `spt runs reap` sets them
`interrupted`. A unique index (migration 0004) allows one `running` row per identity, so two planners
racing on the same settings end with one row. Evaluations work the same way (migration 0005: one
`running` evaluation per identity, `evaluation.lease_owner` / `lease_heartbeat`): a second `spt evaluate`
of the same identity waits for a live lease and adopts an expired one.
"""

from __future__ import annotations

import os
import socket
import threading
from datetime import datetime, timezone
from typing import Any

from spt.errors import SptError
from spt.tmpfiles import pid_alive

LEASE_ENV = "SPT_LEASE_TIMEOUT_S"
DEFAULT_LEASE_S = 300.0
PROCESS_START = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%f")


def lease_timeout(value: float | None = None) -> float:
    """The lease timeout in seconds: `value`, else $SPT_LEASE_TIMEOUT_S, else 300."""
    if value is None:
        from spt.env import env_float

        return env_float(LEASE_ENV, DEFAULT_LEASE_S, positive=True)
    import math

    if not math.isfinite(value) or value <= 0:
        raise SptError(f"the lease timeout must be a positive number of seconds (got {value!r})")
    return float(value)


def heartbeat_interval(timeout: float | None = None) -> float:
    return max(0.05, min(30.0, lease_timeout(timeout) / 4))


def my_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{PROCESS_START}"


def _parse_time(s: str | None) -> datetime | None:
    if not s:
        return None
    try:
        t = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def lease_age(heartbeat: str | None, updated_at: str | None = None) -> float | None:
    t = _parse_time(heartbeat) or _parse_time(updated_at)
    if t is None:
        return None
    return (datetime.now(timezone.utc) - t).total_seconds()


def is_stale(owner: str | None, heartbeat: str | None, updated_at: str | None = None,
             timeout: float | None = None) -> bool:
    """Whether a running row's lease has expired (its worker is gone or silent past the timeout)."""
    if owner:
        host, _, rest = owner.partition(":")
        pid = rest.partition(":")[0]
        if host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid)):
            return True
        if owner == my_owner():
            return False
    age = lease_age(heartbeat, updated_at)
    return age is None or age > lease_timeout(timeout)


def describe(owner: str | None, heartbeat: str | None, updated_at: str | None = None) -> str:
    host, _, rest = (owner or "unknown:?").partition(":")
    pid = rest.partition(":")[0]
    age = lease_age(heartbeat, updated_at)
    return f"{host} pid {pid}" + (f", heartbeat {age:.0f} s ago" if age is not None else "")


LEASED_TABLES = ("run", "evaluation")


class Heartbeat:
    """Renews `<table>.lease_heartbeat` (a run, or an evaluation) in the background while this process owns it."""

    def __init__(self, store: Any, run_id: str, owner: str | None = None, interval: float | None = None,
                 table: str = "run"):
        if table not in LEASED_TABLES:
            raise ValueError(f"no lease on table {table!r}")
        self.store, self.run_id, self.table = store, run_id, table
        self.owner = owner or my_owner()
        self.interval = interval if interval is not None else heartbeat_interval()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"spt-heartbeat-{run_id[:8]}", daemon=True)
        self.beats = 0

    def beat(self) -> None:
        from sqlalchemy import text

        from spt.store.models import utcnow

        with self.store.write() as s:
            s.execute(text(f"UPDATE {self.table} SET lease_heartbeat = :t WHERE id = :i AND lease_owner = :o"),
                      {"t": utcnow(), "i": self.run_id, "o": self.owner})
        self.beats += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception:  # noqa: BLE001 - a missed beat is retried; training must go on
                pass

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _stale_rows(store: Any, table: str, since: str, timeout: float | None) -> list[dict[str, Any]]:
    """Running rows of `table` (run, evaluation) whose lease has expired; `since` dates a row with no beat yet."""
    from sqlalchemy import text

    with store.engine.connect() as conn:
        rows = conn.execute(text(f"SELECT id, identity, lease_owner, lease_heartbeat, {since} FROM {table} "
                                 "WHERE status = 'running' ORDER BY id")).all()
    return [{"id": r[0], "identity": r[1], "owner": r[2], "heartbeat": r[3], "updated_at": r[4],
             "age_s": lease_age(r[3], r[4])}
            for r in rows if is_stale(r[2], r[3], r[4], timeout)]


def stale_runs(store: Any, timeout: float | None = None) -> list[dict[str, Any]]:
    """Running runs whose lease has expired."""
    return _stale_rows(store, "run", "updated_at", timeout)


def reap(store: Any, timeout: float | None = None, dry_run: bool = False) -> list[dict[str, Any]]:
    """Mark running runs with an expired lease `interrupted` (resumable with --resume); returns them."""
    from sqlmodel import select

    from spt.store.models import Run, utcnow

    timeout = lease_timeout(timeout)
    found = stale_runs(store, timeout)
    if dry_run or not found:
        return found
    reaped = []
    with store.write() as s:  # re-checked under the write lock: a heartbeat may have arrived meanwhile
        for r in s.exec(select(Run).where(Run.id.in_([f["id"] for f in found]))).all():  # type: ignore[attr-defined]
            if r.status != "running" or not is_stale(r.lease_owner, r.lease_heartbeat, r.updated_at, timeout):
                continue
            from spt.store.queries import set_status

            set_status(s, r, "interrupted", now=utcnow(),
                       error=f"lease expired ({describe(r.lease_owner, r.lease_heartbeat, r.updated_at)}); reaped")
            reaped.append(next(f for f in found if f["id"] == r.id))
    return reaped


def stale_evaluations(store: Any, timeout: float | None = None) -> list[dict[str, Any]]:
    """Running evaluations whose lease has expired (their process is gone or silent)."""
    return _stale_rows(store, "evaluation", "created_at", timeout)


def reap_evaluations(store: Any, timeout: float | None = None, dry_run: bool = False) -> list[dict[str, Any]]:
    """Mark running evaluations with an expired lease `failed` (the next `spt evaluate` of the same identity
    resumes from their committed generations); returns them."""
    from sqlmodel import select

    from spt.store.models import Evaluation

    timeout = lease_timeout(timeout)
    found = stale_evaluations(store, timeout)
    if dry_run or not found:
        return found
    reaped = []
    with store.write() as s:
        for e in s.exec(select(Evaluation).where(Evaluation.id.in_([f["id"] for f in found]))).all():  # type: ignore[attr-defined]
            if e.status != "running" or not is_stale(e.lease_owner, e.lease_heartbeat, e.created_at, timeout):
                continue
            e.status = "failed"
            e.error = f"lease expired ({describe(e.lease_owner, e.lease_heartbeat, e.created_at)}); reaped"
            e.lease_owner = e.lease_heartbeat = None
            s.add(e)
            reaped.append(next(f for f in found if f["id"] == e.id))
    return reaped
