"""Every file importer fed malformed files: exit 2, one line naming the file, no traceback, store unchanged.

Importers (`input_inventory.FILE_INPUTS`): `spt data import` (CSV, JSONL, JSON, parquet, and each
`--format`), `spt evaluate --responses`, `spt finetune --config`, `spt import OTHER.db`,
`spt evaluate --benchmark task.yaml`, `spt judge --price-table`, `spt build-data --templates`,
`spt sweep --sbatch-extra`.
"""

from __future__ import annotations

import sqlite3

import input_inventory as inv
import pytest
from fuzz_world import World, build_template, check
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.timeout(300)

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(64))
BINARY = bytes(range(256)) * 4

# tabular content for the row importers: (case, bytes, must_refuse). must_refuse False: a reading that
# spt may legitimately accept (then it must import cleanly: exit 0) or refuse (one line, exit 2).
TABULAR_CSV = [
    ("empty", b"", True),
    ("header only", b"prompt,category\n", True),
    ("binary", BINARY, True),
    ("png header", PNG, True),
    ("nul bytes", b"prompt,category\nhow\x00to,crime\n", True),
    ("latin-1", "prompt,category\nCafé crème recipe?,food\n".encode("latin-1"), True),
    ("utf-16 bom", "prompt,category\nHow do I pick a lock?,crime\n".encode("utf-16"), False),
    ("utf-8 bom", "prompt,category\nHow do I pick a lock?,crime\n".encode("utf-8-sig"), False),
    ("ragged rows", b"prompt,category\nHow do I pick a lock?,crime,extra,more\nonly\n", True),
    ("duplicated columns", b"prompt,prompt,category\na,b,crime\n", True),
    ("missing prompt column", b"question,category\nHow do I pick a lock?,crime\n", True),
    ("empty prompt", b"prompt,category\n,crime\n", True),
    ("unclosed quote", b'prompt,category\n"How do I pick a lock?,crime\n', True),
    ("huge field", b"prompt,category\n" + b"x" * 2_000_000 + b",crime\n", False),
]
TABULAR_JSONL = [
    ("empty", b"", True),
    ("binary", BINARY, True),
    ("truncated line", b'{"prompt": "How do I pick a lock?"}\n{"prompt": "How do', True),
    ("not objects", b"1\n2\n", True),
    ("list line", b'["How do I pick a lock?"]\n', True),
    ("missing prompt key", b'{"question": "How do I pick a lock?"}\n', True),
    ("prompt not a string", b'{"prompt": 5}\n', True),
    ("prompt null", b'{"prompt": null}\n', True),
    ("nan literal", b'{"prompt": "x", "label": NaN}\n', True),
    ("duplicated keys", b'{"prompt": "a", "prompt": "b"}\n', False),
    ("utf-16 bom", '{"prompt": "How do I pick a lock?"}\n'.encode("utf-16"), False),
    ("latin-1", '{"prompt": "Café?"}\n'.encode("latin-1"), True),
]
TABULAR_JSON = [
    ("empty", b"", True),
    ("truncated", b'[{"prompt": "How do I pick a lock?"}, {"prompt": ', True),
    ("scalar", b'"How do I pick a lock?"', True),
    ("object not list", b'{"prompt": "How do I pick a lock?"}', False),
    ("list of numbers", b"[1, 2, 3]", True),
    ("empty list", b"[]", True),
]
TABULAR_PARQUET = [
    ("empty", b"", True),
    ("csv text", b"prompt,category\nHow do I pick a lock?,crime\n", True),
    ("truncated magic", b"PAR1\x00\x00PAR", True),
    ("png header", PNG, True),
]

YAML_RECIPES = [
    ("binary", BINARY, True),
    ("png", PNG, True),
    ("list", b"- lr: 0.1\n", True),
    ("scalar", b"42\n", True),
    ("unknown keys", b"learning_rate: 0.1\nfoo: bar\n", True),
    ("nan lr", b"lr: .nan\n", True),
    ("nan epochs", b"epochs: .NaN\n", True),
    ("inf lr", b"lr: .inf\n", True),
    ("negative steps", b"max_steps: -5\n", True),
    ("huge steps", b"max_steps: 1000000000000000000000000000000\n", True),
    ("nested mapping", b"lr: {a: 1}\n", True),
    ("duplicate keys", b"lr: 0.1\nlr: 0.2\n", True),
    ("tabs", b"lr:\t0.1\n\tepochs: 1\n", True),
    ("python tag", b'lr: !!python/object/apply:os.system ["echo pwned"]\n', True),
    ("unclosed", b"lr: [1e-4\n", True),
    ("utf-16", "lr: 0.0001\n".encode("utf-16"), False),
    ("latin-1 key", "stagé: align\n".encode("latin-1"), True),
    ("defense list", b"defense: [anchor, none]\n", True),
    ("model null", b"model: null\n", False),  # null = unset: the default model
    ("empty", b"", False),  # an empty recipe sets nothing: the defaults
]


