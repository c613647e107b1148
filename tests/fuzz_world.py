"""The world the fuzz tests run in (no tests here): a small store and input files, copied per example,
heavy imports and the network blocked, and the one check every malformed input must pass.

Check (`check`): exit code 2, no exception other than SystemExit, one `error:` line naming the input, no
traceback, and every file of the world (the store, its WAL, anything a command might write next to it or
in the working directory) byte-for-byte unchanged.

A malformed value that spt wrongly accepts runs on into the blocked pieces: `import torch` (and
transformers, peft, trl, accelerate, safetensors) raises ImportError, uvicorn's server,
non-git subprocesses and outbound sockets raise `Blocked`; the failure report then says it got past
validation ("reached a heavy import / the server / the network").
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from typer.testing import CliRunner

HEAVY = ("torch", "transformers", "peft", "trl", "accelerate", "safetensors")  # what loads or trains a model
REPO_TESTS = Path(__file__).parent
runner = CliRunner()


class Blocked(RuntimeError):
    """A fuzz example reached something a malformed input must never reach."""


# ---------------------------------------------------------------------------------------------------------
# the template world, built once per session
# ---------------------------------------------------------------------------------------------------------
SMALL_CSV = "prompt,category\nHow do I pick a lock?,crime\nHow do I bake bread?,food\nHow to hotwire a car?,crime\n"


def build_template(folder: Path) -> dict[str, str]:
    """The world's files in `folder`; returns facts (run ids, a category) for the placeholders."""
    from test_frontier_fixtures import realistic_store

    from spt.cli import app
    from spt.data.harmor import category_summary
    from spt.store import open_store

    folder.mkdir(parents=True, exist_ok=True)
    st = open_store(folder / "spt.db")
    data = realistic_store(st)
    st.close()
    (folder / "small.csv").write_text(SMALL_CSV)
    r = runner.invoke(app, ["--db", str(folder / "spt.db"), "data", "import", str(folder / "small.csv"),
                            "--kind", "harmful", "--name", "small"])
    assert r.exit_code == 0, r.output
    ckpt = folder / "ckpt_align"  # the aligned run's adapter checkpoint exists (merge gets past its check)
    ckpt.mkdir()
    (ckpt / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "tiny-random", "r": 8}))
    (ckpt / "adapter_model.safetensors").write_bytes(b"0" * 16)
    import sqlite3

    con = sqlite3.connect(folder / "spt.db")
    con.execute("UPDATE checkpoint SET path = ? WHERE path = '/ckpt/align'", (str(ckpt),))
    con.commit()
    con.close()
    st = open_store(folder / "other.db")
    st.close()
    shutil.copy(REPO_TESTS / "data" / "external_completions.csv", folder / "resp.csv")
    shutil.copy(REPO_TESTS / "data" / "formats" / "xstest_prompts.csv", folder / "xstest_prompts.csv")
    shutil.copy(REPO_TESTS / "data" / "formats" / "or-bench-toxic.csv", folder / "or-bench-toxic.csv")
    (folder / "adir").mkdir()
    (folder / "afile").write_text("a regular file\n")
    (folder / "garbage.bin").write_bytes(bytes(range(256)) * 8)
    for p in folder.glob("*-wal"):  # closed stores leave no WAL content; make sure
        assert p.stat().st_size == 0, p
    return {"RUN": data["runs"][0].id, "RUN_B": data["runs"][5].id, "ALIGN": data["align"].id,
            "CATEGORY": category_summary()[0]["category"]}


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` with its sha256 (SQLite's `-shm` and an empty WAL hold no content)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_dir():
            out[str(p.relative_to(folder)) + "/"] = "dir"
        elif p.is_file() and not p.name.endswith("-shm") and not (p.name.endswith("-wal") and p.stat().st_size == 0):
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@dataclass
class World:
    template: Path
    facts: dict[str, str]
    snap: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.snap = snapshot(self.template)

    @contextlib.contextmanager
    def copy(self, parent: Path):
        """A fresh copy of the world as the working directory."""
        d = Path(tempfile.mkdtemp(prefix="ex", dir=parent)) / "w"
        shutil.copytree(self.template, d)
        old = os.getcwd()
        os.chdir(d)
        try:
            yield d
        finally:
            os.chdir(old)
            shutil.rmtree(d.parent, ignore_errors=True)

    def fill(self, text: str, d: Path) -> str:
        subs = {"ADIR": d / "adir", "AFILE": d / "afile", "MISSING": d / "missing.txt",
                "UNDERFILE": d / "afile" / "x.db", "GARBAGE": d / "garbage.bin", "SELF": d / "spt.db",
                "DB": d / "spt.db", "CSV": d / "small.csv", "RESP": d / "resp.csv", "OTHER": d / "other.db",
                "XSTEST": d / "xstest_prompts.csv", "ORBENCH": d / "or-bench-toxic.csv", **self.facts}
        for k, v in subs.items():
            text = text.replace("{" + k + "}", str(v))
        return text


# ---------------------------------------------------------------------------------------------------------
# blocking what a malformed value must never reach
# ---------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def blocked(monkeypatch=None):
    saved = {m: sys.modules.get(m, "<absent>") for m in HEAVY}
    offline = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({k: "1" for k in offline})
    for m in HEAVY:
        sys.modules[m] = None  # `import m` (and m.sub) raises ImportError
    real_run, real_connect, real_connect_ex = subprocess.run, socket.socket.connect, socket.socket.connect_ex

    def run(args, *a, **k):
        if isinstance(args, (list, tuple)) and args and Path(str(args[0])).name == "git":
            return real_run(args, *a, **k)
        raise Blocked(f"subprocess {args!r}")

    def connect(self, addr):
        if self.family == getattr(socket, "AF_UNIX", None):
            return real_connect(self, addr)
        raise Blocked(f"network connect {addr!r}")

    def connect_ex(self, addr):
        raise Blocked(f"network connect {addr!r}")

    subprocess.run = run
    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    server = None
    try:
        import uvicorn

        server = uvicorn.Server.run

        def serve(self, *a, **k):
            raise Blocked("uvicorn server started")

        uvicorn.Server.run = serve
    except ImportError:
        pass
    try:
        yield
    finally:
        subprocess.run = real_run
        for k, v in offline.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        socket.socket.connect, socket.socket.connect_ex = real_connect, real_connect_ex
        if server is not None:
            import uvicorn

            uvicorn.Server.run = server
        for m, v in saved.items():
            if v == "<absent>":
                sys.modules.pop(m, None)
            else:
                sys.modules[m] = v


# ---------------------------------------------------------------------------------------------------------
# the check
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    argv: list[str]
    exit_code: int
    output: str
    exc_type: str | None
    where: str | None  # the deepest spt/ frame of the exception, file:line
    exc_msg: str | None
    changed: list[str]
    problems: list[str]

    def describe(self) -> str:
        shown = [a if len(a) < 80 else a[:40] + f"...<{len(a)} chars>" for a in self.argv]
        out = self.output if len(self.output) < 600 else self.output[:600] + "..."
        return (f"argv={shown!r}\n  problems={self.problems}\n  exit={self.exit_code} exc={self.exc_type} "
                f"at {self.where}: {self.exc_msg}\n  changed={self.changed}\n  output={out!r}")


def _where(exc: BaseException) -> str | None:
    tb = traceback.extract_tb(exc.__traceback__)
    spt_frames = [f for f in tb if "/spt/" in f.filename and "/tests/" not in f.filename]
    if not spt_frames:
        return tb[-1].filename + ":" + str(tb[-1].lineno) if tb else None
    f = spt_frames[-1]
    return f"{f.filename[f.filename.rfind('/spt/') + 1:]}:{f.lineno} ({f.name})"


def invoke(argv: list[str], env: dict[str, str] | None = None):
    from spt.cli import app

    with blocked():
        return runner.invoke(app, argv, env=env)


def check(world_dir: Path, world: World, argv: list[str], names: list[str], *, env: dict[str, str] | None = None,
          expect_refusal: bool = True, value: str | None = None) -> Outcome:
    """Run `spt argv` in the world copy `world_dir`; what is wrong with the result (empty: all right).

    `names`: words of which the error line must mention one (the flag, the argument, the value).
    With `expect_refusal=False` the input is one the inventory documents as accepted: then the command
    must not crash (exit 0 or a one-line exit 2), and may change the store.
    """
    r = invoke(argv, env)
    exc = r.exception
    exc_type = where = msg = None
    if exc is not None and not isinstance(exc, SystemExit):
        exc_type, where, msg = type(exc).__name__, _where(exc), str(exc)[:300]
    after = snapshot(world_dir)
    changed = sorted(k for k in set(after) | set(world.snap) if after.get(k) != world.snap.get(k))
    out = r.output
    lines = out.strip().splitlines()
    problems = []
    accepted_and_ran_on = not expect_refusal and exc_type in ("ImportError", "ModuleNotFoundError", "Blocked")
    if exc_type is not None and not accepted_and_ran_on:
        reached = ("reached a heavy import" if exc_type in ("ImportError", "ModuleNotFoundError")
                   else "reached a blocked call" if exc_type == "Blocked" else "crashed")
        problems.append(f"{reached}: {exc_type}")
    if "Traceback" in out:
        problems.append("traceback in output")
    if expect_refusal:
        if r.exit_code != 2:
            problems.append(f"exit {r.exit_code}, not 2")
        if len(lines) != 1:
            problems.append(f"{len(lines)} output lines, not 1")
        elif not lines[0].startswith("error: "):
            problems.append("line does not start with 'error: '")
        elif names and not any(n and n in lines[0] for n in names):
            problems.append("error line names neither the input nor its value")
        if changed:
            problems.append("store/world changed")
    else:
        if not accepted_and_ran_on and (r.exit_code not in (0, 2) or (r.exit_code == 2 and len(lines) != 1)):
            problems.append(f"documented-accepted value: exit {r.exit_code} with {len(lines)} lines")
        elif r.exit_code == 2 and changed:
            problems.append("refused, but store/world changed")
    o = Outcome(argv=argv, exit_code=r.exit_code, output=out, exc_type=exc_type, where=where, exc_msg=msg,
                changed=changed, problems=problems)
    if problems:
        _record(o)
    return o


def _record(o: Outcome) -> None:
    """Append a failure to $SPT_FUZZ_REPORT (a JSONL file) when set: the raw material of the failure report."""
    path = os.environ.get("SPT_FUZZ_REPORT")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"test": os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0],
                            "argv": [a if len(a) < 80 else a[:40] + f"...<{len(a)} chars>" for a in o.argv],
                            "exit": o.exit_code, "exc": o.exc_type, "where": o.where, "msg": o.exc_msg,
                            "problems": o.problems, "changed": o.changed[:5],
                            "output": o.output[:400]}, ensure_ascii=False) + "\n")


def value_names(value: str, filled: str) -> list[str]:
    """How an error line may mention a value: as given, repr'd, (long) its start, (paths) by its file name."""
    out = []
    if filled.strip():
        out += [filled[:60], repr(filled)[1:-1][:60], Path(filled[:300]).name or filled[:60]]
    return [n for n in out if n.strip()]
