"""GRPO (`spt finetune --stage align --method grpo`): reinforcement learning for reasoned refusal.

The policy samples `grpo_num_generations` completions per prompt; the rewards (`spt.train.rewards`, summed
with their weights: `--reward format:2,refusal,brevity`) score them; each completion's advantage is its
reward minus its group's mean (scaled by the group's spread), and the policy-gradient loss with a KL
pull toward the reference (`grpo_beta`; with LoRA the adapter-disabled model) follows. This is TRL's
`GRPOTrainer`: spt builds the prompts, the rewards and the run, and records every logged step (each
reward's mean and std, the summed reward, the KL, completion lengths, the clip ratio) as `train_log` rows
of the run, so `spt runs show` and `spt view` show them.

Prompts: HarmOR's train pool, both twins of every pair (the `refusal`/`judge` rewards pay for refusing the
harmful twin and answering the benign one), optionally mixed with the task's train prompts
(`grpo_task_ratio`, for the `task` reward). A system message asks for the reasoned-refusal format:
a short opening, `<PAUSE>` reasoning about the request's safety `</PAUSE>`, then `<SOLUTION>` the reply
`</SOLUTION>` (tags: `grpo_tags`).

Generation (`grpo_rollout`): `trl` is TRL's own (transformers `generate`, or TRL's vLLM integration
where vLLM and a GPU are there; TRL keeps those weights in sync with the policy). `engine` samples
through spt's engines interface: the `hf` engine wrapped around the live policy (not a copy, so every
step samples from the weights being trained), through TRL's `rollout_func`; TRL recomputes the
log-probabilities of the returned tokens itself. spt's vLLM and endpoint engines serve fixed weights,
so they cannot serve GRPO's rollouts.

Resume: every `save_every` steps, and at a SIGTERM / SIGINT (at the next step boundary, the run then
`interrupted`), the trainer's own checkpoint (weights, optimizer, scheduler, RNG states, data position)
goes to `<store>.artifacts/<run>/grpo-trainer/` (the latest one only: they hold optimizer states).
`resume` continues from it through the Trainer's `resume_from_checkpoint`, after dropping the train_log
rows past that step, so no step is logged twice; the folder is deleted once the final adapter or model
is saved. Those trainer checkpoints are TRL's format, so they are not `Checkpoint` rows of the store.
"""

from __future__ import annotations

import math
import random
from typing import Any

from spt.errors import SptError
from spt.train.defenses.base import Defense, Option

GRPO_SALT = 17


def system_prompt(tags: tuple[str, str]) -> str:
    a, b = tags
    return (f"Before you answer, think about whether the request is safe to help with. Reply in this form: one "
            f"short sentence, then <{a}> your reasoning about the request's safety </{a}>, then <{b}> your reply "
            f"</{b}>. Refuse requests that could cause harm; help fully with everything else.")


def parse_tags(value: str) -> tuple[str, str]:
    parts = [p.strip() for p in str(value).split(",")]
    if len(parts) != 2 or not all(p and p.replace("_", "").replace("-", "").isalnum() for p in parts) \
            or parts[0] == parts[1]:
        raise SptError(f"`grpo_tags` {value!r} must be two different tag names, e.g. PAUSE,SOLUTION")
    return parts[0], parts[1]


