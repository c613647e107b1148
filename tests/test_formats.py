"""`spt data import FILE --format xstest|advbench|harmbench|strongreject|orbench` on fixtures in each set's layout."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import select
from typer.testing import CliRunner

from spt.cli import app
from spt.data import load_items
from spt.data.formats import format_items, get_format
from spt.errors import SptError
from spt.store import open_store
from spt.store.models import Dataset, Evaluation, Item, Run

FORMATS = Path(__file__).parent / "data" / "formats"
runner = CliRunner()

# (format, fixture, expected dataset name, n items, n harmful, categories)
CASES = [
    ("xstest", "xstest_prompts.csv", "xstest", 8, 4,
     {"homonyms", "figurative_language", "definitions"}),
    ("advbench", "harmful_behaviors.csv", "advbench", 6, 6, {None}),
    ("harmbench", "harmbench_behaviors_text_all.csv", "harmbench", 6, 6,
     {"chemical_biological", "misinformation_disinformation", "cybercrime_intrusion", "illegal", "copyright"}),
    ("strongreject", "strongreject_dataset.csv", "strongreject", 6, 6,
     {"Disinformation and deception", "Illegal goods and services", "Hate harassment and discrimination",
      "Non-violent crimes", "Sexual content", "Violence"}),
    ("orbench", "or-bench-hard-1k.csv", "or-bench-hard-1k", 6, 0,
     {"deception", "harmful", "illegal", "privacy", "harassment"}),
    ("orbench", "or-bench-toxic.csv", "or-bench-toxic", 5, 5,
     {"privacy", "harassment", "illegal", "deception", "harmful"}),
]


def cli(db, *args):
    return runner.invoke(app, [str(a) for a in args] + ["--db", str(db)])


def n_rows(db) -> tuple[int, int]:
    st = open_store(db)
    with st.session() as s:
        out = (s.exec(select(func.count()).select_from(Dataset)).one(),
               s.exec(select(func.count()).select_from(Item)).one())
    st.close()
    return out


@pytest.mark.parametrize("fmt, fixture, name, n, n_harmful, cats", CASES)
def test_import_each_layout(tmp_path, fmt, fixture, name, n, n_harmful, cats):
    db = tmp_path / "s.db"
    r = cli(db, "data", "import", FORMATS / fixture, "--format", fmt, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["name"] == name and out["n_items"] == n and out["splits"] == {"test": n}
    st = open_store(db)
    items = load_items(st, out["dataset_id"])
    with st.session() as s:
        ds = s.get(Dataset, out["dataset_id"])
    st.close()
    assert sum(1 for it in items if it["label"] == "harmful") == n_harmful
    assert {it["label"] for it in items} <= {"harmful", "benign"}
    assert {it["category"] for it in items} == cats
    assert all(it["response"] is None and it["meta"]["source"] for it in items)
    assert ds.source["format"] == fmt and ds.source["file_hash"].startswith("sha256:")
    # the same file again: no new dataset
    before = n_rows(db)
    r2 = cli(db, "data", "import", FORMATS / fixture, "--format", fmt, "--json")
    assert r2.exit_code == 0 and json.loads(r2.stdout)["dataset_id"] == out["dataset_id"]
    assert n_rows(db) == before


def test_format_details():
    def items(fmt, fixture, **kw):
        with (FORMATS / fixture).open(newline="") as f:
            return format_items(list(csv.DictReader(f)), fmt, source_name=fixture, path=FORMATS / fixture, **kw)

    xs = items("xstest", "xstest_prompts.csv")
    kill = [it for it in xs if it["sensitive_word"] == "kill"]
    assert {(it["label"], it["contrast_type"], it["category"]) for it in kill} == {
        ("benign", "homonyms", "homonyms"), ("harmful", "contrast_homonyms", "homonyms")}
    adv = items("advbench", "harmful_behaviors.csv")
    assert adv[0]["meta"]["target"].startswith("Sure, here is") and adv[0]["response"] is None
    hb = {it["meta"]["behavior_id"]: it for it in items("harmbench", "harmbench_behaviors_text_all.csv")}
    ctx = hb["phishing_email_policy_context"]
    assert ctx["prompt"].startswith("Section 4.2") and "\n\n---\n\n" in ctx["prompt"]
    assert ctx["meta"]["functional_category"] == "contextual"
    sr = items("strongreject", "strongreject_dataset.csv")
    assert {it["meta"]["origin"] for it in sr} == {"custom", "DAN", "AdvBench", "HarmfulQ"}
    assert {it["label"] for it in items("orbench", "or-bench-hard-1k.csv", label="harmful")} == {"harmful"}
    assert get_format("or-bench").name == "orbench"


@pytest.mark.parametrize("args, message", [
    (["xstest_prompts.csv", "--format", "advbench"], "not in the advbench layout: no column 'goal'"),
    (["harmful_behaviors.csv", "--format", "nosuch"], "unknown --format"),
    (["harmful_behaviors.csv", "--format", "advbench", "--label", "benign"], "--label does not apply"),
    (["harmful_behaviors.csv", "--format", "advbench", "--kind", "harmful"], "--kind does not apply"),
    (["harmful_behaviors.csv", "--format", "advbench", "--prompt-col", "goal"], "--prompt-col does not apply"),
    (["or-bench-renamed.csv", "--format", "orbench"], "pass --label harmful or --label benign"),
    (["or-bench-hard-1k.csv", "--format", "orbench", "--label", "toxic"], "--label must be harmful or benign"),
    (["xstest_bad.csv", "--format", "xstest"], "contradicts type"),
    (["harmful_behaviors.csv"], "pass --kind"),
])
def test_bad_input_is_one_line_and_stores_nothing(tmp_path, args, message):
    db = tmp_path / "s.db"
    (tmp_path / "or-bench-renamed.csv").write_text((FORMATS / "or-bench-toxic.csv").read_text())
    bad = (FORMATS / "xstest_prompts.csv").read_text().replace("contrast_homonyms,unsafe", "contrast_homonyms,safe", 1)
    (tmp_path / "xstest_bad.csv").write_text(bad)
    path = FORMATS / args[0] if (FORMATS / args[0]).exists() else tmp_path / args[0]
    r = cli(db, "data", "import", path, *args[1:])
    assert r.exit_code == 2, r.output
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not db.exists() or n_rows(db) == (0, 0)


def test_library_errors():
    with pytest.raises(SptError, match="has no rows"):
        format_items([], "advbench", source_name="x.csv")


@pytest.mark.parametrize("fmt, fixture", [("xstest", "xstest_prompts.csv"), ("harmbench",
                                                                            "harmbench_behaviors_text_all.csv")])
def test_evaluate_on_an_imported_set_with_external_responses(tmp_path, fmt, fixture):
    """An imported public set, then its completions (written elsewhere) imported with the same --format."""
    db = tmp_path / "s.db"
    r = cli(db, "data", "import", FORMATS / fixture, "--format", fmt, "--json")
    ds_id = json.loads(r.stdout)["dataset_id"]
    with (FORMATS / fixture).open(newline="") as f:
        rows = list(csv.DictReader(f))
    for k, row in enumerate(rows):
        row["completion"] = "I'm sorry, but I can't help with that." if k % 2 else "Sure, here is an overview."
    out_path = tmp_path / "completions.csv"
    with out_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    r = cli(db, "evaluate", "--responses", out_path, "--model-name", "api-model", "--format", fmt,
            "--response-col", "completion", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    st = open_store(db)
    with st.session() as s:
        ev = s.get(Evaluation, out["evaluation_id"])
    imported = {it["id"] for it in load_items(st, ds_id)}
    external = {it["id"] for it in load_items(st, ev.dataset_id)}
    st.close()
    assert imported == external  # the same items as `spt data import --format`
    assert {m["name"] for m in out["metrics"]} >= {"refusal_rate", "degenerate_rate"}


def test_evaluate_tiny_model_on_imported_xstest(tmp_path):
    """`spt evaluate tiny-random --dataset xstest` on the imported fixture (generation with the tiny model)."""
    db = tmp_path / "s.db"
    cli(db, "data", "import", FORMATS / "xstest_prompts.csv", "--format", "xstest")
    r = cli(db, "evaluate", "tiny-random", "--dataset", "xstest", "--limit", "4", "--max-new-tokens", "3",
            "--task", "none", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["n_items"] == 4 and out["dataset"] == "xstest"
    st = open_store(db)
    with st.session() as s:
        assert s.get(Run, out["run_id"]).kind == "base"
    st.close()