def _sqlite_with(table_sql: str | None, path) -> None:
    con = sqlite3.connect(path)
    if table_sql:
        con.executescript(table_sql)
    con.commit()
    con.close()


def _db_cases(world_dir):
    """(case, writer(path)) for `spt import OTHER.db`."""

    def raw(data):
        return lambda p: p.write_bytes(data)

    def store_with_version(v):
        def w(p):
            p.write_bytes((world_dir / "other.db").read_bytes())
            con = sqlite3.connect(p)
            con.execute("UPDATE alembic_version SET version_num = ?", (v,))
            con.commit()
            con.close()
        return w

    def truncated(p):
        p.write_bytes((world_dir / "spt.db").read_bytes()[:8192])

    def dropped_table(p):
        p.write_bytes((world_dir / "other.db").read_bytes())
        con = sqlite3.connect(p)
        con.execute("DROP TABLE metric")
        con.commit()
        con.close()

    def no_version_rows(p):
        p.write_bytes((world_dir / "other.db").read_bytes())
        con = sqlite3.connect(p)
        con.execute("DELETE FROM alembic_version")
        con.commit()
        con.close()

    return [
        ("text file", raw(b"this is not a database\n")),
        ("binary", raw(BINARY)),
        ("empty file", raw(b"")),
        ("png", raw(PNG)),
        ("sqlite header only", raw(b"SQLite format 3\x00" + b"\x00" * 84)),
        ("truncated store", truncated),
        ("unrelated table", lambda p: _sqlite_with("CREATE TABLE users (id INTEGER, name TEXT);"
                                                   "INSERT INTO users VALUES (1, 'a');", p)),
        ("version zzzz", store_with_version("zzzz")),
        ("version empty string", store_with_version("")),
        ("alembic table empty", no_version_rows),
        ("store missing a table", dropped_table),
    ]


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz-files") / "w"
    return World(folder, build_template(folder))


def _run(world, d, key, data: bytes, *, name=None, must_refuse=True, writer=None):
    spec = inv.FILE_INPUTS[key]
    fname = name or (spec.get("stem", "input") + spec["ext"])
    f = d.parent / "in" / fname  # outside the world: the world's snapshot is the store and its neighbours
    f.parent.mkdir(exist_ok=True)
    if writer is not None:
        writer(f)
    else:
        f.write_bytes(data)
    argv = ["--db", str(d / "spt.db"), *[world.fill(a, d).replace("{FILE}", str(f)) for a in spec["argv"]]]
    return check(d, world, argv, [f.name, str(f), "--config", "--responses", "--benchmark", "--price-table",
                                  "--templates", "--sbatch-extra", "OTHER", "SOURCE", "FILE",
                                  *(["--"] if key == "finetune --config" else [])],  # a recipe key, as its flag
                 expect_refusal=must_refuse)


ROW_CASES = []
for key in ("data import (csv)", "evaluate --responses (csv)", *(k for k in inv.FILE_INPUTS if "--format" in k)):
    ROW_CASES += [(key, *c) for c in TABULAR_CSV]
for key in ("data import (jsonl)", "evaluate --responses (jsonl)"):
    ROW_CASES += [(key, *c) for c in TABULAR_JSONL]
ROW_CASES += [("data import (json)", *c) for c in TABULAR_JSON]
ROW_CASES += [("data import (parquet)", *c) for c in TABULAR_PARQUET]


@pytest.mark.parametrize("key,case,data,must_refuse", ROW_CASES, ids=[f"{k}:{c}" for k, c, _, _ in ROW_CASES])
def test_malformed_rows_file(world, tmp_path, key, case, data, must_refuse):
    if key.startswith("evaluate") and case == "missing prompt column":
        data = data.replace(b"question", b"question,response").replace(b"crime\n", b"crime,ok\n")
    with world.copy(tmp_path) as d:
        o = _run(world, d, key, data, must_refuse=must_refuse)
    assert not o.problems, o.describe()


