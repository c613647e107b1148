"""Bad input is one line: every case below exits 2 with one `error:` line, and the store is unchanged.

The table `CASES` is also what the reliability note prints (`python tests/test_bad_inputs.py`).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest
from test_frontier_fixtures import realistic_store
from typer.testing import CliRunner

from spt.cli import app
from spt.store import open_store

runner = CliRunner()

RECIPES = {
    "lr_string_bad_int.yaml": "lr: 1e-4\nbatch_size: two\n",
    "lr_nan.yaml": "lr: .nan\n",
    "epochs_inf.yaml": "epochs: .inf\n",
    "lora_maybe.yaml": "lora: maybe\n",
    "unknown_key.yaml": "learning_rate: 0.1\n",
    "list.yaml": "- lr: 0.1\n",
    "broken.yaml": "lr: [1e-4\n",
    "targets_number.yaml": "lora_targets: 5\n",
    "markup_stage.yaml": "stage: '[/red]'\n",
    "poison_text.yaml": "poison: a lot\n",
    "seed_float.yaml": "seed: 1.5\n",
}

# (arguments after `spt --db STORE`, a piece of the expected one-line error)
CASES: list[tuple[list[str], str]] = [
    # runs: markup-safe errors, exact-prefix lookups, validated assignments
    (["runs", "show", "[/x]"], "no run '[/x]'"),
    (["runs", "show", "[bold red]x"], "no run '[bold red]x'"),
    (["runs", "set", "%", "notes=x"], "no run '%'"),
    (["runs", "set", "_", "notes=x"], "no run '_'"),
    (["runs", "show", " "], "empty run id"),
    (["runs", "set", "{RUN}", "status=done"], "cannot set 'status'"),
    (["runs", "set", "{RUN}", "lam=nan"], "finite number"),
    (["runs", "set", "{RUN}", "lam=abc"], "is not a number"),
    (["runs", "--limit", "-1"], "--limit must be 0"),
    (["runs", "--json", "--csv"], "pick one"),
    (["runs", "--where", "bogus=1"], "unknown key 'bogus'"),
    (["runs", "show"], "Missing argument"),
    # finetune flags: types, NaN, ranges, all before the store is opened
    (["finetune", "--lr", "nan"], "--lr nan is not a finite number"),
    (["finetune", "--lr", "abc"], "Invalid value for '--lr'"),
    (["finetune", "--lr", "-1"], "--lr must be > 0"),
    (["finetune", "--poison", "1.5"], "outside [0, 1)"),
    (["finetune", "--poison", "nan"], "--poison nan is not a finite number"),
    (["finetune", "--defense", "anchor", "--lam", "5"], "outside [0, 1]"),
    (["finetune", "--defense", "bogus"], "unknown defense 'bogus'"),
    (["finetune", "--epochs", "inf"], "--epochs inf is not a finite number"),
    (["finetune", "--max-steps", "0"], "--max-steps must be ≥ 1"),
    (["finetune", "--batch-size", "0"], "--batch-size must be ≥ 1"),
    (["finetune", "--stage", "bogus"], "unknown stage 'bogus'"),
    (["finetune", "--model", "tiny-random", "--from", "x"], "not both"),
    (["finetune", "--nope"], "No such option"),
    (["finetune", "--config", "{DIR}/missing.yaml"], "does not exist"),
    # YAML recipes
    (["finetune", "--config", "{DIR}/lr_string_bad_int.yaml"], "--batch-size 'two' is not a whole number"),
    (["finetune", "--config", "{DIR}/lr_nan.yaml"], "--lr nan is not a finite number"),
    (["finetune", "--config", "{DIR}/epochs_inf.yaml"], "--epochs inf is not a finite number"),
    (["finetune", "--config", "{DIR}/lora_maybe.yaml"], "--lora 'maybe' is not true or false"),
    (["finetune", "--config", "{DIR}/unknown_key.yaml"], "unknown settings"),
    (["finetune", "--config", "{DIR}/list.yaml"], "must be a mapping"),
    (["finetune", "--config", "{DIR}/broken.yaml"], "is not valid YAML"),
    (["finetune", "--config", "{DIR}/targets_number.yaml"], "--lora-targets 5 is not a list"),
    (["finetune", "--config", "{DIR}/markup_stage.yaml"], "unknown stage '[/red]'"),
    (["finetune", "--config", "{DIR}/poison_text.yaml"], "--poison 'a lot' is not a number"),
    (["finetune", "--config", "{DIR}/seed_float.yaml"], "--seed 1.5 is not a whole number"),
    # sweep: the whole plan is checked before the first job
    (["sweep", "--model", "tiny-random", "--defense", "none,anchor", "--lam", "5"], "anchor λ=5"),
    (["sweep", "--model", "tiny-random", "--judge", "openai:gpt-4o-mini"], "needs OPENAI_API_KEY"),
    (["sweep", "--model", "tiny-random", "--judge", "bogus"], "unknown judge backend"),
    (["sweep", "--model", "tiny-random", "--eval-set", "max_new_tokens=abc"], "is not a finite number"),
    (["sweep", "--model", "tiny-random", "--eval-set", "temperature=-1"], "--temperature must be >= 0"),
    (["sweep", "--model", "tiny-random", "--eval-set", "bogus=1"], "spt evaluate (--eval-set) has no option"),
    (["sweep", "--model", "tiny-random", "--set", "lr=NaN"], "is not a finite number"),
    (["sweep", "--model", "tiny-random", "--set", "bogus=1"], "has no option bogus"),
    (["sweep", "--model", "tiny-random", "--task", "builtin:nope"], "not a built-in task"),
    (["sweep", "--model", "no/such/model/ref"], "does not resolve"),
    (["sweep", "--model", "tiny-random", "--poison", "2"], "is not a ratio"),
    (["sweep", "--model", "tiny-random", "--executor", "slurm", "--mem", "lots"], "--mem 'lots'"),
    (["sweep", "--model", "tiny-random", "--executor", "slurm", "--time", "forever"], "--time 'forever'"),
    (["sweep", "--model", "tiny-random", "--executor", "slurm", "--partition", "a b"], "--partition 'a b'"),
    (["nosuch"], "No such command"),
]


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (the store, its WAL, artifacts, scripts) with its sha256.

    SQLite's shared-memory index (`-shm`) and an empty WAL hold no content (a read-only connection to a
    WAL store may leave them behind), so they are not compared.
    """
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith("-shm")
            and not (p.name.endswith("-wal") and p.stat().st_size == 0)}


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A store with runs, recipe files next to it, and cwd inside the folder (Slurm scripts would land there)."""
    folder = tmp_path / "w"
    folder.mkdir()
    for name, text in RECIPES.items():
        (folder / name).write_text(text)
    store = open_store(folder / "spt.db")
    data = realistic_store(store)
    store.close()
    monkeypatch.chdir(folder)
    for var in ("OPENAI_API_KEY", "SPT_SWEEP_STAGES"):
        monkeypatch.delenv(var, raising=False)
    return folder, data["runs"][0].id


@pytest.mark.parametrize("args,message", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_bad_input_is_one_line_and_store_unchanged(world, args, message):
    folder, run_id = world
    args = [a.replace("{RUN}", run_id).replace("{DIR}", str(folder)) for a in args]
    before = _snapshot(folder)
    res = runner.invoke(app, ["--db", str(folder / "spt.db"), *args])
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert message in lines[0], lines[0]
    assert "Traceback" not in res.output
    assert _snapshot(folder) == before


def test_case_table_is_large_enough():
    assert len(CASES) >= 30


# read-only commands on a store that does not exist: one line, and nothing created
MISSING_STORE = [["runs"], ["runs", "show", "abc"], ["runs", "set", "abc", "notes=x"], ["runs", "--configurations"],
                 ["runs", "reap"], ["frontier"],
                 ["frontier", "--x", "alignment_loss", "--y", "task_accuracy", "--json"],
                 ["compare", "abc", "def"], ["db", "backup", "copy.db"]]


@pytest.mark.parametrize("args", MISSING_STORE)
def test_read_only_commands_on_a_missing_store_create_nothing(tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["--db", "typo.db", *args])
    assert res.exit_code == 2 and res.output.strip() == "error: store typo.db does not exist; check --db or SPT_DB"
    assert list(tmp_path.iterdir()) == []


def test_prefix_lookup_is_exact(world):
    folder, run_id = world
    ok = runner.invoke(app, ["--db", str(folder / "spt.db"), "runs", "show", run_id[:30], "--json"])
    assert ok.exit_code == 0, ok.output
    # a LIKE wildcard in the middle of a real prefix matches nothing
    res = runner.invoke(app, ["--db", str(folder / "spt.db"), "runs", "show", run_id[:5] + "%"])
    assert res.exit_code == 2 and "no run" in res.output


def test_yaml_numbers_written_without_a_dot_are_numbers(tmp_path):
    from spt.train import FinetuneConfig

    p = tmp_path / "r.yaml"
    p.write_text("lr: 1e-4\nepochs: 2\nbatch_size: 4\nlora_targets: q_proj,v_proj\n")
    cfg = FinetuneConfig.from_yaml(p).resolve()
    assert cfg.lr == 1e-4 and isinstance(cfg.lr, float) and cfg.epochs == 2.0 and cfg.lora_targets == ["q_proj",
                                                                                                          "v_proj"]


if __name__ == "__main__":  # print the table of the note: command | one-line error | store unchanged
    import tempfile

    os.environ.pop("OPENAI_API_KEY", None)
    os.environ.pop("SPT_SWEEP_STAGES", None)
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        os.environ["SPT_HOME"] = str(folder / "home")
        for name, text in RECIPES.items():
            (folder / name).write_text(text)
        st = open_store(folder / "spt.db")
        rid = realistic_store(st)["runs"][0].id
        st.close()
        os.chdir(folder)
        print("| # | command | exit | error (one line) | store unchanged |\n|---|---|---|---|---|")
        for i, (args, _msg) in enumerate(CASES, 1):
            args = [a.replace("{RUN}", rid).replace("{DIR}", ".") for a in args]
            before = _snapshot(folder)
            r = runner.invoke(app, ["--db", "spt.db", *args])
            shown = " ".join(a if a and " " not in a else repr(a) for a in args).replace("|", "\\|")
            err = r.output.strip().replace("|", "\\|")
            print(f"| {i} | `spt {shown}` | {r.exit_code} | {err} | {'yes' if _snapshot(folder) == before else 'NO'} |")
        n = len(CASES)
        for j, args in enumerate(MISSING_STORE, n + 1):  # read-only commands on a store that does not exist
            before = _snapshot(folder)
            r = runner.invoke(app, ["--db", "typo.db", *args])
            shown = " ".join(args).replace("|", "\\|")
            err = r.output.strip().replace("|", "\\|")
            created = (folder / "typo.db").exists() or _snapshot(folder) != before
            unchanged = "NO" if created else "yes (nothing created)"
            print(f"| {j} | `spt --db typo.db {shown}` | {r.exit_code} | {err} | {unchanged} |")
    sys.exit(0)
