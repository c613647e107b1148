"""Real kills for the kill tests: start a real `spt` subprocess, watch the store (read-only) or the clock,
and SIGKILL it at the chosen moment. No hook in production code: the process dies as it would under
`kill -9`, an OOM killer or a node failure."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from spt.store.engine import connect_readonly


def spt_cmd(db: Path | str, *args: str) -> list[str]:
    return [sys.executable, "-m", "spt.cli", "--db", str(db), *args]


def query(db: Path | str, sql: str, *params: Any) -> Any:
    """One value read through a read-only connection (never writes, never creates the store)."""
    for _ in range(50):
        if not Path(db).exists():
            return None
        try:
            con = connect_readonly(db, timeout=30)  # recovers a killed writer's WAL (writes no content)
        except sqlite3.OperationalError:
            time.sleep(0.02)
            continue
        try:
            row = con.execute(sql, params).fetchone()
            return row[0] if row else None
        except sqlite3.OperationalError:  # table not there yet, or a killed writer's WAL awaiting recovery
            time.sleep(0.02)
        finally:
            con.close()
    return None


def kill_when(cmd: Sequence[str], ready: Callable[[], bool], *, delay: float = 0.0, poll: float = 0.01,
              timeout: float = 300, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `cmd`, SIGKILL it `delay` seconds after `ready()` first holds; fail if it ends on its own first."""
    p = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    t0 = time.monotonic()
    try:
        while not ready():
            if p.poll() is not None:
                out, err = p.communicate()
                raise AssertionError(f"process ended (rc {p.returncode}) before the kill point:\n{err[-3000:]}")
            if time.monotonic() - t0 > timeout:
                raise AssertionError("kill point never reached")
            time.sleep(poll)
        if delay:
            time.sleep(delay)
        alive = p.poll() is None
        p.send_signal(signal.SIGKILL)
        out, err = p.communicate()
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    return {"killed": alive, "rc": p.returncode, "after_s": round(time.monotonic() - t0, 2), "stderr": err}