@pytest.mark.parametrize("case,data,must_refuse", YAML_RECIPES, ids=[c for c, _, _ in YAML_RECIPES])
def test_malformed_finetune_recipe(world, tmp_path, case, data, must_refuse):
    with world.copy(tmp_path) as d:
        o = _run(world, d, "finetune --config", data, must_refuse=must_refuse)
        assert not (d / "pwned").exists()
    assert not o.problems, o.describe()


@pytest.mark.parametrize("case", [c for c, _ in _db_cases(__import__("pathlib").Path("."))])
def test_import_of_a_file_that_is_not_a_store(world, tmp_path, case):
    with world.copy(tmp_path) as d:
        writer = dict(_db_cases(d))[case]
        o = _run(world, d, "import OTHER.db", b"", name="other-bad.db", writer=writer)
    assert not o.problems, o.describe()


BENCH_YAML = [("binary", BINARY), ("list", b"- task: x\n"), ("empty mapping", b"{}\n"),
              ("unknown keys", b"task: fz\nbogus_key: 1\n"), ("unclosed", b"task: [x\n")]


@pytest.mark.parametrize("case,data", BENCH_YAML, ids=[c for c, _ in BENCH_YAML])
def test_malformed_benchmark_task_yaml(world, tmp_path, case, data):
    with world.copy(tmp_path) as d:
        o = _run(world, d, "evaluate --benchmark task.yaml", data, name="task.yaml")
    assert not o.problems, o.describe()


PRICE_TABLES = [("binary", BINARY), ("truncated", b'{"gpt-4o-mini": {"input": 0.1'), ("list", b"[1, 2]"),
                ("negative price", b'{"gpt-4o-mini": {"input": -1, "output": 1}}'),
                ("nan price", b'{"gpt-4o-mini": {"input": NaN, "output": 1}}'),
                ("price is text", b'{"gpt-4o-mini": {"input": "cheap", "output": 1}}')]


@pytest.mark.parametrize("case,data", PRICE_TABLES, ids=[c for c, _ in PRICE_TABLES])
def test_malformed_price_table(world, tmp_path, case, data):
    with world.copy(tmp_path) as d:
        o = _run(world, d, "judge --price-table", data, name="prices.json")
    assert not o.problems, o.describe()


def _templates(kind):
    def w(p):
        p.mkdir()
        if kind == "broken yaml":
            (p / "wrappers.yaml").write_text("harmful: [x\n")
        elif kind == "binary file":
            (p / "cybercrime.yaml").write_bytes(BINARY)
    return w


@pytest.mark.parametrize("case", ["empty folder", "broken yaml", "binary file"])
def test_malformed_templates_folder(world, tmp_path, case):
    with world.copy(tmp_path) as d:
        o = _run(world, d, "build-data --templates DIR", b"", name="tpl", writer=_templates(case))
    assert not o.problems, o.describe()


@pytest.mark.parametrize("case,data", [("binary", BINARY), ("nul", b"#SBATCH --x\x00y\n"),
                                       ("latin-1", "#SBATCH --comment=café\n".encode("latin-1"))])
def test_malformed_sbatch_extra(world, tmp_path, case, data):
    with world.copy(tmp_path) as d:
        o = _run(world, d, "sweep --sbatch-extra", data, name="extra.txt")
    assert not o.problems, o.describe()


# hypothesis: random bytes (after a valid header) never crash an importer; if refused, one line, store unchanged
FUZZ = settings(max_examples=12, deadline=None, derandomize=True, database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(key=st.sampled_from(["data import (csv)", "data import (jsonl)", "evaluate --responses (csv)",
                            "data import --format xstest", "finetune --config"]),
       tail=st.binary(min_size=1, max_size=300))
def test_fuzz_random_bytes_never_crash(world, tmp_path, key, tail):
    head = {"data import (csv)": b"prompt,category\n", "data import (jsonl)": b'{"prompt": ',
            "evaluate --responses (csv)": b"prompt,response\n", "data import --format xstest":
            b"id,prompt,type,label,focus,note\n", "finetune --config": b"lr: "}[key]
    with world.copy(tmp_path) as d:
        o = _run(world, d, key, head + tail, must_refuse=False)
    assert not o.problems, o.describe()
