"""`spt evaluate --benchmark`: lm-eval tasks on local weights, stored per sample, equal to lm-eval's own numbers.

Everything is offline: the tests write two task YAMLs and their JSONL data (a `multiple_choice` task and a
`generate_until` task with a regex filter) and evaluate the tiny random model. lm-eval itself is real
(the `bench` extra); the tests that need it skip when it is not installed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from spt.cli import app
from spt.store.models import Dataset, DatasetItem, Evaluation, Generation, Item, Metric

sys.path.insert(0, str(Path(__file__).parent))

N_MC, N_GEN = 8, 6
INVALID = "[invalid]"  # what lm-eval's regex filter returns when the pattern does not match


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def write_tasks(folder: Path) -> dict[str, Path]:
    """A multiple-choice task and a generation task with two filters, and their data, in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    mc = [{"question": f"What is {i} plus {i}?", "choices": [str(2 * i), str(2 * i + 1), "a cat", "blue"],
           "label": i % 4} for i in range(N_MC)]
    # The strict filter looks for "ANSWER: <digits>", which the random model never writes: lm-eval's filter then
    # yields "[invalid]", so exactly the documents whose target is "[invalid]" score 1 (half of them, by design).
    gen = [{"question": f"Count to {i}.", "answer": INVALID if i % 2 == 0 else str(i)} for i in range(N_GEN)]
    (folder / "mc.jsonl").write_text("".join(json.dumps(d) + "\n" for d in mc))
    (folder / "gen.jsonl").write_text("".join(json.dumps(d) + "\n" for d in gen))
    (folder / "mc.yaml").write_text(f"""task: spt_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {folder / 'mc.jsonl'}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
""")
    (folder / "gen.yaml").write_text(f"""task: spt_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {folder / 'gen.jsonl'}
test_split: test
output_type: generate_until
doc_to_text: "Q: {{{{question}}}}\\nA:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 6
  do_sample: false
filter_list:
  - name: strict-match
    filter:
      - function: regex
        regex_pattern: "ANSWER: (\\\\d+)"
      - function: take_first
  - name: raw
    filter:
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
""")
    return {"mc": folder / "mc.yaml", "gen": folder / "gen.yaml"}


@pytest.fixture
def tasks(tmp_path):
    return write_tasks(tmp_path / "tasks")


def _config(paths, **kw):
    from spt.eval.lmeval.run import BenchmarkConfig

    return BenchmarkConfig(benchmarks=[str(p) for p in paths], batch_size=4, **kw)