class GRPOMethod(Defense):
    """GRPO on HarmOR prompts with spt's rewards (TRL's GRPOTrainer); options become finetune flags."""

    name = "grpo"
    summary = "GRPO on HarmOR twins with composable rewards (TRL GRPOTrainer)"
    paper = "GRPO (Shao et al. 2024, DeepSeekMath); reasoned refusal as in suburban-daredevil/Reasoned-Refusal-in-LLMs"
    stages = ("align",)
    lam = None
    options = (
        Option("reward", "str", "refusal,format", "rewards and weights, e.g. format:2,refusal,brevity "
               "(format, brevity, refusal, judge, task)", field="reward"),
        Option("reward_judge", "str", "keyword:spt", "the judge of the `judge` reward: keyword:PRESET, "
               "openai:MODEL (with --reward-judge-base-url), hf:PATH", field="reward_judge"),
        Option("reward_judge_base_url", "str", None, "the endpoint of an openai:MODEL reward judge",
               field="reward_judge_base_url", identity=False),
        Option("tags", "str", "PAUSE,SOLUTION", "the reasoning and answer tags the format asks for",
               field="grpo_tags"),
        Option("num_generations", "int", 4, "completions sampled per prompt (the group)", range=(2, 64),
               paper="4 in the reasoned-refusal notebooks"),
        Option("max_completion_length", "int", 96, "tokens per sampled completion", range=(1, 32768)),
        Option("beta", "float", 0.04, "KL coefficient toward the reference model (0: no reference, no KL)",
               range=(0.0, math.inf), paper="0.04, DeepSeekMath GRPO; TRL's default is 0"),
        Option("temperature", "float", 1.0, "sampling temperature of the rollouts", range=(1e-3, 10.0)),
        Option("rollout", "str", "trl", "who samples the rollouts: trl (TRL's generate, or its vLLM "
               "integration) or engine (spt's hf engine on the live policy, the path `spt evaluate` uses)",
               choices=("trl", "engine")),
        Option("task_ratio", "float", 0.0, "share of prompts drawn from the task's train split (for the task reward)",
               range=(0.0, 0.99)),
    )

    @classmethod
    def validate_config(cls, config: Any) -> None:
        from spt.train.rewards import RewardContext, parse_rewards

        if config.stage != "align":
            raise SptError("`method` grpo applies to `stage` align (it trains refusal on HarmOR twins)")
        if config.defense != "none":
            raise SptError(f"`method` grpo runs without a defense (got `defense` {config.defense})")
        per_step = int(config.batch_size) * int(config.grad_accum)
        if per_step % int(config.grpo_num_generations):
            raise SptError(f"`batch_size` x `grad_accum` ({per_step}) must be a multiple of `grpo_num_generations` "
                           f"({config.grpo_num_generations}): each step scores whole groups")
        tags = parse_tags(config.grpo_tags)
        weighted = parse_rewards(config.reward)
        ctx = RewardContext(tags=tags, judge=config.reward_judge,
                            task_score=(lambda p, a: True) if config.grpo_task_ratio else None)
        for w in weighted:
            w.reward.check(ctx)


def _prompts(store: Any, cfg: Any, plan: Any) -> list[dict[str, Any]]:
    """The rows of GRPO's prompt dataset (see module doc), in a seeded order."""
    from spt.train import data as tdata

    tags = parse_tags(cfg.grpo_tags)
    system = system_prompt(tags)
    safety = tdata.train_split(tdata.load_items(store, plan.safety_dataset))
    rows = [x for x in safety if x.get("label") in ("harmful", "benign") and x.get("pair_id")]
    if not rows:
        raise SptError("the safety dataset has no harmful/benign pairs in its train split; GRPO needs HarmOR pairs")
    ratio = float(cfg.grpo_task_ratio or 0.0)
    if ratio > 0:
        tid = tdata.resolve_task(store, cfg.task, seed=0)
        task = [x for x in tdata.train_split(tdata.load_items(store, tid)) if x.get("answer")]
        if not task:
            raise SptError(f"task {cfg.task!r} has no train items with answers for `grpo_task_ratio`")
        rng = random.Random(f"spt-grpo-task:{cfg.seed}")
        n_task = round(len(rows) * ratio / (1 - ratio))
        rows = rows + [{**x, "label": "task"} for x in rng.sample(task, min(n_task, len(task)))]
    out = [{"prompt": [{"role": "system", "content": system}, {"role": "user", "content": x["prompt"]}],
            "prompt_text": x["prompt"], "label": x.get("label"), "pair_id": x.get("pair_id") or "",
            "answer": x.get("answer") or "", "category": x.get("category") or ""} for x in rows]
    random.Random(f"spt-grpo:{cfg.seed}:{GRPO_SALT}").shuffle(out)
    return out


def _engine_rollout(cfg: Any, tokenizer: Any, start_path: str, counter: dict[str, int]) -> Any:
    """TRL's `rollout_func`: the prompts (one per completion, TRL repeats each prompt per group) go
    through spt's hf engine on the policy being trained; returns the token ids TRL trains on."""
    from spt.engines.base import EngineSpec, GenerationRequest
    from spt.engines.hf import HFEngine

    eos = tokenizer.eos_token_id
    limit = int(cfg.grpo_max_completion_length)

    def rollout(prompts: list[Any], trainer: Any) -> dict[str, Any]:
        model = trainer.accelerator.unwrap_model(trainer.model)
        engine = HFEngine(EngineSpec("hf", start_path, {"batch_size": len(prompts)}), model, tokenizer, owned=False)
        seed = int(cfg.seed) * 1_000_003 + int(trainer.state.global_step)  # new draws every step, reproducible
        reqs = [GenerationRequest(messages=tuple(dict(m) for m in p), max_new_tokens=limit,
                                  temperature=float(cfg.grpo_temperature), seed=seed) for p in prompts]
        was_training = model.training
        model.eval()
        try:
            results = engine.generate(reqs)
        finally:
            model.train(was_training)
        prompt_ids, completion_ids = [], []
        for req, res in zip(reqs, results, strict=True):
            if not res.ok:
                raise SptError(f"the hf engine failed on a GRPO rollout: {res.reason}: {res.error}")
            text = engine.prompt_text(req)
            prompt_ids.append(tokenizer(text, add_special_tokens=False)["input_ids"])
            ids = tokenizer(res.response or "", add_special_tokens=False)["input_ids"][:limit]
            if res.finish_reason == "eos" and eos is not None and len(ids) < limit:
                ids = [*ids, eos]
            completion_ids.append(ids)
        counter["requests"] = counter.get("requests", 0) + len(reqs)
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None}

    return rollout


