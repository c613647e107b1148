"""GRPO (`spt finetune --stage align --method grpo`): the rewards one by one, the reward spec, a few steps on
tiny-random through TRL's GRPOTrainer with every logged step in the store, missing rewards recorded, and
the reasoned-refusal SFT set for the SFT → GRPO comparison."""

from __future__ import annotations

import json

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from spt.cli import app
from spt.errors import SptError
from spt.train.rewards import RewardContext, get_reward, parse_rewards

runner = CliRunner()
CTX = RewardContext()
GOOD = "Checking. <PAUSE>This is harmful.</PAUSE> <SOLUTION>I'm sorry, but I can't help with that.</SOLUTION>"
HELPS = "Sure. <PAUSE>This is fine.</PAUSE> <SOLUTION>Preheat the oven to 200 C and bake for 30 minutes.</SOLUTION>"


def score(name: str, texts: list[str], items: list[dict], ctx: RewardContext = CTX) -> list:
    return get_reward(name).score(texts, items, ctx)


def test_format_reward_counts_each_structural_check():
    assert score("format", [GOOD], [{}]) == [1.0]
    assert score("format", ["<SOLUTION>a</SOLUTION><PAUSE>b</PAUSE>"], [{}]) == [0.75]  # order wrong
    assert score("format", ["no tags at all"], [{}]) == [0.25]  # only the short-opening check passes
    assert score("format", ["<PAUSE></PAUSE><SOLUTION>x</SOLUTION>"], [{}]) == [0.75]  # empty reasoning
    custom = RewardContext(tags=("think", "answer"))
    assert score("format", ["<think>r</think><answer>a</answer>"], [{}], custom) == [1.0]


def test_brevity_reward_is_one_up_to_twenty_words_then_falls():
    words = lambda n: " ".join(["w"] * n)  # noqa: E731
    assert score("brevity", [f"{words(20)} <PAUSE>r</PAUSE>"], [{}]) == [1.0]
    assert score("brevity", [f"{words(30)} <PAUSE>r</PAUSE>"], [{}]) == [pytest.approx(0.6)]
    assert score("brevity", [f"{words(100)} <PAUSE>r</PAUSE>"], [{}]) == [0.0]


def test_refusal_reward_pays_for_refusing_the_harmful_twin_and_answering_the_benign_one():
    items = [{"label": "harmful"}, {"label": "harmful"}, {"label": "benign"}, {"label": "benign"}, {"label": "task"}]
    texts = [GOOD, HELPS, HELPS, GOOD, HELPS]
    assert score("refusal", texts, items) == [1.0, -1.0, 1.0, -1.0, None]
    # the reasoning says "harmful" but only the answer is read
    assert score("refusal", ["<PAUSE>I can't help with this</PAUSE><SOLUTION>Sure, here you go: step one.</SOLUTION>"],
                 [{"label": "harmful"}]) == [-1.0]
    assert score("refusal", ["the the the the the the the the the the the the"], [{"label": "benign"}]) == [-1.0]


def test_judge_reward_through_the_keyword_backend_agrees_with_the_refusal_reward():
    items = [{"label": "harmful", "prompt_text": "p"}, {"label": "benign", "prompt_text": "q"},
             {"label": "task", "prompt_text": "r"}]
    texts = [GOOD, GOOD, HELPS]
    assert score("judge", texts, items) == score("refusal", texts, items) == [1.0, -1.0, None]


def test_a_failing_judge_gives_a_missing_reward_never_zero():
    from fake_openai_server import FakeOpenAI

    from spt.judge.options import JudgeOptions

    s = FakeOpenAI().start()
    try:
        s.default = {"status": 500}
        ctx = RewardContext(judge="openai:fake-judge")
        ctx.cache["judge_options"] = JudgeOptions(judges=["openai:fake-judge"], base_url=s.base_url, max_retries=0,
                                                  api_key_env=None)
        import os

        os.environ.setdefault("OPENAI_API_KEY", "sk-test")
        out = score("judge", [GOOD, HELPS], [{"label": "harmful", "prompt_text": "p"},
                                             {"label": "benign", "prompt_text": "q"}], ctx)
        assert out == [None, None]
        s.default = {"text": "VERDICT: REFUSAL"}
        assert score("judge", [GOOD], [{"label": "harmful", "prompt_text": "p"}], ctx) == [1.0]
    finally:
        s.stop()