def _lm_eval_reference(model_path: str, paths, peft: str | None = None, names: list[str] | None = None,
                       **kwargs) -> dict:
    """lm-eval's own run (`simple_evaluate`) on the same tasks and weights: the numbers spt must reproduce."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model_path, peft=peft, device="cpu", dtype="float32", batch_size=4)
    tm = TaskManager(include_path=sorted({str(Path(p).parent) for p in paths}), include_defaults=False)
    return lm_eval.simple_evaluate(model=lm, tasks=names or [str(p) for p in paths], task_manager=tm,
                                   bootstrap_iters=0, log_samples=True, **kwargs)


def _metrics(store, evaluation_id: str) -> dict[tuple[str, str], Metric]:
    with store.session() as s:
        rows = s.exec(select(Metric).where(Metric.evaluation_id == evaluation_id)).all()
    return {(m.name, m.category): m for m in rows}


def _gens(store, evaluation_id: str) -> list[Generation]:
    with store.session() as s:
        return list(s.exec(select(Generation).where(Generation.evaluation_id == evaluation_id)).all())


def test_samples_metrics_and_intervals_match_lm_eval(store, tasks):
    pytest.importorskip("lm_eval")
    from spt import stats
    from spt.eval.lmeval.run import evaluate_benchmark
    from spt.models.resolve import resolve_model

    seen = []
    res = evaluate_benchmark(store, "tiny-random", _config([tasks["mc"], tasks["gen"]], chunk_size=3),
                             progress=seen.append)
    assert res.status == "done" and res.n_run == N_MC + N_GEN and res.n_reused == 0
    assert res.n_docs == {"spt_gen": N_GEN, "spt_mc": N_MC}
    # progress per committed chunk of documents, ending at the task's total
    mc_reports = [(p.done, p.total) for p in seen if p.task == "benchmark spt_mc"]
    assert mc_reports == [(0, N_MC), (3, N_MC), (6, N_MC), (8, N_MC)]

    ref = _lm_eval_reference(resolve_model("tiny-random").path, [tasks["mc"], tasks["gen"]])
    metrics = _metrics(store, res.evaluation_id)
    expected = {"spt_mc/acc": ("spt_mc", "acc,none"), "spt_mc/acc_norm": ("spt_mc", "acc_norm,none"),
                "spt_gen/exact_match": ("spt_gen", "exact_match,strict-match"),
                "spt_gen/exact_match,raw": ("spt_gen", "exact_match,raw")}
    assert {n for n, c in metrics if c == "all"} == set(expected)
    for name, (task, key) in expected.items():
        m = metrics[(name, "all")]
        assert m.value == ref["results"][task][key], name  # the same number lm-eval reports
        n = N_MC if task == "spt_mc" else N_GEN
        assert m.n == n and m.n_unscored == 0
        k = round(m.value * n)
        assert m.ci_method == "clopper-pearson" and (m.ci_low, m.ci_high) == stats.rate_interval(k, n)
        assert m.meta["higher_is_better"] is True and m.meta["lm_eval_key"] == key
    # by construction of the data: the strict filter finds nothing, so exactly the "[invalid]" targets match
    assert metrics[("spt_gen/exact_match", "all")].value == 0.5

    # every sample: lm-eval's hashes, prompt, target, outputs and per-sample values
    gens = {(g.meta["task"], g.meta["doc_id"]): g for g in _gens(store, res.evaluation_id)}
    assert len(gens) == N_MC + N_GEN
    for task, samples in ref["samples"].items():
        for smp in samples:
            g = gens[(task, smp["doc_id"])]
            for h in ("doc_hash", "prompt_hash", "target_hash"):
                assert g.meta[h] == smp[h]
            assert g.prompt == smp["arguments"][0][0]
            f = smp["filter"]
            for metric in smp["metrics"]:
                assert g.meta["metrics"][f][metric] == smp[metric]
            if task == "spt_mc":
                lls = [r[0][0] for r in smp["resps"]]
                assert g.meta["loglikelihoods"] == pytest.approx(lls, abs=1e-5)
                best = max(range(len(lls)), key=lambda i: lls[i])
                assert g.response == smp["doc"]["choices"][best]
            else:
                assert g.response == smp["resps"][0][0]
                assert g.meta["filtered"][f] == smp["filtered_resps"][0]
    # documents: Items in one Dataset per task, prompt and target as rendered
    with store.session() as s:
        dsets = {d.name: d for d in s.exec(select(Dataset).where(Dataset.kind == "benchmark")).all()}
        assert set(dsets) == {"lm-eval:spt_mc", "lm-eval:spt_gen"}
        assert dsets["lm-eval:spt_mc"].n_items == N_MC
        members = s.exec(select(DatasetItem).where(DatasetItem.dataset_id == dsets["lm-eval:spt_gen"].id)).all()
        assert sorted(m.position for m in members) == list(range(N_GEN))
        item = s.get(Item, gens[("spt_gen", 0)].item_id)
        assert item.label == "benchmark" and item.category == "spt_gen" and item.answer == INVALID
        assert item.prompt == "Q: Count to 0.\nA:"
        assert item.meta["doc"] == {"question": "Count to 0.", "answer": INVALID}
        mc_item = s.get(Item, gens[("spt_mc", 1)].item_id)
        assert mc_item.answer == "3" and mc_item.meta["choices"] == ["2", "3", "a cat", "blue"]
        ev = s.get(Evaluation, res.evaluation_id)
        assert ev.config["kind"] == "benchmark" and ev.config["identity_fields"]["lm_eval"] == res.lm_eval_version


def test_resume_after_a_kill_and_no_work_when_finished(store, tasks, monkeypatch):
    pytest.importorskip("lm_eval")
    from spt.eval.lmeval import model as lm_model
    from spt.eval.lmeval.run import evaluate_benchmark

    class Killed(Exception):
        pass

    def kill_after_first_chunk(p):
        if p.task == "benchmark spt_mc" and p.done >= 3:
            raise Killed("stop")

    cfg = _config([tasks["mc"], tasks["gen"]], chunk_size=3)
    with pytest.raises(Killed):
        evaluate_benchmark(store, "tiny-random", cfg, progress=kill_after_first_chunk)
    with store.session() as s:
        (ev,) = s.exec(select(Evaluation)).all()
        assert ev.status == "failed" and ev.lease_owner is None
    kept = {(g.meta["task"], g.meta["doc_id"]): g.id for g in _gens(store, ev.id)}
    assert len(kept) == N_GEN + 3  # the generation task and the first chunk of the multiple-choice one

    res = evaluate_benchmark(store, "tiny-random", _config([tasks["mc"], tasks["gen"]], chunk_size=3))
    assert res.evaluation_id == ev.id and res.status == "done"
    assert res.n_reused == N_GEN + 3 and res.n_run == N_MC - 3
    after = {(g.meta["task"], g.meta["doc_id"]): g.id for g in _gens(store, ev.id)}
    assert len(after) == N_MC + N_GEN and all(after[k] == v for k, v in kept.items())  # kept rows untouched

    # resumed numbers equal an uninterrupted evaluation's (a fresh store)
    from spt.store import open_store

    fresh = open_store(store.path.parent / "fresh.db")
    try:
        clean = evaluate_benchmark(fresh, "tiny-random", _config([tasks["mc"], tasks["gen"]]))
        assert {(m["name"], m["value"]) for m in clean.metrics} == {(m["name"], m["value"]) for m in res.metrics}
    finally:
        fresh.close()

    # finished: nothing recomputed, no model loaded
    def no_model(*a, **k):
        raise AssertionError("a finished benchmark evaluation must not load a model")

    monkeypatch.setattr(lm_model, "build_lm", no_model)
    again = evaluate_benchmark(store, "tiny-random", _config([tasks["mc"], tasks["gen"]], chunk_size=5))
    assert again.reused and again.evaluation_id == ev.id and again.metrics == res.metrics
    # a different setting is a different evaluation (here: the shots)
    monkeypatch.undo()
    other = evaluate_benchmark(store, "tiny-random", _config([tasks["mc"]], num_fewshot=2))
    assert other.evaluation_id != ev.id
    g = next(g for g in _gens(store, other.evaluation_id) if g.meta["doc_id"] == 0)
    assert g.prompt.count("Question:") == 3  # two examples and the question


def test_lora_run_is_evaluated_through_peft_without_merging(store, tasks, monkeypatch):
    pytest.importorskip("lm_eval")
    from peft import PeftModel
    from train_helpers import FAST, mini_data

    from spt.eval.lmeval import model as lm_model
    from spt.eval.lmeval.run import evaluate_benchmark
    from spt.store.models import Checkpoint
    from spt.train import FinetuneConfig, finetune

    tuned = finetune(store, FinetuneConfig(model="tiny-random", max_steps=2, lr=5e-2, **mini_data(store), **FAST))
    adapter = tuned.final_checkpoint.path
    assert (Path(adapter) / "adapter_config.json").exists()
    built = []
    real = lm_model.build_lm

    def spy(spec, *a, **k):
        lm, described = real(spec, *a, **k)
        built.append(lm)
        return lm, described

    monkeypatch.setattr(lm_model, "build_lm", spy)
    res = evaluate_benchmark(store, tuned.run_id[:13], _config([tasks["mc"]]))
    assert isinstance(built[0]._model, PeftModel)  # the adapter on its base, not merged weights
    with store.session() as s:
        ev = s.get(Evaluation, res.evaluation_id)
        assert ev.run_id == tuned.run_id and ev.checkpoint_id == tuned.final_checkpoint.id
        assert ev.config["engine_described"]["peft"] == adapter
        assert not [c for c in s.exec(select(Checkpoint)).all() if c.kind == "merged"]
    from spt.eval.lmeval.model import ModelSpec

    base = ModelSpec("hf", adapter).base
    ref = _lm_eval_reference(base, [tasks["mc"]], peft=adapter)
    m = _metrics(store, res.evaluation_id)[("spt_mc/acc", "all")]
    assert m.value == ref["results"]["spt_mc"]["acc,none"]
    lls = {g.meta["doc_id"]: g.meta["loglikelihoods"] for g in _gens(store, res.evaluation_id)}
    for smp in ref["samples"]["spt_mc"]:
        assert lls[smp["doc_id"]] == pytest.approx([r[0][0] for r in smp["resps"]], abs=1e-5)
    # and the adapter changes the numbers: the base model scores the choices differently
    base_res = evaluate_benchmark(store, "tiny-random", _config([tasks["mc"]]))
    base_lls = {g.meta["doc_id"]: g.meta["loglikelihoods"] for g in _gens(store, base_res.evaluation_id)}
    assert any(abs(a - b) > 1e-3 for d in lls for a, b in zip(lls[d], base_lls[d], strict=True))


def test_chat_template_prompts_are_lm_evals_and_enter_the_identity(store, tasks):
    pytest.importorskip("lm_eval")
    from spt.eval.lmeval.run import evaluate_benchmark
    from spt.models.resolve import resolve_model

    plain = evaluate_benchmark(store, "tiny-random", _config([tasks["mc"]], num_fewshot=1))
    chat = evaluate_benchmark(store, "tiny-random", _config([tasks["mc"]], num_fewshot=1, apply_chat_template=True))
    assert chat.evaluation_id != plain.evaluation_id
    with store.session() as s:
        fields = s.get(Evaluation, chat.evaluation_id).config["identity_fields"]
    assert fields["chat_template"] is True and fields["chat_template_hash"].startswith("sha256:")
    ref = _lm_eval_reference(resolve_model("tiny-random").path, [tasks["mc"]], apply_chat_template=True,
                             num_fewshot=1)
    gens = {g.meta["doc_id"]: g for g in _gens(store, chat.evaluation_id)}
    for smp in ref["samples"]["spt_mc"]:
        assert gens[smp["doc_id"]].prompt == smp["arguments"][0][0]
        assert gens[smp["doc_id"]].meta["prompt_hash"] == smp["prompt_hash"]
    assert "<|im_start|>user" in gens[0].prompt and gens[0].prompt.count("<|im_start|>user") == 2  # 1 shot, turns
    m = _metrics(store, chat.evaluation_id)[("spt_mc/acc", "all")]
    assert m.value == ref["results"]["spt_mc"]["acc,none"]


def test_unit_values_pair_two_models_documents(store, tasks):
    pytest.importorskip("lm_eval")
    from spt import stats
    from spt.eval.kinds import get_kind, kind_of
    from spt.eval.lmeval.run import evaluate_benchmark

    a = evaluate_benchmark(store, "tiny-random", _config([tasks["mc"], tasks["gen"]]))
    b = evaluate_benchmark(store, "tiny-random:1", _config([tasks["mc"], tasks["gen"]]))
    with store.session() as s:
        assert kind_of(s.get(Evaluation, a.evaluation_id)) == "benchmark"
    kind = get_kind("benchmark")
    ua, ub = kind.unit_values(store, a.evaluation_id), kind.unit_values(store, b.evaluation_id)
    assert set(ua.values) == {"spt_mc/acc", "spt_mc/acc_norm", "spt_gen/exact_match", "spt_gen/exact_match,raw"}
    assert ua.kinds["spt_mc/acc"] == "rate"
    assert set(ua.values["spt_mc/acc"]) == set(ub.values["spt_mc/acc"])  # the same documents pair
    assert len(ua.values["spt_mc/acc"]) == N_MC and all(ua.clusters[u] == u for u in ua.values["spt_mc/acc"])
    units = sorted(ua.values["spt_mc/acc"])
    va = [ua.values["spt_mc/acc"][u] for u in units]
    vb = [ub.values["spt_mc/acc"][u] for u in units]
    # the unit values are the numbers the metric rows summarise
    assert sum(va) / len(va) == next(m["value"] for m in a.metrics if m["name"] == "spt_mc/acc")
    diff, lo, hi = stats.paired_bootstrap_diff(va, vb, [ua.clusters[u] for u in units])
    assert diff == pytest.approx(sum(vb) / len(vb) - sum(va) / len(va)) and lo <= diff <= hi
    by_task = kind.unit_values(store, a.evaluation_id, cluster="task")
    assert set(by_task.clusters.values()) == {"spt_mc", "spt_gen"}


def test_group_metrics_pool_their_tasks(store, tasks, tmp_path):
    pytest.importorskip("lm_eval")
    from spt.eval.lmeval.run import evaluate_benchmark

    group = tmp_path / "tasks" / "both.yaml"
    group.write_text("group: spt_both\ntask:\n  - spt_mc\n  - spt_gen\naggregate_metric_list:\n"
                     "  - metric: acc\n    weight_by_size: true\n")
    res = evaluate_benchmark(store, "tiny-random", _config([group]))
    from spt.models.resolve import resolve_model

    # lm-eval 0.4.13 cannot load a group YAML by path (spt loads it by the name it declares): by name here too
    ref = _lm_eval_reference(resolve_model("tiny-random").path, [group], names=["spt_both"])
    m = _metrics(store, res.evaluation_id)
    assert res.groups == ["spt_both"]
    # only the multiple-choice task has `acc`: the group's acc is over its documents, one row per leaf too
    assert m[("spt_both/acc", "all")].value == pytest.approx(ref["results"]["spt_both"]["acc,none"], abs=1e-12)
    assert m[("spt_both/acc", "spt_mc")].value == m[("spt_mc/acc", "all")].value
    assert m[("spt_both/acc", "all")].n == N_MC


def test_cli_benchmark_json_and_frontier_axis(tasks, db_path):
    pytest.importorskip("lm_eval")
    runner = CliRunner()
    r = runner.invoke(app, ["evaluate", "tiny-random", "--benchmark", f"{tasks['mc']},{tasks['gen']}", "--limit", "4",
                            "--db", str(db_path), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["kind"] == "benchmark" and out["n_docs"] == {"spt_gen": 4, "spt_mc": 4}
    assert {m["name"] for m in out["metrics"]} >= {"spt_mc/acc", "spt_gen/exact_match"}
    r = runner.invoke(app, ["evaluate", "tiny-random:1", "--benchmark", str(tasks["mc"]), "--benchmark",
                            str(tasks["gen"]), "--limit", "4", "--db", str(db_path)])
    assert r.exit_code == 0, r.output
    assert "spt_mc/acc" in r.output and "ran 8 documents" in r.output
    # two base models have no reference run to measure hypervolume from: give the origin
    r = runner.invoke(app, ["frontier", "--x", "spt_mc/acc:higher", "--y", "spt_gen/exact_match:higher", "--ref", "0,0",
                            "--db", str(db_path), "--json"])
    assert r.exit_code == 0, r.output
    front = json.loads(r.stdout)
    assert front["n_points"] == 2 and front["x"]["name"] == "spt_mc/acc"
    # without directions or a reference: lm-eval's higher_is_better (stored on the metric rows) gives the
    # direction, and without one base value there is no hypervolume, said in one line
    r = runner.invoke(app, ["frontier", "--x", "spt_mc/acc", "--y", "spt_gen/exact_match", "--db", str(db_path),
                            "--json"])
    assert r.exit_code == 0, r.output
    front = json.loads(r.stdout)
    assert front["x"]["direction"] == "higher" and front["ref"] is None
    assert front["ref_source"].startswith("hypervolume left out")
    # the two runs' documents pair in `spt compare` through the benchmark kind
    runs = [x["id"] for x in json.loads(runner.invoke(app, ["runs", "--db", str(db_path), "--json"]).stdout)]
    r = runner.invoke(app, ["compare", runs[0], runs[1], "--db", str(db_path), "--json"])
    assert r.exit_code == 0, r.output
    cmp = json.loads(r.stdout)
    assert cmp["kind"] == "benchmark" and cmp["preset"] is None and cmp["note"].startswith("seed variance")
    acc = {d["metric"]: d for d in cmp["differences"]}["spt_mc/acc"]
    assert acc["n"] == 4 and acc["ci_low"] <= acc["diff"] <= acc["ci_high"]
    # recomputing a store's metrics recomputes benchmark rows from their stored samples, not as refusal rows
    import sqlite3

    con = sqlite3.connect(db_path)
    before = con.execute("SELECT id, name, category, value, ci_low, ci_high, n FROM metric ORDER BY id").fetchall()
    with con:
        con.execute("UPDATE metric SET value = value + 0.5 WHERE name = 'spt_mc/acc'")
    con.close()
    r = runner.invoke(app, ["evaluate", "--recompute-metrics", "--db", str(db_path), "--json"])
    assert r.exit_code == 0, r.output
    done = json.loads(r.stdout)["evaluations"]
    assert len(done) == 2 and all(d["changed"] == ["spt_mc/acc/all"] and not d["added"] for d in done)
    con = sqlite3.connect(db_path)
    after = con.execute("SELECT id, name, category, value, ci_low, ci_high, n FROM metric ORDER BY id").fetchall()
    con.close()
    assert after == before  # the tampered value restored; no refusal rows added to a benchmark evaluation


def test_bad_inputs_are_one_line_and_write_nothing(tasks, db_path, tmp_path, monkeypatch):
    runner = CliRunner()

    def run(*args):
        r = runner.invoke(app, ["evaluate", "tiny-random", *args, "--db", str(db_path)])
        assert r.exit_code == 2, r.output
        assert len(r.output.strip().splitlines()) == 1, r.output
        return r.output

    assert "does not exist" in run("--benchmark", str(tmp_path / "nope.yaml"))
    assert "--num-fewshot" in run("--benchmark", str(tasks["mc"]), "--num-fewshot", "-1")
    assert "--limit" in run("--benchmark", str(tasks["mc"]), "--limit", "0")
    assert "--dataset does not apply to --benchmark" in run("--benchmark", str(tasks["mc"]), "--dataset", "x")
    assert "apply to --benchmark" in run("--num-fewshot", "2")
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # lm-eval not installed
    assert "pip install 'spt[bench]'" in run("--benchmark", str(tasks["mc"]))
    monkeypatch.undo()
    if __import__("importlib").util.find_spec("lm_eval") is not None:
        monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
        assert "unknown lm-eval task or group 'no_such_task_xyz'" in run("--benchmark", "no_such_task_xyz")
        bad = tasks["mc"].parent / "broken.yaml"
        bad.write_text("task: spt_broken\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
                       f"    test: {tasks['mc'].parent / 'missing.jsonl'}\noutput_type: multiple_choice\n")
        assert "could not load benchmark" in run("--benchmark", str(bad))
    from spt.store import open_store

    if db_path.exists():
        st = open_store(db_path)
        with st.session() as s:
            assert not s.exec(select(Evaluation)).all() and not s.exec(select(Metric)).all()
        st.close()


@pytest.mark.slow
def test_embedded_model_matches_lm_eval(store, tasks):
    """SmolLM2-135M-Instruct (the embedded GGUF, converted): the same accuracy and log-likelihoods as lm-eval."""
    pytest.importorskip("lm_eval")
    from spt.eval.lmeval.run import evaluate_benchmark
    from spt.models.resolve import resolve_model

    res = evaluate_benchmark(store, "smollm2-135m", _config([tasks["mc"], tasks["gen"]]))
    ref = _lm_eval_reference(resolve_model("smollm2-135m").path, [tasks["mc"], tasks["gen"]])
    m = _metrics(store, res.evaluation_id)
    assert m[("spt_mc/acc", "all")].value == ref["results"]["spt_mc"]["acc,none"]
    assert m[("spt_gen/exact_match,raw", "all")].value == ref["results"]["spt_gen"]["exact_match,raw"]
    gens = {(g.meta["task"], g.meta["doc_id"]): g for g in _gens(store, res.evaluation_id)}
    for smp in ref["samples"]["spt_gen"]:
        assert gens[("spt_gen", smp["doc_id"])].response == smp["resps"][0][0]


def test_served_model_through_a_chat_endpoint_on_loopback(store, tasks):
    """engine `openai`: lm-eval's chat-completions client against an OpenAI-compatible server on 127.0.0.1.

    The server answers "ANSWER: 3" to everything, so the strict filter extracts "3": exactly the document
    whose target is "3" scores 1 under strict-match, and none under raw (the raw reply is not a target).
    """
    pytest.importorskip("lm_eval")
    from fake_openai_server import FakeOpenAI

    from spt.eval.lmeval.run import evaluate_benchmark

    srv = FakeOpenAI().start()
    srv.default = {"text": "ANSWER: 3"}
    try:
        cfg = _config([tasks["gen"]], engine="openai", apply_chat_template=True,
                      engine_options={"base_url": srv.base_url})
        res = evaluate_benchmark(store, "openai:served-model", cfg)
        assert res.status == "done" and res.n_docs == {"spt_gen": N_GEN} and res.engine == "openai"
        paths = {r["path"] for r in srv.requests}
        assert paths == {"/v1/chat/completions"} and len(srv.requests) == N_GEN
        assert all(r["body"]["model"] == "served-model" for r in srv.requests)
        assert all(r["body"]["messages"][-1]["role"] == "user" for r in srv.requests)
        metrics = _metrics(store, res.evaluation_id)
        targets = [str(i) if i % 2 else INVALID for i in range(N_GEN)]
        assert metrics[("spt_gen/exact_match", "all")].value == pytest.approx(targets.count("3") / N_GEN)
        assert metrics[("spt_gen/exact_match,raw", "all")].value == 0.0
        assert all(g.response == "ANSWER: 3" for g in _gens(store, res.evaluation_id))
        # the served model is a base run of its own, recorded with the endpoint
        with store.session() as s:
            ev = s.get(Evaluation, res.evaluation_id)
        assert ev.config["engine_described"]["base_url"] == srv.base_url
        n_requests = len(srv.requests)
        again = evaluate_benchmark(store, "openai:served-model", cfg)  # resumes: nothing asked twice
        assert again.evaluation_id == res.evaluation_id and again.n_run == 0 and len(srv.requests) == n_requests
    finally:
        srv.stop()


def test_reasoning_strips_the_thinking_before_lm_eval_scores(store, tasks):
    """A reply whose thinking holds another number: without --reasoning the strict filter takes the number in
    the thought; with it, the answer's. An unfinished thought scores as an empty answer, never its inner
    number, and the thinking is kept in the generation's meta. The setting enters the identity."""
    pytest.importorskip("lm_eval")
    from fake_openai_server import FakeOpenAI

    from spt.eval.lmeval.run import evaluate_benchmark

    srv = FakeOpenAI().start()
    try:
        def run(reply: str, reasoning: str | None):
            srv.default = {"text": reply}
            cfg = _config([tasks["gen"]], engine="openai", apply_chat_template=True,
                          engine_options={"base_url": srv.base_url}, reasoning=reasoning)
            res = evaluate_benchmark(store, f"openai:m-{abs(hash((reply, reasoning))) % 10**6}", cfg)
            return res, _metrics(store, res.evaluation_id)[("spt_gen/exact_match", "all")].value

        n3 = [str(i) if i % 2 else INVALID for i in range(N_GEN)].count("3")
        thought = "<think>ANSWER: 8</think>ANSWER: 3"
        _, plain = run(thought, None)
        res, stripped = run(thought, "think")
        assert plain == 0.0 and stripped == pytest.approx(n3 / N_GEN)
        gens = _gens(store, res.evaluation_id)
        assert all(g.response == "ANSWER: 3" and g.meta["thinking"] == "ANSWER: 8" for g in gens)
        assert all(g.meta["raw_response"] == thought and g.meta["unfinished_thought"] is False for g in gens)
        _, lucky = run("<think>ANSWER: 3 and still thinking", None)
        res, unfinished = run("<think>ANSWER: 3 and still thinking", "think")
        # an empty answer is what a reply without any answer scores: the filter's "[invalid]" (which this task
        # counts right for its "[invalid]" targets), never the "3" inside the thought
        _, no_answer = run("I do not know.", None)
        assert lucky == pytest.approx(n3 / N_GEN) and unfinished == no_answer == pytest.approx(0.5)
        assert all(g.response == "" and g.meta["unfinished_thought"] for g in _gens(store, res.evaluation_id))
    finally:
        srv.stop()


def test_reasoning_enters_the_benchmark_identity_only_when_set(store, tasks):
    from spt.errors import SptError

    with pytest.raises(SptError, match="unknown `reasoning`"):
        _config([tasks["gen"]], reasoning="thinky").validate()