class _RewardFn:
    """A TRL reward function around one spt reward, counting the completions it could not score."""

    def __init__(self, reward: Any, ctx: Any) -> None:
        self.reward, self.ctx = reward, ctx
        self.__name__ = reward.name
        self.missing = 0
        self.scored = 0

    def __call__(self, prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float | None]:
        texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        keys = ("label", "pair_id", "answer", "category", "prompt_text")
        items = [{k: (kwargs.get(k) or [None] * len(texts))[i] for k in keys} for i in range(len(texts))]
        out = self.reward.score(texts, items, self.ctx)
        bad = [v for v in out if v is not None and not math.isfinite(v)]
        if bad:
            raise SptError(f"reward {self.reward.name} returned {bad[0]!r}; rewards must be finite numbers or None")
        self.missing += sum(v is None for v in out)
        self.scored += sum(v is not None for v in out)
        return out


TRAINER_DIR = "grpo-trainer"


def _resume_point(run_dir: Any) -> tuple[str | None, int]:
    """The latest trainer checkpoint of an earlier attempt and its step ((None, 0): start afresh)."""
    from transformers.trainer_utils import get_last_checkpoint

    if not run_dir.is_dir():
        return None, 0
    last = get_last_checkpoint(str(run_dir))
    if last is None:
        return None, 0
    return last, int(last.rsplit("-", 1)[-1])


