"""Provenance: the one shape every run row records of what produced it.

`{"versions": {package: version}, "git_commit", "host", "python", ...stage-specific fields}`: the same
keys whether the row is a training run, a base model first seen by `spt evaluate`, or completions
imported from elsewhere, so a reader (a reviewer, `spt runs show`, the viewer) finds them in one place.
"""

from __future__ import annotations

import functools
import platform
import socket
from typing import Any

PACKAGES = ("spt", "torch", "transformers", "peft", "trl", "accelerate")


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[tuple[str, str | None], ...]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in PACKAGES:
        try:
            out.append((pkg, version(pkg)))
        except PackageNotFoundError:
            out.append((pkg, None))
    return tuple(out)


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the spt source tree, when spt runs from a git checkout (None for an installed wheel)."""
    import subprocess
    from pathlib import Path

    import spt

    try:
        r = subprocess.run(["git", "-C", str(Path(spt.__file__).parent), "rev-parse", "HEAD"],
                           capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return (r.stdout.strip() or None) if r.returncode == 0 else None


def provenance(**extra: Any) -> dict[str, Any]:
    """The provenance of a row made now by this process, with `extra` stage fields (device, seeds, source...)."""
    return {"versions": dict(_versions()), "git_commit": git_commit(), "host": socket.gethostname(),
            "python": platform.python_version(), **extra}
