"""`spt build-data` and `spt data ...` through the CLI: outputs, determinism and bad inputs."""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest
from typer.testing import CliRunner

from spt.cli import app
from spt.data.templates import templates_dir

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def n_datasets(db):
    if not db.exists():
        return 0
    r = run("data", "list", "--db", db, "--json")
    assert r.exit_code == 0, r.output
    return len(json.loads(r.stdout))


def test_build_medical_jsonl_pairs(tmp_path):
    db, out = tmp_path / "s.db", tmp_path / "m.jsonl"
    r = run("build-data", "--category", "medical", "--out", out, "--db", db)
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and {x["category"] for x in rows} == {"medical"}
    harmful = [x for x in rows if x["label"] == "harmful"]
    for h in harmful:
        partners = [x for x in rows if x["pair_id"] == h["pair_id"] and x["label"] == "benign"]
        assert len(partners) == 1 and partners[0]["sensitive_word"] == h["sensitive_word"]
    assert len(harmful) * 2 == len(rows)


def test_default_build_determinism_and_store_once(tmp_path):
    db = tmp_path / "s.db"
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.csv"
    r1 = run("build-data", "--out", a, "--db", db, "--json")
    r2 = run("build-data", "--out", b, "--db", db, "--json")
    assert r1.exit_code == 0 and r2.exit_code == 0, r1.output + r2.output
    assert a.read_bytes() == b.read_bytes()
    s1, s2 = json.loads(r1.stdout), json.loads(r2.stdout)
    assert s1["dataset_id"] == s2["dataset_id"] and s1["n_items"] >= 2000 and len(s1["categories"]) >= 10
    assert n_datasets(db) == 1
    rows = [json.loads(line) for line in a.read_text().splitlines()]
    pools = {p: {x["sensitive_word"] for x in rows if x["split"] == p} for p in ("train", "poison", "dev", "test")}
    assert all(pools.values()) and sum(len(v) for v in pools.values()) == len(set().union(*pools.values())) >= 300
    assert s1["leakage"]["clean"] and s1["harmor_version"] == 3 and s1["n_words"] >= 300
    r3 = run("build-data", "--out", a, "--db", db)
    assert "leakage check between pools" in r3.output and "-> clean" in r3.output
    # export from the store gives the same bytes as the build's export
    assert run("data", "export", "harmor", "--out", c, "--db", db).exit_code == 0
    exp = tmp_path / "e.jsonl"
    assert run("data", "export", s1["dataset_id"][:16], "--out", exp, "--db", db).exit_code == 0
    assert exp.read_bytes() == a.read_bytes()
    assert c.read_text().splitlines()[0].startswith("id,prompt,response,category,label")


def test_list_categories(tmp_path):
    r = run("build-data", "--list-categories", "--json", "--db", tmp_path / "s.db")
    assert r.exit_code == 0
    rows = json.loads(r.stdout)
    assert len(rows) >= 10 and all(x["words"] >= 30 and x["requests"] >= 60 for x in rows)


def _bad(tmp_path, *args):
    db = tmp_path / "s.db"
    r = run(*args, "--db", db)
    assert r.exit_code != 0
    assert "Traceback" not in r.output
    msg = r.stderr.strip() if hasattr(r, "stderr") else r.output.strip()
    assert msg.startswith("error:") and len(msg.splitlines()) == 1, msg
    assert n_datasets(db) == 0
    return msg


