"""Temporary copies named after the process that writes them, and removing the ones a killed process left.

Every half-written thing spt makes (a model being built, a merged model, a checkpoint, an import's copy
of its source) is written under a name that ends in `.tmp-PID` and renamed into place when complete. A
SIGKILL skips every `finally`, so the next writer removes the copies whose PID is no longer alive.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def tmp_name(target: Path) -> Path:
    """This process's temporary sibling of `target`: `.NAME.tmp-PID` in the same folder."""
    return target.with_name(f".{target.name}.tmp-{os.getpid()}")


def remove_stale(target: Path) -> list[Path]:
    """Remove the temporary siblings of `target` left by processes that are gone; returns what was removed."""
    removed = []
    if not target.parent.is_dir():
        return removed
    for old in target.parent.glob(f".{target.name}.tmp-*"):
        pid = old.name.rpartition(".tmp-")[2]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
            removed.append(old)
    return removed