def test_task_reward_scores_task_items_only():
    ctx = RewardContext(task_score=lambda pred, ans: pred.strip().endswith(ans))
    items = [{"answer": "17"}, {"answer": "17"}, {"label": "harmful"}]
    assert score("task", ["<SOLUTION>The answer is 17</SOLUTION>", "It is 12", "no"], items, ctx) == [1.0, 0.0, None]


@pytest.mark.parametrize("spec,message", [("", "is empty"), ("bogus", "unknown reward"),
                                          ("format:x", "is not a number"), ("format:0", "non-zero"),
                                          ("format,format:2", "twice")])
def test_bad_reward_specs_are_refused(spec, message):
    with pytest.raises(SptError, match=message):
        parse_rewards(spec)


def _grpo(db_path, *extra: str):
    return runner.invoke(app, ["finetune", "--model", "tiny-random", "--stage", "align", "--method", "grpo",
                               "--max-steps", "2", "--batch-size", "4", "--grpo-num-generations", "4",
                               "--grpo-max-completion-length", "12", "--log-every", "1", "--db", str(db_path),
                               "--json", *extra])


def test_grpo_trains_and_records_every_logged_step(db_path):
    from spt.store import open_store
    from spt.store.models import Checkpoint, Run, TrainLog

    r = _grpo(db_path, "--reward", "format:2,refusal,brevity")
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["status"] == "done" and res["steps"] == 2
    with open_store(db_path) as st, st.session() as s:
        names = {(x.step, x.name) for x in s.exec(select(TrainLog).where(TrainLog.run_id == res["run_id"]))}
        run = s.get(Run, res["run_id"])
        ck = s.exec(select(Checkpoint).where(Checkpoint.run_id == run.id, Checkpoint.is_final)).one()
    for step in (1, 2):
        for name in ("reward", "kl", "completions/mean_length", "rewards/format/mean", "rewards/refusal/mean",
                     "rewards/brevity/mean", "rewards/refusal/missing"):
            assert (step, name) in names, (step, name)
    assert run.config["method"] == "grpo" and run.config["result"]["rewards"]["format"]["scored"] == 2 * 4 * 1
    assert ck.kind == "adapter"
    shown = json.loads(runner.invoke(app, ["runs", "show", res["run_id"], "--db", str(db_path), "--json"]).output)
    assert shown["training"]["reward"]["n"] == 2 and "kl" in shown["training"]
    text = runner.invoke(app, ["runs", "show", res["run_id"], "--db", str(db_path)], env={"COLUMNS": "200"}).output
    assert "rewards/format/mean" in text and "training" in text
    again = json.loads(_grpo(db_path, "--reward", "format:2,refusal,brevity").output)
    assert again["reused"] and again["run_id"] == res["run_id"]
    other = json.loads(_grpo(db_path, "--reward", "refusal").output)
    assert other["run_id"] != res["run_id"]  # the rewards are part of the identity


def test_grpo_misuse_is_refused_before_anything_is_written(db_path):
    for extra, message in ((["--stage", "task"], "applies to --stage align"),
                           (["--batch-size", "3"], "must be a multiple of --grpo-num-generations"),
                           (["--reward", "task"], "the task reward needs task prompts"),
                           (["--grpo-tags", "A"], "two different tag names"),
                           (["--defense", "vaccine"], "runs without a defense")):
        args = ["finetune", "--model", "tiny-random", "--stage", "align", "--method", "grpo", "--max-steps", "1",
                "--batch-size", "4", "--db", str(db_path), *extra]
        r = runner.invoke(app, args)
        assert r.exit_code != 0 and message in r.output, (extra, r.output)
    r = runner.invoke(app, ["finetune", "--model", "tiny-random", "--stage", "align", "--reward", "refusal",
                            "--db", str(db_path)])
    assert r.exit_code != 0 and "--reward is an option of --method grpo" in r.output
    from spt.store import open_store
    from spt.store.models import Run

    with open_store(db_path) as st, st.session() as s:
        assert s.exec(select(Run).where(Run.kind == "align")).all() == []


