"""The environment variables spt reads, parsed in one place so that a bad value is a one-line error.

An empty value means "unset" (the default applies), as a shell's `SPT_HOME= spt ...` suggests. Any other
value must parse: a number that is not a finite number in range, or a path that cannot be what it names
(a store path that is a directory, a folder under a regular file, a templates folder that does not
exist), is refused with the variable, the value and the fix, before a command does anything
(`check_environment`, called by the command line's root callback). The library reads the same
variables through the same functions.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from spt.errors import SptError

# name: (kind, what it is) — the inventory of every variable spt reads
VARIABLES: dict[str, tuple[str, str]] = {
    "SPT_HOME": ("dir", "spt's data folder (default store, model cache)"),
    "SPT_DB": ("file", "the default store file"),
    "SPT_CACHE": ("dir", "converted models and other derived files"),
    "SPT_HARMOR_TEMPLATES": ("existing-dir", "the HarmOR templates folder"),
    "SPT_BUSY_TIMEOUT_MS": ("int>=1", "milliseconds to wait for a locked store before retrying"),
    "SPT_JUDGE_RETRY_BASE_S": ("float>=0", "seconds of the first retry backoff of endpoint judges"),
}


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value is not None and value.strip() else None


def _bad(name: str, value: str, why: str) -> SptError:
    shown = value if len(value) <= 80 else value[:77] + "..."
    return SptError(f"environment variable {name}={shown!r} {why}; fix it or unset it")


def env_int(name: str, default: int, minimum: int = 1) -> int:
    """An integer variable (>= `minimum`), else `default` when unset."""
    value = _raw(name)
    if value is None:
        return default
    try:
        n = int(value.strip())
    except ValueError:
        raise _bad(name, value, "is not an integer") from None
    if n < minimum:
        raise _bad(name, value, f"must be at least {minimum}")
    return n


def env_float(name: str, default: float, minimum: float = 0.0) -> float:
    """A finite float variable (>= `minimum`), else `default` when unset."""
    value = _raw(name)
    if value is None:
        return default
    try:
        x = float(value.strip())
    except ValueError:
        raise _bad(name, value, "is not a number") from None
    if not math.isfinite(x) or x < minimum:
        raise _bad(name, value, f"must be a finite number of at least {minimum:g}")
    return x


def _under_a_file(path: Path) -> Path | None:
    """The first existing ancestor of `path` that is not a directory (so nothing can be created there)."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def env_path(name: str) -> Path | None:
    """A path variable, checked for what it must be (see `VARIABLES`); None when unset."""
    value = _raw(name)
    if value is None:
        return None
    if "\x00" in value:
        raise _bad(name, value, "contains a NUL character")
    kind = VARIABLES[name][0]
    path = Path(value).expanduser()
    blocker = _under_a_file(path)
    if blocker is not None:
        raise _bad(name, value, f"is under {blocker}, which is a file, not a folder")
    if kind == "file" and path.is_dir():
        raise _bad(name, value, "is a directory, not a store file")
    if kind == "dir" and path.exists() and not path.is_dir():
        raise _bad(name, value, "is a file, not a folder")
    if kind == "existing-dir" and not path.is_dir():
        raise _bad(name, value, "is not an existing folder")
    return path


def check_environment() -> None:
    """Parse every variable spt reads; SptError naming the first bad one."""
    for name, (kind, _what) in VARIABLES.items():
        if kind.startswith("int"):
            env_int(name, 0)
        elif kind.startswith("float"):
            env_float(name, 0.0)
        else:
            env_path(name)
