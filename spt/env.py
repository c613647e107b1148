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
import re
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
    "SPT_WRITE_WAIT_S": ("float>=0", "seconds a writer waits in all for the write lock"),
    "SPT_LEASE_TIMEOUT_S": ("float>0", "seconds after which a silent worker's lease is stale"),
    "SPT_IMPORT_CHUNK_ROWS": ("int>=1", "source rows per committed chunk of `spt import`"),
    "SPT_SWEEP_STAGES": ("module:attribute", "replacement sweep stages (tests, custom deployments)"),
}
# Upper bounds: beyond these a value is a typo, not a setting (a day of waiting, a million rows per chunk).
MAXIMA: dict[str, float] = {
    "SPT_BUSY_TIMEOUT_MS": 86_400_000, "SPT_JUDGE_RETRY_BASE_S": 3600.0, "SPT_WRITE_WAIT_S": 86_400.0 * 7,
    "SPT_LEASE_TIMEOUT_S": 86_400.0 * 30, "SPT_IMPORT_CHUNK_ROWS": 10_000_000,
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
    if n < minimum or n > MAXIMA.get(name, 2**63 - 1):
        raise _bad(name, value, f"must be between {minimum} and {int(MAXIMA.get(name, 2**63 - 1))}")
    return n


def env_float(name: str, default: float, minimum: float = 0.0, *, positive: bool = False) -> float:
    """A finite float variable (>= `minimum`, > 0 with `positive`), else `default` when unset."""
    value = _raw(name)
    if value is None:
        return default
    try:
        x = float(value.strip())
    except ValueError:
        raise _bad(name, value, "is not a number") from None
    top = MAXIMA.get(name, math.inf)
    if not math.isfinite(x) or x < minimum or x > top or (positive and x <= 0):
        low = "greater than 0" if positive else f"at least {minimum:g}"
        raise _bad(name, value, f"must be a finite number {low}" + (f" and at most {top:g}" if top < math.inf else ""))
    return x


def env_stages(name: str) -> tuple[str, str] | None:
    """A `module:attribute` variable as (module, attribute); None when unset. Checked for shape, not loaded."""
    value = _raw(name)
    if value is None:
        return None
    module, sep, attr = value.strip().partition(":")
    ident = r"[A-Za-z_][A-Za-z0-9_]*"
    if not re.fullmatch(rf"{ident}(?:\.{ident})*", module) or (sep and not re.fullmatch(ident, attr)):
        raise _bad(name, value, "is not module:attribute (a Python module path and a name in it)")
    return module, attr


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
            env_float(name, 0.0, positive=kind == "float>0")
        elif kind == "module:attribute":
            env_stages(name)
        else:
            env_path(name)