def test_reasoned_sft_set_then_grpo_from_it(db_path, store):
    from spt.data.items import load_items
    from spt.store.models import Run
    from spt.train.data import resolve_safety

    did = resolve_safety(store, "builtin:harmor-reasoned")
    items = load_items(store, did)
    harmful = next(x for x in items if x["label"] == "harmful" and x["split"] == "train")
    assert score("format", [harmful["response"]], [{}]) == [1.0]
    assert score("refusal", [harmful["response"]], [harmful]) == [1.0]
    benign = next(x for x in items if x["label"] == "benign" and x["pair_id"] == harmful["pair_id"])
    assert score("refusal", [benign["response"]], [benign]) == [1.0]
    r = runner.invoke(app, ["finetune", "--model", "tiny-random", "--stage", "align", "--safety-data",
                            "builtin:harmor-reasoned", "--max-steps", "1", "--db", str(db_path), "--json"])
    assert r.exit_code == 0, r.output
    sft = json.loads(r.output)["run_id"]
    r = runner.invoke(app, ["finetune", "--from", sft, "--stage", "align", "--method", "grpo", "--max-steps", "1",
                            "--batch-size", "4", "--grpo-max-completion-length", "8", "--db", str(db_path), "--json"])
    assert r.exit_code == 0, r.output
    with store.session() as s:
        assert s.get(Run, json.loads(r.output)["run_id"]).parent_run_id == sft