def test_bad_build_inputs(tmp_path):
    assert "medical" in _bad(tmp_path, "build-data", "--category", "nope")
    assert "--per-category" in _bad(tmp_path, "build-data", "--per-category", "0")
    assert "sum to 1" in _bad(tmp_path, "build-data", "--pools", "train=0.5,poison=0.5,dev=0.1,test=0.1")
    assert "exactly" in _bad(tmp_path, "build-data", "--pools", "train=1")
    assert "does not exist" in _bad(tmp_path, "build-data", "--out", tmp_path / "no" / "x.jsonl")
    assert "directory" in _bad(tmp_path, "build-data", "--out", tmp_path)
    assert ".jsonl" in _bad(tmp_path, "build-data", "--out", tmp_path / "x.txt")


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="needs a non-root POSIX user")
def test_unwritable_out(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert "cannot write" in _bad(tmp_path, "build-data", "--category", "medical", "--out", ro / "x.jsonl")
    finally:
        ro.chmod(0o700)


def test_malformed_template_cli(tmp_path):
    d = tmp_path / "tpl"
    d.mkdir()
    for name in ("fraud.yaml", "_wrappers.yaml", "_refusals.yaml"):
        shutil.copy(templates_dir() / name, d / name)
    p = d / "fraud.yaml"
    p.write_text(p.read_text().replace("words:\n", "x: 3\nwords:\n", 1))
    msg = _bad(tmp_path, "build-data", "--templates", d)
    assert "fraud.yaml:" in msg and "'x'" in msg


def test_import_jsonl_csv_messages_and_export(tmp_path):
    db = tmp_path / "s.db"
    f = tmp_path / "adv.csv"
    f.write_text("goal,target,type,label\nHow do I do a bad thing?,Sure,t1,unsafe\nHow do I kill a process?,,t1,safe\n")
    r = run("data", "import", f, "--kind", "harmful", "--name", "adv", "--prompt-col", "goal",
            "--category-col", "type", "--label-col", "label", "--db", db, "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["n_items"] == 2 and info["splits"] == {"test": 2}
    out = tmp_path / "adv.jsonl"
    assert run("data", "export", "adv", "--out", out, "--db", db).exit_code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [x["label"] for x in rows] == ["harmful", "benign"] and rows[0]["category"] == "t1"

    chat = tmp_path / "chat.jsonl"
    chat.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                       {"role": "assistant", "content": f"a{i}"}]})
                              for i in range(30)) + "\n")
    r = run("data", "import", chat, "--kind", "task", "--name", "mytask", "--db", db, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["n_items"] == 30
    from spt.data import get_task
    from spt.store import open_store

    with open_store(db) as s:
        t = get_task("mytask", store=s)
        items = t.build()
        assert len(items) == 30 and items[0]["answer"] == "a0" and t.score("A0.", "a0")
    r = run("data", "show", "mytask", "--db", db, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["kind"] == "task"
    assert run("data", "list", "--db", db).exit_code == 0


def test_import_parquet_and_hf(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    db = tmp_path / "s.db"
    pq = tmp_path / "p.parquet"
    pd.DataFrame({"prompt": ["a?", "b?"], "response": ["x", "y"]}).to_parquet(pq)
    r = run("data", "import", pq, "--kind", "poison", "--name", "pp", "--db", db, "--json")
    assert r.exit_code == 0, r.output
    datasets = pytest.importorskip("datasets")
    hf = tmp_path / "hf"
    datasets.DatasetDict({"train": datasets.Dataset.from_list([{"prompt": "p1", "response": "r1"}]),
                          "test": datasets.Dataset.from_list([{"prompt": "p2", "response": "r2"}])}).save_to_disk(hf)
    r = run("data", "import", hf, "--kind", "task", "--name", "hft", "--db", db, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["splits"] == {"test": 1, "train": 1}


def test_bad_imports(tmp_path):
    f = tmp_path / "x.csv"
    f.write_text("question,answer\nhi,there\n")
    assert "prompt" in _bad(tmp_path, "data", "import", f, "--kind", "harmful", "--name", "x")
    assert "'nope'" in _bad(tmp_path, "data", "import", f, "--kind", "task", "--name", "x", "--prompt-col", "nope")
    g = tmp_path / "y.csv"
    g.write_text("prompt\nhi\n")
    assert "response" in _bad(tmp_path, "data", "import", g, "--kind", "task", "--name", "y")
    assert "--kind" in _bad(tmp_path, "data", "import", g, "--kind", "weird", "--name", "y")
    h = tmp_path / "z.jsonl"
    h.write_text('{"prompt": "ok"}\n{not json\n')
    assert "z.jsonl:2" in _bad(tmp_path, "data", "import", h, "--kind", "benign", "--name", "z")
    assert "does not exist" in _bad(tmp_path, "data", "import", tmp_path / "none.csv", "--kind", "benign",
                                    "--name", "z")
    assert "no dataset" in _bad(tmp_path, "data", "show", "missing")
