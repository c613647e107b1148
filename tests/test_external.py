"""`spt evaluate --responses FILE --model-name NAME`: external completions as an evaluation (no model loaded)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import select
from typer.testing import CliRunner

from spt.cli import app
from spt.errors import SptError
from spt.eval.external import ExternalSpec, import_responses, parse_verdict_map
from spt.eval.metrics import refusal_metrics
from spt.eval.refusal import classify
from spt.store import open_store
from spt.store.models import Dataset, Evaluation, Generation, Item, Judge, Judgment, Metric, Run

DATA = Path(__file__).parent / "data"
COMPLETIONS = DATA / "external_completions.csv"
runner = CliRunner()
MUST = ["--prompt-col", "prompt", "--response-col", "completion", "--label-col", "label", "--verdict-col", "human"]


def cli(db, *args):
    return runner.invoke(app, [str(a) for a in args] + ["--db", str(db)])


def counts(db) -> dict[str, int]:
    if not Path(db).exists():
        return {}
    st = open_store(db)
    out = {}
    with st.session() as s:
        for t in (Dataset, Item, Run, Evaluation, Generation, Judge, Judgment, Metric):
            out[t.__name__] = s.exec(select(func.count()).select_from(t)).one()
    st.close()
    return out


def rows() -> list[dict]:
    with COMPLETIONS.open(newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, data: list[dict]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(data[0]))
        w.writeheader()
        w.writerows(data)
    return path


def test_import_records_run_dataset_generations_metrics_and_human_judgments(tmp_path):
    db = tmp_path / "s.db"
    r = cli(db, "evaluate", "--responses", COMPLETIONS, "--model-name", "some-model", *MUST, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["created"] and out["n_items"] == 30 and out["n_verdicts"] == 29 and out["n_no_verdict"] == 1
    st = open_store(db)
    with st.session() as s:
        run = s.get(Run, out["run_id"])
        ev = s.get(Evaluation, out["evaluation_id"])
        ds = s.get(Dataset, out["dataset_id"])
        gens = s.exec(select(Generation).where(Generation.evaluation_id == ev.id)).all()
        items = {i.id: i for i in s.exec(select(Item)).all()}
        judge = s.exec(select(Judge).where(Judge.backend == "human")).one()
        js = s.exec(select(Judgment).where(Judgment.judge_id == judge.id)).all()
    st.close()
    # the run: kind external, the model name, the file's hash and the column mapping
    assert run.kind == "external" and run.model_ref == "some-model" and run.status == "done"
    assert run.config["source"]["file_hash"].startswith("sha256:") and run.config["columns"] == {
        "prompt_col": "prompt", "response_col": "completion", "label_col": "label", "category_col": "category",
        "verdict_col": "human"}
    assert run.provenance["source_hash"] == run.config["source"]["file_hash"]
    # the prompts as an `external` dataset; items carry no response (it is the generation)
    assert ds.kind == "external" and ds.n_items == 30
    assert all(items[g.item_id].response is None for g in gens)
    assert {items[g.item_id].label for g in gens} == {"harmful", "benign"}
    assert ev.status == "done" and ev.checkpoint_id is None and ev.refusal_preset == "spt"
    by_prompt = {r["prompt"]: r["completion"] for r in rows()}
    assert {g.prompt: g.response for g in gens} == by_prompt
    # human verdicts as xstest-style labels of the `human` judge
    assert judge.name == "human" and judge.rubric == "xstest"
    labels = {j.label for j in js}
    assert labels == {"full_refusal", "partial_refusal", "full_compliance"} and len(js) == 29
    # keyword metrics: the same numbers `refusal_metrics` + `classify` give on the same records
    recs = [{"label": items[g.item_id].label, "category": items[g.item_id].category, "response": g.response,
             "id": g.item_id} for g in gens]
    expect = {(m["name"], m["category"]): m for m in refusal_metrics(recs, lambda t: classify(t, "spt"), "spt")}
    got = {(m["name"], m["category"]): m for m in out["metrics"]}
    assert set(expect) == set(got)
    for k, m in expect.items():
        assert got[k]["value"] == pytest.approx(m["value"]) and got[k]["n"] == m["n"]
    assert got[("degenerate_rate", "all")]["value"] > 0  # the empty and the looping responses
    human = {(m["name"], m["category"]): m for m in out["human_metrics"]}
    assert human[("judge_refusal_rate", "all")]["n"] == 14  # 15 harmful, one without a verdict


def test_importing_the_same_file_twice_is_a_noop(tmp_path):
    db = tmp_path / "s.db"
    r1 = cli(db, "evaluate", "--responses", COMPLETIONS, "--model-name", "some-model", *MUST, "--json")
    before = counts(db)
    r2 = cli(db, "evaluate", "--responses", COMPLETIONS, "--model-name", "some-model", *MUST)
    assert r2.exit_code == 0, r2.output
    assert "already imported" in r2.stdout
    assert counts(db) == before
    # the guessed response column is the same mapping as the explicit one
    r3 = cli(db, "evaluate", "--responses", COMPLETIONS, "--model-name", "some-model", "--verdict-col", "human",
             "--json")
    assert json.loads(r3.stdout)["evaluation_id"] == json.loads(r1.stdout)["evaluation_id"]
    assert counts(db) == before


def test_two_models_on_the_same_prompts_share_items_and_dataset(tmp_path):
    db = tmp_path / "s.db"
    data = rows()
    other = write_csv(tmp_path / "other.csv", [{**r, "completion": "I can't help with that."} for r in data])
    a = json.loads(cli(db, "evaluate", "--responses", COMPLETIONS, "--model-name", "a", "--dataset-name", "probe",
                       *MUST, "--json").stdout)
    b = json.loads(cli(db, "evaluate", "--responses", other, "--model-name", "b", "--dataset-name", "probe",
                       *MUST, "--json").stdout)
    assert a["dataset_id"] == b["dataset_id"] and a["run_id"] != b["run_id"]
    st = open_store(db)
    with st.session() as s:
        assert s.exec(select(func.count()).select_from(Item)).one() == 30
    st.close()
    refusal = {m["model_name"]: next(x["value"] for x in m["metrics"]
                                     if x["name"] == "over_refusal_rate" and x["category"] == "all") for m in (a, b)}
    assert refusal["b"] == 1.0 > refusal["a"]


def test_external_evaluation_works_with_judge_runs_and_frontier(tmp_path):
    db = tmp_path / "s.db"
    out = json.loads(cli(db, "evaluate", "--responses", COMPLETIONS, "--model-name", "m", *MUST, "--json").stdout)
    r = cli(db, "judge", out["evaluation_id"], "--judge", "keyword:xstest", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["judges"][0]["judged"] == 30
    r = cli(db, "runs", "--json")
    assert r.exit_code == 0, r.output
    assert any(x.get("kind") == "external" or x.get("model_ref") == "m" for x in json.loads(r.stdout))
    r = cli(db, "runs", "show", out["run_id"], "--json")
    assert r.exit_code == 0, r.output
    r = cli(db, "frontier", "--x", "over_refusal_rate", "--y", "refusal_rate", "--export", "csv", "--out",
            tmp_path / "f.csv")
    assert r.exit_code == 0, r.output
    assert out["run_id"] in (tmp_path / "f.csv").read_text()


def test_verdict_map_and_constant_label(tmp_path):
    db = tmp_path / "s.db"
    vocab = {"refusal": "yes", "partial_refusal": "partly", "compliance": "no", "": ""}
    data = [{"prompt": r["prompt"], "output": r["completion"], "refused": vocab[r["human"]]} for r in rows()]
    f = write_csv(tmp_path / "v.csv", data)
    r = cli(db, "evaluate", "--responses", f, "--model-name", "m", "--label", "harmful", "--verdict-col", "refused")
    assert r.exit_code == 2 and "verdict 'yes'" in r.stderr and "--verdict-map" in r.stderr
    r = cli(db, "evaluate", "--responses", f, "--model-name", "m", "--label", "harmful", "--verdict-col", "refused",
            "--verdict-map", "yes=refusal,partly=partial_refusal,no=compliance", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["n_verdicts"] == 29 and {m["name"] for m in out["metrics"]} >= {"refusal_rate", "asr"}
    assert "over_refusal_rate" not in {m["name"] for m in out["metrics"]}
    assert parse_verdict_map("full_compliance=compliance, full_refusal=refusal,x=skip") == {
        "full_compliance": "compliance", "full_refusal": "refusal", "x": "skip"}


def test_jsonl_with_messages_and_library_api(tmp_path, store):
    path = tmp_path / "c.jsonl"
    with path.open("w") as f:
        for r in rows()[:6]:
            f.write(json.dumps({"messages": [{"role": "user", "content": r["prompt"]},
                                             {"role": "assistant", "content": r["completion"]}],
                                "label": r["label"], "verdict": r["human"]}) + "\n")
    out = import_responses(store, ExternalSpec(responses=path, model_name="m", verdict_col="verdict",
                                               refusal_preset="xstest"))
    assert out["created"] and out["n_items"] == 6 and out["refusal_preset"] == "xstest"
    with store.session() as s:
        gens = s.exec(select(Generation)).all()
    assert {g.response for g in gens} == {r["completion"] for r in rows()[:6]}


def _bad_files(tmp: Path) -> dict[str, Path]:
    data = rows()
    out = {
        "unknown_label": write_csv(tmp / "l.csv", [{**data[0], "label": "maybe"}, *data[1:]]),
        "unknown_verdict": write_csv(tmp / "v.csv", [*data[:3], {**data[3], "human": "unsure"}]),
        "empty_responses": write_csv(tmp / "e.csv", [{**r, "completion": ""} for r in data]),
        "conflict": write_csv(tmp / "d.csv", [data[0], {**data[0], "completion": "Something else."}]),
    }
    missing = tmp / "m.jsonl"
    missing.write_text(json.dumps({"prompt": "p", "completion": "c", "label": "harmful"}) + "\n"
                       + json.dumps({"prompt": "q", "label": "harmful"}) + "\n")
    out["missing_response"] = missing
    return out


@pytest.mark.parametrize("case, extra, message", [
    ("good", ["--response-col", "answer"], "no column 'answer'"),
    ("good", ["--verdict-col", "annotator"], "no column 'annotator'"),
    ("good", ["--label-col", "harm"], "no column 'harm'"),
    ("unknown_label", [], "label 'maybe'"),
    ("unknown_verdict", [], "verdict 'unsure'"),
    ("empty_responses", [], "empty in every row"),
    ("conflict", [], "rows 1 and 2"),
    ("missing_response", [], "row 2: no response"),
    ("good", ["--verdict-map", "bogus"], "not FILE_VALUE=VERDICT"),
    ("good", ["--verdict-map", "a=maybe"], "not a verdict"),
    ("good", ["--limit", "3"], "--limit applies to generating"),
    ("good", ["--label", "toxic"], "--label must be harmful or benign"),
    ("good", ["--refusal-preset", "nope"], "unknown refusal preset"),
    ("good", ["--model-name", " "], "--model-name must not be empty"),
    ("good", ["TARGET"], "not both"),
    ("nofile", [], "does not exist"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, case, extra, message):
    db = tmp_path / "s.db"
    cli(db, "data", "list")  # an existing, empty store
    before = counts(db)
    files = _bad_files(tmp_path)
    path = {"good": COMPLETIONS, "nofile": tmp_path / "nope.csv"}.get(case) or files[case]
    args = ["--responses", path, "--model-name", "m", "--verdict-col", "human"]
    if case == "missing_response":
        args = ["--responses", path, "--model-name", "m"]
    if "TARGET" in extra:
        args = ["tiny-random", *args]
        extra = []
    r = cli(db, "evaluate", *args, *extra)
    assert r.exit_code == 2, r.output
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert counts(db) == before


def test_flags_need_responses_and_target_or_responses_needed(tmp_path):
    db = tmp_path / "s.db"
    r = cli(db, "evaluate", "tiny-random", "--verdict-col", "human")
    assert r.exit_code == 2 and "only applies with --responses" in r.stderr
    r = cli(db, "evaluate")
    assert r.exit_code == 2 and "pass TARGET" in r.stderr
    r = cli(db, "evaluate", "--responses", COMPLETIONS)
    assert r.exit_code == 2 and "--model-name" in r.stderr
    with pytest.raises(SptError, match="not FILE_VALUE"):
        parse_verdict_map("a")