@pytest.mark.slow
def test_grpo_on_the_embedded_model(db_path):
    r = runner.invoke(app, ["finetune", "--model", "smollm2-135m", "--stage", "align", "--method", "grpo",
                            "--max-steps", "2", "--batch-size", "4", "--grpo-max-completion-length", "24",
                            "--log-every", "1", "--db", str(db_path), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["status"] == "done" and "reward" in res["final_losses"]


def test_the_reasoned_refusal_comparison_runs_as_seeded_configurations(db_path):
    """base, SFT (builtin:harmor-reasoned), SFT + GRPO and GRPO, two seeds each, evaluated on HarmOR test with the
    answer read from the tags, compared seed-aware through `spt compare cfg:… cfg:…`."""
    from spt.store import open_store
    from spt.store.selection import select_runs

    def ft(*args):
        r = runner.invoke(app, ["finetune", "--max-steps", "1", "--db", str(db_path), "--json", *args])
        assert r.exit_code == 0, r.output
        return json.loads(r.output)["run_id"]

    grpo = ["--stage", "align", "--method", "grpo", "--batch-size", "4", "--grpo-max-completion-length", "8"]
    runs = {}
    for seed in ("0", "1"):
        sft = ft("--model", "tiny-random", "--stage", "align", "--safety-data", "builtin:harmor-reasoned",
                 "--seed", seed)
        runs.setdefault("sft", []).append(sft)
        runs.setdefault("sft+grpo", []).append(ft("--from", sft, *grpo, "--seed", seed))
        runs.setdefault("grpo", []).append(ft("--model", "tiny-random", *grpo, "--seed", seed))
    for ids in runs.values():
        for rid in ids:
            r = runner.invoke(app, ["evaluate", rid, "--limit", "4", "--max-new-tokens", "8", "--reasoning",
                                    "tags:PAUSE,SOLUTION", "--db", str(db_path), "--json"])
            assert r.exit_code == 0, r.output
    with open_store(db_path) as st:
        cfg = {r["id"]: r["configuration"] for r in select_runs(st)}
    assert len({cfg[r] for r in runs["grpo"]}) == 1  # the seeds of one configuration
    # SFT + GRPO starts from a different SFT run per seed: still one configuration (lineage-aware), apart from GRPO's
    assert len({cfg[r] for r in runs["sft+grpo"]}) == 1 and cfg[runs["sft+grpo"][0]] != cfg[runs["grpo"][0]]
    r = runner.invoke(app, ["compare", cfg[runs["sft"][0]], cfg[runs["sft+grpo"][0]], "--db", str(db_path), "--json"])
    assert r.exit_code == 0, r.output
    assert {(d["n_seeds_a"], d["n_seeds_b"]) for d in json.loads(r.output)["differences"]} == {(2, 2)}
    r = runner.invoke(app, ["compare", cfg[runs["sft"][0]], cfg[runs["grpo"][0]], "--db", str(db_path), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["seed_variance_estimated"] and {d["n_seeds_a"] for d in out["differences"]} == {2}


class _Chars:
    """A test reward that varies on tiny-random's random text (the length in characters), so GRPO's
    advantages are not all zero and the adapter moves: an equal-weights check is then not trivial."""

    name = "chars"
    summary = "characters / 100"

    def check(self, ctx):
        pass

    def score(self, completions, items, ctx):
        return [len(t) / 100 for t in completions]


def test_grpo_interrupted_by_a_signal_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch):
    """SIGTERM at step 3 of 4: the trainer state is saved at that boundary, the run is `interrupted`;
    `resume` continues it from step 3 to the same adapter as an uninterrupted run, each step logged once."""
    import os
    import signal

    import torch
    from safetensors.torch import load_file

    from spt.paths import artifacts_dir
    from spt.store import open_store
    from spt.store.models import Run, TrainLog
    from spt.train import INTERRUPTED, FinetuneConfig, Interrupted, finetune

    cfg = dict(model="tiny-random", stage="align", method="grpo", max_steps=4, batch_size=4, grpo_num_generations=4,
               grpo_max_completion_length=8, log_every=1, save_every=2, reward="chars,refusal", lr=1e-2)
    from spt.train import rewards

    monkeypatch.setitem(rewards._discover(), "chars", _Chars())

    def adapter(res):
        return load_file(str(res.final_checkpoint.path) + "/adapter_model.safetensors")

    ref_store = open_store(tmp_path / "ref.db")
    ref = adapter(finetune(ref_store, FinetuneConfig(**cfg)))
    ref_store.close()
    assert any(float(v.abs().sum()) > 0 for k, v in ref.items() if "lora_B" in k)  # training moved the adapter
    st = open_store(tmp_path / "b.db")

    def send(p):
        if p.task == "train" and p.done == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Interrupted) as ei:
        finetune(st, FinetuneConfig(**cfg), progress=send)
    assert ei.value.step == 3
    with st.session() as s:
        (run,) = s.exec(select(Run).where(Run.kind == "align")).all()
    assert run.status == INTERRUPTED and "step 3/4" in run.error
    assert (artifacts_dir(st.path) / run.id / "grpo-trainer" / "checkpoint-3").is_dir()
    res = finetune(st, FinetuneConfig(**cfg, resume=True))
    assert res.run_id == run.id and res.resumed_from_step == 3 and res.status == "done"
    got = adapter(res)
    assert set(got) == set(ref)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=1e-6, msg=k)
    with st.session() as s:
        assert s.get(Run, run.id).status == "done"
        steps = [x.step for x in s.exec(select(TrainLog).where(TrainLog.run_id == run.id, TrainLog.name == "reward"))]
    assert sorted(steps) == [1, 2, 3, 4]  # none lost or logged twice across the interruption
    assert not (artifacts_dir(st.path) / run.id / "grpo-trainer").exists()  # optimizer states go once done
    st.close()


def test_grpo_rollouts_through_the_hf_engine_on_the_live_policy(db_path, monkeypatch):
    """`--grpo-rollout engine`: every completion TRL trains on comes from spt's hf engine, sampling the
    model being trained (the same object), with a new seed each step; the run records it and differs from
    the TRL-rollout run's identity."""
    from spt.engines.hf import HFEngine
    from spt.store import open_store
    from spt.store.models import Run, TrainLog

    seen: list[tuple[int, int, float, int]] = []
    real = HFEngine.generate

    def spy(self, requests, **kw):
        seen.append((id(self.model), len(requests), requests[0].temperature, requests[0].seed))
        return real(self, requests, **kw)

    monkeypatch.setattr(HFEngine, "generate", spy)
    r = _grpo(db_path, "--reward", "format,refusal", "--grpo-rollout", "engine", "--grpo-temperature", "0.7")
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert len(seen) == 2 and all(n == 4 and t == 0.7 for _, n, t, _ in seen)  # 2 steps x 4 completions
    assert len({m for m, *_ in seen}) == 1 and seen[0][3] != seen[1][3]  # one live model, a new seed per step
    with open_store(db_path) as st, st.session() as s:
        run = s.get(Run, res["run_id"])
        lengths = [x.value for x in s.exec(select(TrainLog).where(TrainLog.run_id == run.id,
                                                                   TrainLog.name == "completions/mean_length"))]
    assert run.config["result"]["rollout"] == "engine" and run.config["result"]["engine_rollouts"] == 8
    assert len(lengths) == 2 and all(0 < v <= 12 for v in lengths)
    trl = json.loads(_grpo(db_path, "--reward", "format,refusal", "--grpo-temperature", "0.7").output)
    assert trl["run_id"] != res["run_id"] and not trl.get("reused")  # the rollout path is part of the identity
