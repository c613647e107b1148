"""Parse-time checks every command's option values pass before the command runs.

Each command validates what is specific to it; what holds for every option is checked here, once, as
soon as the command line is parsed (before a store is opened or a model loads):

- numbers: finite (no NaN or infinity), within SQLite's 64-bit integers, and not below the minimum
  their name implies where no command checks it (`MINIMUMS`: seeds and indexes >= 0, ...);
- text: no control characters (they corrupt tables, job scripts and terminals), at most `MAX_TEXT`
  characters, and not blank when given explicitly (an empty value is never a valid name, spec or path);
- paths: not blank, and not under a regular file (nothing can exist or be created there).

A failure is an SptError naming the flag, the value and the fix; the CLI prints it as one line, exit 2.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from spt.errors import SptError

INT64_MAX = 2**63 - 1
MAX_TEXT = 4096

# Ranges the commands and library configs do not check themselves (FinetuneConfig, EvaluateConfig, the Slurm and
# judge options check theirs, with their own wording, and are left to them). option name: (minimum, maximum)
_COUNT = (1, None)
_NONNEG = (0, None)
MINIMUMS: dict[str, tuple[float, float | None]] = {
    **{n: _COUNT for n in ("align_max_steps", "max_connections")},
    **{n: _NONNEG for n in ("seed", "train_seed", "only_index", "n", "max_retries", "cost_limit")},
    "port": (0, 65535),
}
POSITIVE = {"timeout", "vaccine_rho"}  # > 0
# Text options whose commands give a more specific message for a blank or multi-line value (an empty run id,
# a Slurm word, one shell line per flag): the generic text check leaves them to it.
OWN_TEXT_CHECKS = {"run_id", "model_name", "qos", "partition", "account", "gres", "setup", "spt_command"}


def _flag(param: Any) -> str:
    longs = [o for o in getattr(param, "opts", []) if o.startswith("--")]
    return longs[0] if longs else (param.name or "?").upper()


def _shown(value: Any) -> str:
    s = str(value)
    s = "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)
    return s if len(s) <= 60 else s[:57] + "..."


def _check_number(name: str, flag: str, v: float | int) -> None:
    if isinstance(v, float) and not math.isfinite(v):
        raise SptError(f"{flag} {_shown(v)} is not a finite number")
    if abs(v) > INT64_MAX:
        raise SptError(f"{flag} {_shown(v)}: too large (at most {INT64_MAX})")
    lo_hi = MINIMUMS.get(name)
    if lo_hi is not None:
        lo, hi = lo_hi
        if v < lo or (hi is not None and v > hi):
            where = f"between {lo:g} and {hi:g}" if hi is not None else f"at least {lo:g}"
            raise SptError(f"{flag} {_shown(v)}: must be {where}")
    if name in POSITIVE and v <= 0:
        raise SptError(f"{flag} {_shown(v)}: must be greater than 0")


def _check_text(flag: str, v: str) -> None:
    if not v.strip():
        raise SptError(f"{flag} is empty; give a value or leave the option out")
    bad = next((c for c in v if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise SptError(f"{flag} {_shown(v)}: contains a control character ({bad!r}); remove it")
    if len(v) > MAX_TEXT:
        raise SptError(f"{flag} is {len(v)} characters long; at most {MAX_TEXT}")


def _check_path(flag: str, v: Path) -> None:
    raw = str(v)
    _check_text(flag, raw)
    p = v.expanduser()
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise SptError(f"{flag} {_shown(raw)}: {parent} is a file, not a folder; choose another path")
            break


def _explicit(ctx: Any, name: str) -> bool:
    """Whether the user gave `name` (command line or environment), not a default."""
    get = getattr(ctx, "get_parameter_source", None)
    if get is None:
        return True
    src = get(name)
    return src is None or getattr(src, "name", "") in ("COMMANDLINE", "ENVIRONMENT", "PROMPT")


_RAW_KEY = "spt_raw_values"


def _raw_values(cmd: Any, args: list[str]) -> dict[str, list[str]]:
    """The raw text of each path-relevant value in `args`, by parameter name ("--out ''", "--out=x/", ...).

    Click normalises paths: `Path("")` is `Path(".")` and `Path("x/")` is `Path("x")`, so after parsing an
    empty path cannot be told from the current folder, nor "the folder x/" from the file x. The raw
    arguments are read before Click sees them.
    """
    by_flag: dict[str, Any] = {}
    arguments = []
    for p in cmd.params:
        if getattr(p, "param_type_name", "") == "argument":
            arguments.append(p)
        for o in list(getattr(p, "opts", [])) + list(getattr(p, "secondary_opts", [])):
            by_flag[o] = p
    found: dict[str, list[str]] = {}
    pending = None
    for a in args:
        if a == "--":
            break
        if pending is not None:
            found.setdefault(pending.name, []).append(a)
            pending = None
            continue
        if a.startswith("-") and a != "-":
            flag, eq, rest = a.partition("=")
            p = by_flag.get(flag)
            if p is None:
                continue
            if eq:
                found.setdefault(p.name, []).append(rest)
            elif not getattr(p, "is_flag", False) and not getattr(p, "count", False):
                pending = p
        else:  # a positional value: it may belong to any argument
            for x in arguments:
                found.setdefault(x.name, []).append(a)
    return found


def record_raw_values(ctx: Any, cmd: Any, args: list[str]) -> None:
    """Remember on `ctx` the raw values `args` gives `cmd`'s parameters (read by `check_params`)."""
    setattr(ctx, _RAW_KEY, _raw_values(cmd, list(args)))


def _check_raw_path(param: Any, flag: str, v: Path, raws: list[str]) -> None:
    """What Click's normalisation hides: an empty path, and a folder path (trailing /) naming a file."""
    if str(v) == "." and "" in raws:
        fix = "give a path" if param.param_type_name == "argument" else "give a path or leave the option out"
        raise SptError(f"{flag} is empty; {fix}")
    for raw in raws:
        stem = raw.rstrip("/")
        if raw.endswith("/") and stem and Path(stem).expanduser() == v.expanduser():
            if v.expanduser().is_file():
                raise SptError(f"{flag} {_shown(raw)}: names a folder, but {v} is a file; choose another path")


def check_params(ctx: Any) -> None:
    """Check every parsed option value of `ctx` (see the module doc); SptError on the first bad one."""
    raw = getattr(ctx, _RAW_KEY, {})
    for param in ctx.command.params:
        name = param.name
        if name not in ctx.params or not _explicit(ctx, name):
            continue
        value = ctx.params[name]
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        flag = _flag(param)
        for v in values:
            if v is None or isinstance(v, bool):
                continue
            if isinstance(v, (int, float)):
                _check_number(name, flag, v)
            elif isinstance(v, Path):
                _check_raw_path(param, flag, v, raw.get(name, []))
                _check_path(flag, v)
            elif isinstance(v, str) and name not in OWN_TEXT_CHECKS:
                _check_text(flag, v)


def guard(cmd: Any) -> None:
    """Run `check_params` before `cmd` (and every command below it, for a group) is invoked. Idempotent."""
    if getattr(cmd, "_spt_guarded", False):
        return
    original = cmd.invoke
    original_parse = cmd.parse_args

    def parse_args(ctx: Any, args: list[str]) -> list[str]:
        record_raw_values(ctx, cmd, args)
        return original_parse(ctx, args)

    def invoke(ctx: Any) -> Any:
        check_params(ctx)
        return original(ctx)

    cmd.invoke = invoke
    cmd.parse_args = parse_args
    cmd._spt_guarded = True
    for sub in (getattr(cmd, "commands", None) or {}).values():
        guard(sub)