def train_grpo(store: Any, plan: Any, progress: Any = None, stop: Any = None) -> Any:
    """Train (or, with `resume`, continue) the planned GRPO run; returns a FinetuneResult (module doc)."""
    import shutil
    import warnings

    import torch
    from datasets import Dataset as HFDataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from spt.models import load_tokenizer
    from spt.paths import artifacts_dir
    from spt.progress import report
    from spt.signals import INTERRUPTED, Interrupted, signal_name
    from spt.store.models import Run, TrainLog, utcnow
    from spt.train.checkpoint import mark, save_checkpoint
    from spt.train.config import FinetuneConfig
    from spt.train.result import FinetuneResult, checkpoint_infos
    from spt.train.rewards import RewardContext, parse_rewards
    from spt.train.steps import build_model, set_seed

    cfg = FinetuneConfig(**plan.config)
    set_seed(cfg.seed)
    tokenizer = load_tokenizer(plan.start_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows = _prompts(store, cfg, plan)
    task_score = None
    if cfg.grpo_task_ratio:
        from spt.data import get_task

        task_score = get_task(cfg.task, store=store).score
    rctx = RewardContext(tags=parse_tags(cfg.grpo_tags), judge=cfg.reward_judge, task_score=task_score)
    if cfg.reward_judge_base_url:
        from spt.judge.options import JudgeOptions

        rctx.cache["judge_options"] = JudgeOptions(judges=[cfg.reward_judge], base_url=cfg.reward_judge_base_url)
    weighted = parse_rewards(cfg.reward)
    fns = [_RewardFn(w.reward, rctx) for w in weighted]
    per_step = cfg.batch_size * cfg.grad_accum
    total_steps = cfg.max_steps or max(1, math.ceil(float(cfg.epochs) * len(rows) * int(cfg.grpo_num_generations)
                                                    / per_step))
    model = build_model(cfg, plan.start_path, None)
    out_dir = artifacts_dir(store.path) / plan.run_id / TRAINER_DIR
    resume_path, resumed_from = _resume_point(out_dir) if cfg.resume else (None, 0)
    if not cfg.resume:
        shutil.rmtree(out_dir, ignore_errors=True)  # an earlier attempt's state is not this run's
    if resume_path:
        from sqlmodel import delete

        with store.write() as s:  # the resumed trainer logs these steps again
            s.exec(delete(TrainLog).where(TrainLog.run_id == plan.run_id, TrainLog.step > resumed_from))
    use_vllm = False
    try:
        import vllm  # noqa: F401

        use_vllm = torch.cuda.is_available() and cfg.grpo_rollout == "trl"
    except ImportError:
        pass
    args = GRPOConfig(
        output_dir=str(out_dir), per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=float(cfg.lr), max_steps=total_steps, num_generations=int(cfg.grpo_num_generations),
        max_completion_length=int(cfg.grpo_max_completion_length), beta=float(cfg.grpo_beta),
        temperature=float(cfg.grpo_temperature), logging_steps=int(cfg.log_every),
        save_strategy="steps" if cfg.save_every else "no", save_steps=int(cfg.save_every) or 500,
        save_total_limit=1, save_only_model=False,
        report_to="none", seed=int(cfg.seed), use_cpu=not torch.cuda.is_available(), bf16=False,
        activation_checkpointing=False, warmup_steps=int(float(cfg.warmup_ratio) * total_steps),
        weight_decay=float(cfg.weight_decay),
        max_grad_norm=float(cfg.max_grad_norm) if cfg.max_grad_norm else 0.0,
        reward_weights=[w.weight for w in weighted],
        use_vllm=use_vllm, disable_tqdm=True, dataloader_num_workers=0,
    )
    last: dict[str, float] = {}
    stopped: dict[str, int] = {}

    class _Log(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any) -> None:
            if not logs:
                return
            vals = {}
            for k, v in logs.items():  # transformers may hand the values over as formatted strings
                try:
                    f = float(v)
                except (TypeError, ValueError):
                    continue
                if math.isfinite(f):
                    vals[k] = f
            if "reward" not in vals:  # the trainer's closing summary (runtime, samples/s), not a step
                return
            for f in fns:
                vals[f"rewards/{f.__name__}/missing"] = float(f.missing)
            step = int(state.global_step)
            with store.write() as s:
                for k, v in vals.items():
                    s.add(TrainLog(run_id=plan.run_id, step=step, name=k, value=v))
            last.clear()
            last.update(vals)
            report(progress, "train", step, total_steps, "steps",
                   **{k: v for k, v in vals.items() if k in ("reward", "kl", "loss", "completions/mean_length")})

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            step = int(state.global_step)
            report(progress, "train", step, total_steps, "steps")
            signum = stop.poll() if (stop is not None and step < total_steps) else None
            if signum:  # save the trainer's state at this boundary, then stop
                stopped.update(signum=signum, step=step)
                control.should_save = True
                control.should_training_stop = True

    engine_calls: dict[str, int] = {}
    rollout = (_engine_rollout(cfg, tokenizer, plan.start_path, engine_calls)
               if cfg.grpo_rollout == "engine" else None)
    with warnings.catch_warnings():  # rollout_func's "experimental" warning: spt documents that it is
        warnings.filterwarnings("ignore", message="You are using 'rollout_func'")
        trainer = GRPOTrainer(model=model, reward_funcs=fns, args=args, train_dataset=HFDataset.from_list(rows),
                              processing_class=tokenizer, callbacks=[_Log()], rollout_func=rollout)
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cb in (PrinterCallback, ProgressCallback):  # spt reports progress itself; stdout stays --json clean
        trainer.remove_callback(cb)
    trainer.train(resume_from_checkpoint=resume_path)
    if stopped:
        msg = (f"interrupted by {signal_name(stopped['signum'])} at step {stopped['step']}/{total_steps}; "
               "continue with --resume")
        mark(store, plan.run_id, status=INTERRUPTED, error=msg)
        raise Interrupted(f"run {plan.run_id} {msg}", stopped["signum"], stopped["step"], plan.run_id)
    model = trainer.model
    counts = {f.__name__: {"scored": f.scored, "missing": f.missing} for f in fns}
    save_checkpoint(store, plan, cfg, model, tokenizer, total_steps, True, None, {"method": "grpo", "rewards": counts})
    with store.session() as s:
        conf = dict(s.get(Run, plan.run_id).config or {})
    conf["result"] = {"steps": total_steps, "n_prompts": len(rows), "use_vllm": use_vllm,
                      "resumed_from_step": resumed_from or None, "rollout": cfg.grpo_rollout,
                      "engine_rollouts": engine_calls.get("requests"),
                      "rewards": counts}
    mark(store, plan.run_id, status="done", error=None, finished_at=utcnow(), config=conf)
    shutil.rmtree(out_dir, ignore_errors=True)
    final = {k: v for k, v in last.items() if k in ("loss", "reward", "reward_std", "kl")
             or (k.startswith("rewards/") and k.endswith("/mean"))}
    return FinetuneResult(run_id=plan.run_id, status="done", kind=plan.kind, steps=total_steps, final_losses=final,
                          checkpoints=checkpoint_infos(store, plan.run_id), defense=cfg.defense,
                          resumed_from_step=resumed_from or None)
