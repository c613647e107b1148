"""`spt evaluate TARGET`: generations, keyword refusal, alignment/task loss and task accuracy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from spt.commands._common import DbOption, JsonOption, ProgressDisplay, console, get_store, num, print_json, show

if TYPE_CHECKING:
    from spt.eval.evaluate import EvaluateResult

_EXT = "Import completions generated elsewhere"
_AGENT = "Agentic (tool-use) evaluations"
_AGENT_CAPTION = ("scores 0-3 per case (median over evaluator replicates), means with a bootstrap over cases; "
                  "*_rate: share of cases scoring >= 2, exact interval")
_CI = "95% CIs: rates exact (Clopper-Pearson), means a bootstrap over sensitive words"

_ORDER = ("refusal_rate", "asr", "over_refusal_rate", "pair_score", "alignment_loss", "alignment_loss_harmful",
          "alignment_loss_benign", "task_loss", "task_accuracy")


def _render(result: EvaluateResult) -> None:
    show(_metrics_table(result.metrics, f"evaluation {result.evaluation_id}  (run {result.run_id})",
                        f"refusal preset: {result.refusal_preset}; {_CI}"))
    tps = result.tokens_per_s
    console.print(
        f"dataset {escape(result.dataset)} ({result.split}, {result.n_items} items)"
        + (f", task {escape(result.task)} ({result.n_task_items} items)" if result.task else "")
        + f", preset {result.refusal_preset}: generated {result.n_generated}, reused {result.n_reused}"
        + (f", copied {result.n_copied}" if result.n_copied else "")
        + (f", [yellow]{result.n_failed} failed[/yellow] (stored with their reason, left out of every metric)"
           if result.n_failed else "")
        + (f", {tps:.1f} new tokens/s" if tps else ""),
        highlight=False,
    )


def _render_external(result: dict) -> None:
    show(_metrics_table(result["metrics"], f"evaluation {result['evaluation_id']}  (external run "
                                f"{result['run_id']}, model {result['model_name']})",
                                f"keyword preset: {result['refusal_preset']} on the imported responses; {_CI}"))
    if result.get("human_metrics"):
        show(_metrics_table(result["human_metrics"], "human verdicts (judge `human`, refused = full or "
                                    "partial refusal)", _CI))
    what = "imported" if result["created"] else "already imported (nothing written)"
    extra = []
    if result["n_duplicates"]:
        extra.append(f"{result['n_duplicates']} duplicate rows dropped")
    if result["n_verdicts"] or result["n_no_verdict"]:
        no = result["n_no_verdict"]
        extra.append(f"{result['n_verdicts']} human verdicts"
                     + (f", {no} row{'s' if no != 1 else ''} without one" if no else ""))
    console.print(
        f"{what}: {result['n_items']} responses of {escape(result['model_name'])} from {escape(result['source'])} "
        f"as dataset {escape(str(result['dataset']))} ({result['split']})"
        + (f"; {'; '.join(extra)}" if extra else "")
        + "; compare with human verdicts: spt judge --agreement",
        highlight=False,
    )


def _render_recomputed(done: list[Any]) -> None:
    if not done:
        console.print("no finished evaluation to recompute", highlight=False)
        return
    table = Table("evaluation", "run", "metrics", "judge metrics", "changed", "added", "kept as stored",
                  title="metrics recomputed from stored responses and losses", title_justify="left")
    for d in done:
        table.add_row(d.evaluation_id, d.run_id, str(d.n_metrics), str(d.n_judge_metrics),
                      escape(", ".join(d.changed)) or "-", escape(", ".join(d.added)) or "-",
                      escape(", ".join(d.kept)) or "-")
    show(table)


def _metrics_table(metrics: list[dict], title: str, caption: str) -> Table:
    order = list(dict.fromkeys([*_ORDER, *(m["name"] for m in metrics)]))
    cats = sorted({m["category"] for m in metrics}, key=lambda c: (c != "all", c))
    table = Table(title=title, caption=caption)
    for col, just in (("category", "left"), ("metric", "left"), ("value", "right"), ("95% CI", "right"),
                      ("n", "right"), ("unscored", "right")):
        table.add_column(col, justify=just, no_wrap=col != "category")  # type: ignore[arg-type]
    for c in cats:
        rows = sorted((m for m in metrics if m["category"] == c), key=lambda m: order.index(m["name"]))
        for k, m in enumerate(rows):
            table.add_row(escape(c) if k == 0 else "", m["name"], num(m["value"], ".3f"),
                          f"[{num(m['ci_low'], '.3f')}, {num(m['ci_high'], '.3f')}]" if m["value"] is not None else "",
                          str(m["n"]), str(m["n_unscored"]), end_section=k == len(rows) - 1)
    return table


# --- benchmarks (lm-evaluation-harness): `--benchmark NAMES` dispatches to the `benchmark` evaluation kind ---
_BENCH = "Benchmarks (lm-evaluation-harness)"
_ENG = "Engines (served and API models, vLLM)"


def _import_trajectories(ctx: typer.Context, target: str | None, trajectories: str, fmt: str | None,
                         model_name: str | None, train_seed: int | None, dataset_name: str | None,
                         gen_flags: dict[str, bool], ext_flags: dict[str, Any], db: Any, json_out: bool) -> None:
    """`spt evaluate --trajectories DIR --format toolemu`: checked fully before the store is opened."""
    from spt.agentic.importer import TrajectoryImport, import_trajectories, plan_import
    from spt.errors import SptError

    if target is not None:
        raise SptError(f"pass TARGET (evaluate a model) or --trajectories DIR (import agent runs), not both; got "
                       f"TARGET {target!r}")
    bad = [k for k, v in gen_flags.items() if v] + [k for k, v in ext_flags.items() if v is not None]
    if bad:
        raise SptError(f"{bad[0]} does not apply to --trajectories (importing agent runs); drop it")
    if fmt is None:
        raise SptError("--trajectories needs --format toolemu (the layout of the trajectory files)")
    spec = TrajectoryImport(trajectories=trajectories, format=fmt, model_name=model_name, train_seed=train_seed,
                            dataset_name=(dataset_name or "toolemu").strip() or "toolemu")
    plan = plan_import(spec)
    with get_store(ctx, db) as store:
        result = import_trajectories(store, spec, plan)
    if json_out:
        print_json(result)
        return
    what = "imported" if result["created"] else "already imported (nothing written)"
    table = _metrics_table(result["metrics"], f"agentic evaluation {result['evaluation_id']} (run {result['run_id']}, "
                           f"model {result['model_name']})", _AGENT_CAPTION)
    console.print(table)
    console.print(f"{what}: {result['n_trajectories']} trajectories ({result['n_steps']} steps) of "
                  f"{escape(result['model_name'])} on {result['dataset']}")


def _run_benchmark(ctx: typer.Context, target: str | None, benchmarks: list[str], limit: int | None,
                   num_fewshot: int | None, apply_chat_template: bool, gen_kwargs: str | None, batch_size: str,
                   dtype: str | None, other_flags: dict[str, bool], db: Any, json_out: bool, engine: str = "hf",
                   engine_options: dict[str, Any] | None = None, reasoning: str = "none",
                   system_prompt: str | None = None) -> None:
    from spt.errors import SptError
    from spt.eval.evaluate import parse_batch_size
    from spt.eval.kinds import get_kind
    from spt.eval.lmeval.run import BenchmarkConfig
    from spt.eval.system_prompt import resolve_system_prompt

    bad = [k for k, v in other_flags.items() if v]
    if bad:
        raise SptError(f"{bad[0]} does not apply to --benchmark (lm-eval tasks bring their own data and "
                       "settings); drop it")
    if target is None:
        raise SptError("--benchmark needs TARGET (a run, checkpoint or model to evaluate)")
    config = BenchmarkConfig(benchmarks=benchmarks, limit=limit, num_fewshot=num_fewshot,
                             apply_chat_template=apply_chat_template, gen_kwargs=gen_kwargs,
                             batch_size=parse_batch_size(batch_size) if batch_size != "auto" else 8, dtype=dtype,
                             engine=engine, engine_options={k: v for k, v in (engine_options or {}).items()
                                                            if v is not None and k in ("base_url", "api_key_env")},
                             reasoning=reasoning if reasoning != "none" else None,
                             system_instruction=resolve_system_prompt(system_prompt))
    config.validate()
    store = get_store(ctx, db)
    with ProgressDisplay(quiet=json_out) as display:
        result = get_kind("benchmark").run(store, target, config, progress=display)
    if json_out:
        print_json(result.to_dict())
        return
    show(_metrics_table(result.metrics, f"benchmark evaluation {result.evaluation_id}  (run {result.run_id})",
                        "95% CIs: 0/1 metrics exact (Clopper-Pearson), other means a bootstrap over documents"))
    docs = ", ".join(f"{t} ({n})" for t, n in result.n_docs.items())
    console.print(f"lm-eval {result.lm_eval_version}, engine {result.engine}: {escape(docs)}; ran {result.n_run} "
                  f"documents, reused {result.n_reused}", highlight=False)


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def _cmd(
        ctx: typer.Context,
        target: Annotated[str | None, typer.Argument(
            help="Run id (or unique prefix): its final checkpoint; a checkpoint id; or a model reference "
            "(tiny-random, smollm2-135m, a directory). Omit it with --responses.", show_default=False)] = None,
        dataset: Annotated[str | None, typer.Option("--dataset", help="Safety dataset name or id (default: HarmOR).",
                                                    show_default=False)] = None,
        split: Annotated[str, typer.Option("--split", help="Split of the safety dataset.")] = "test",
        task: Annotated[str | None, typer.Option(
            "--task", help="Task for task_loss/task_accuracy (default: the run's task; 'none' to skip).",
            show_default=False)] = None,
        task_split: Annotated[str, typer.Option(
            "--task-split", help="Split of the task: test, or dev to choose a protocol without looking at test.")
        ] = "test",
        limit: Annotated[int | None, typer.Option(
            "--limit", help="Evaluate N items of each split (whole pairs, round-robin over categories).",
            show_default=False)] = None,
        max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Tokens to generate per item.")] = 64,
        batch_size: Annotated[str, typer.Option("--batch-size", help="Generation batch size, or 'auto'.")] = "auto",
        temperature: Annotated[float, typer.Option("--temperature", help="0 = greedy; > 0 samples with --seed.")] = 0.0,
        seed: Annotated[int, typer.Option("--seed", help="Sampling seed (used when --temperature > 0).")] = 0,
        refusal_preset: Annotated[str, typer.Option("--refusal-preset",
                                                    help="Keyword refusal preset: spt, gcg, gcg-ci, gcg-prefix, "
                                                    "xstest.")] = "spt",
        no_generate: Annotated[bool, typer.Option("--no-generate", help="Only teacher-forced losses.")] = False,
        dtype: Annotated[str | None, typer.Option("--dtype", help="float32 (default), bfloat16 or float16.",
                                                  show_default=False)] = None,
        reasoning: Annotated[str, typer.Option(
            "--reasoning", help="How the model marks its thinking: none, think (<think>…</think>) or tags:OPEN,ANSWER "
            "(e.g. tags:PAUSE,SOLUTION). Refusal and task answers are scored on the answer; an unfinished thought "
            "is never an answer.")] = "none",
        system_prompt: Annotated[str | None, typer.Option(
            "--system-prompt", help="A system turn before every prompt: its text, @FILE, or grpo[:OPEN,ANSWER] (the "
            "prompt GRPO trains with). Part of the evaluation's identity; losses are computed without it.",
            show_default=False)] = None,
        responses: Annotated[str | None, typer.Option(
            "--responses", help="Import completions generated elsewhere (JSONL/CSV/parquet) as an external run "
            "instead of generating; needs --model-name.", show_default=False, rich_help_panel=_EXT)] = None,
        model_name: Annotated[str | None, typer.Option(
            "--model-name", help="The model that wrote the --responses.", show_default=False,
            rich_help_panel=_EXT)] = None,
        prompt_col: Annotated[str | None, typer.Option(
            "--prompt-col", help="Prompt column (default: prompt, else messages).", show_default=False,
            rich_help_panel=_EXT)] = None,
        response_col: Annotated[str | None, typer.Option(
            "--response-col", help="Completion column (default: response, completion or output).",
            show_default=False, rich_help_panel=_EXT)] = None,
        label_col: Annotated[str | None, typer.Option(
            "--label-col", help="harmful/benign column (harmful/unsafe/1 or benign/safe/0; default: label).",
            show_default=False, rich_help_panel=_EXT)] = None,
        label: Annotated[str | None, typer.Option(
            "--label", help="One label for every row (harmful or benign) when the file has no label column.",
            show_default=False, rich_help_panel=_EXT)] = None,
        category_col: Annotated[str | None, typer.Option(
            "--category-col", help="Category column (default: category).", show_default=False,
            rich_help_panel=_EXT)] = None,
        verdict_col: Annotated[str | None, typer.Option(
            "--verdict-col", help="Human verdicts: refusal, partial_refusal, compliance (or XSTest's "
            "full_refusal, ...); stored as judge `human`.", show_default=False, rich_help_panel=_EXT)] = None,
        verdict_map: Annotated[str | None, typer.Option(
            "--verdict-map", help="Map other verdict values: FILE_VALUE=refusal|partial_refusal|compliance|skip,... "
            "(e.g. yes=refusal,no=compliance).", show_default=False, rich_help_panel=_EXT)] = None,
        fmt: Annotated[str | None, typer.Option(
            "--format", help="The prompts are in a public set's layout (xstest, advbench, harmbench, strongreject, "
            "orbench): it maps prompt, label and category. With --trajectories: toolemu.", show_default=False,
            rich_help_panel=_EXT)] = None,
        dataset_name: Annotated[str | None, typer.Option(
            "--dataset-name", help="Name of the prompts' dataset (default: the file's stem).", show_default=False,
            rich_help_panel=_EXT)] = None,
        train_seed: Annotated[int | None, typer.Option(
            "--train-seed", min=0, help="Training seed of the model that wrote the file: imports of one "
            "--model-name with different seeds are the seeds of configuration model:NAME (seed-aware compare).",
            show_default=False, rich_help_panel=_EXT)] = None,
        cluster_col: Annotated[str | None, typer.Option(
            "--cluster-col", help="Column grouping correlated rows (sensitive word, template, source): intervals "
            "resample these clusters.", show_default=False, rich_help_panel=_EXT)] = None,
        trajectories: Annotated[str | None, typer.Option(
            "--trajectories", help="Import a folder of one agent's ToolEmu trajectory files and their evaluator files "
            "(with --format toolemu) as an agentic evaluation: agent_safety, agent_help per case.",
            show_default=False, rich_help_panel=_AGENT)] = None,
        emulator: Annotated[str | None, typer.Option(
            "--emulator", help="Run TARGET as an agent on --dataset's tool-use cases (default toolemu); SPEC plays the "
            "tools: openai:MODEL, vllm:PATH, hf:REF or a model reference.", show_default=False,
            rich_help_panel=_AGENT)] = None,
        evaluator: Annotated[str | None, typer.Option(
            "--evaluator", help="SPEC that scores each trajectory for Safety and Help(Ignore), 0-3 (same forms as "
            "--emulator); another evaluator on a finished evaluation adds its scores.", show_default=False,
            rich_help_panel=_AGENT)] = None,
        replicates: Annotated[int, typer.Option(
            "--replicates", min=1, help="Evaluator calls per trajectory and scale (median reported).",
            rich_help_panel=_AGENT)] = 1,
        max_steps: Annotated[int, typer.Option(
            "--max-steps", min=1, help="Tool calls per case before the trajectory ends unfinished.",
            rich_help_panel=_AGENT)] = 8,
        emulator_base_url: Annotated[str | None, typer.Option(
            "--emulator-base-url", help="Endpoint of an openai:MODEL emulator (default --base-url).",
            show_default=False, rich_help_panel=_AGENT)] = None,
        evaluator_base_url: Annotated[str | None, typer.Option(
            "--evaluator-base-url", help="Endpoint of an openai:MODEL evaluator (default --base-url).",
            show_default=False, rich_help_panel=_AGENT)] = None,
        recompute: Annotated[bool, typer.Option(
            "--recompute-metrics", help="Recompute the metrics of TARGET's finished evaluations (a run or "
            "evaluation id; all evaluations when omitted) from the stored responses, losses and judgments: no "
            "model is loaded, nothing is generated.")] = False,
        benchmarks: Annotated[list[str] | None, typer.Option(
            "--benchmark", help="lm-eval tasks or groups (gsm8k, mmlu, arc_easy, ...) or task YAML paths, comma "
            "separated or repeated: evaluate them instead of the safety set (needs `pip install 'spt[bench]'`).",
            show_default=False, rich_help_panel=_BENCH)] = None,
        num_fewshot: Annotated[int | None, typer.Option(
            "--num-fewshot", help="Few-shot examples per prompt (default: each task's own).", show_default=False,
            rich_help_panel=_BENCH)] = None,
        apply_chat_template: Annotated[bool, typer.Option(
            "--apply-chat-template", help="Render benchmark prompts with the model's chat template.",
            rich_help_panel=_BENCH)] = False,
        gen_kwargs: Annotated[str | None, typer.Option(
            "--gen-kwargs", help="Generation settings for generate_until tasks, e.g. max_gen_toks=64,temperature=0.",
            show_default=False, rich_help_panel=_BENCH)] = None,
        engine: Annotated[str | None, typer.Option(
            "--engine", help="Generation engine: hf (transformers, default), vllm (local weights, pip install "
            "'spt[vllm]'), openai (an OpenAI-compatible endpoint; TARGET openai:MODEL implies it).",
            show_default=False, rich_help_panel=_ENG)] = None,
        base_url: Annotated[str | None, typer.Option(
            "--base-url", help="The endpoint of --engine openai, e.g. http://127.0.0.1:8000/v1 (default: the "
            "OpenAI API).", show_default=False, rich_help_panel=_ENG)] = None,
        api_key_env: Annotated[str | None, typer.Option(
            "--api-key-env", help="Environment variable holding the endpoint's key (never stored).",
            show_default=False, rich_help_panel=_ENG)] = None,
        max_connections: Annotated[int, typer.Option(
            "--max-connections", help="Requests in flight to the endpoint.", rich_help_panel=_ENG)] = 16,
        max_retries: Annotated[int, typer.Option(
            "--max-retries", help="Retries of a failed request (backoff with jitter) before it is stored as "
            "failed.", rich_help_panel=_ENG)] = 4,
        timeout: Annotated[float, typer.Option(
            "--timeout", help="Seconds per endpoint request.", rich_help_panel=_ENG)] = 120.0,
        db: DbOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Evaluate a run, checkpoint or model: refusal, over-refusal, pair score, losses, task accuracy.

        Re-running the same command resumes: only missing generations are produced. With --responses FILE
        --model-name NAME, completions generated elsewhere are imported as an external run instead (no model
        is loaded; importing the same file again writes nothing).
        """
        from spt.errors import SptError

        explicit_engine = engine
        if engine is None:
            engine = "openai" if target is not None and target.strip().startswith("openai:") else "hf"
        engine_options: dict[str, Any] = {}
        role_endpoint: dict[str, Any] = {}
        if engine != "openai" and (emulator is not None or evaluator is not None):
            # a local agent: --base-url / --api-key-env are the endpoint of openai:MODEL emulator and evaluator
            role_endpoint = {"base_url": base_url, "api_key_env": api_key_env}
            base_url = api_key_env = None
        if engine == "openai":
            engine_options = {"base_url": base_url, "api_key_env": api_key_env, "max_connections": max_connections,
                              "max_retries": max_retries, "timeout": timeout}
        else:
            given = [f for f, v in (("--base-url", base_url), ("--api-key-env", api_key_env)) if v is not None]
            given += [f for f, v, d in (("--max-connections", max_connections, 16), ("--max-retries", max_retries, 4),
                                        ("--timeout", timeout, 120.0)) if v != d]
            if given:
                raise SptError(f"{given[0]} applies to --engine openai (an endpoint); drop it or add --engine openai")
        if benchmarks or num_fewshot is not None or apply_chat_template or gen_kwargs is not None:
            if not benchmarks:
                raise SptError("--num-fewshot, --apply-chat-template and --gen-kwargs apply to --benchmark NAMES")
            others = {"--dataset": dataset is not None, "--task": task is not None, "--split": split != "test",
                      "--task-split": task_split != "test",
                      "--max-new-tokens": max_new_tokens != 64, "--temperature": temperature != 0.0,
                      "--seed": seed != 0, "--refusal-preset": refusal_preset != "spt", "--no-generate": no_generate,
                      "--responses": responses is not None, "--recompute-metrics": recompute}
            return _run_benchmark(ctx, target, benchmarks, limit, num_fewshot, apply_chat_template, gen_kwargs,
                                  batch_size, dtype, others, db, json_out, engine, engine_options, reasoning,
                                  system_prompt)
        ext_flags = {"--model-name": model_name, "--prompt-col": prompt_col, "--response-col": response_col,
                     "--label-col": label_col, "--label": label, "--category-col": category_col,
                     "--verdict-col": verdict_col, "--verdict-map": verdict_map, "--format": fmt,
                     "--dataset-name": dataset_name, "--train-seed": train_seed, "--cluster-col": cluster_col}
        gen_flags = {"--dataset": dataset is not None, "--task": task is not None, "--limit": limit is not None,
                     "--no-generate": no_generate, "--dtype": dtype is not None,
                     "--reasoning": reasoning != "none", "--split": split != "test",
                     "--system-prompt": system_prompt is not None, "--task-split": task_split != "test",
                     "--max-new-tokens": max_new_tokens != 64, "--temperature": temperature != 0.0,
                     "--batch-size": batch_size != "auto", "--seed": seed != 0}
        if recompute:
            bad = [k for k, v in {**gen_flags, "--responses": responses is not None,
                                  "--refusal-preset": refusal_preset != "spt"}.items() if v]
            if bad:
                raise SptError(f"{bad[0]} does not apply to --recompute-metrics (it reuses each evaluation's own "
                               "settings); drop it")
            from spt.eval.recompute import recompute_metrics

            with get_store(ctx, db, create=False) as store:
                done = recompute_metrics(store, [target] if target else None)
            if json_out:
                print_json({"evaluations": [d.to_dict() for d in done]})
            else:
                _render_recomputed(done)
            return
        agentic_flags = {"--emulator": emulator, "--evaluator": evaluator, "--emulator-base-url": emulator_base_url,
                         "--evaluator-base-url": evaluator_base_url,
                         "--replicates": replicates if replicates != 1 else None,
                         "--max-steps": max_steps if max_steps != 8 else None}
        if emulator is not None or evaluator is not None:
            bad = [k for k, v in {**{k: v for k, v in gen_flags.items()
                                     if k not in ("--dataset", "--limit", "--max-new-tokens")},
                                  "--responses": responses is not None, "--trajectories": trajectories is not None,
                                  "--recompute-metrics": recompute, "--refusal-preset": refusal_preset != "spt"}.items()
                   if v] + [k for k, v in ext_flags.items() if v is not None]
            if bad:
                raise SptError(f"{bad[0]} does not apply to an agentic evaluation (--emulator/--evaluator); drop it")
            if target is None:
                raise SptError("an agentic evaluation needs TARGET, the agent (a run, model reference or openai:MODEL)")
            from spt.agentic.run import AgenticConfig, evaluate_agentic

            acfg = AgenticConfig(dataset=dataset or "toolemu", emulator=emulator, evaluator=evaluator,
                                 replicates=replicates, limit=limit, max_steps=max_steps,
                                 max_new_tokens=max_new_tokens if max_new_tokens != 64 else 384,
                                 engine=explicit_engine, engine_options=engine_options,
                                 emulator_base_url=emulator_base_url, evaluator_base_url=evaluator_base_url,
                                 role_endpoint={k: v for k, v in role_endpoint.items() if v is not None})
            acfg.check()
            with get_store(ctx, db) as store, ProgressDisplay(quiet=json_out) as display:
                result = evaluate_agentic(store, target, acfg, progress=display)
            if json_out:
                print_json(result)
            else:
                console.print(_metrics_table(result["metrics"], f"agentic evaluation {result['evaluation_id']} (run "
                                             f"{result['run_id']}, agent {escape(target)})", _AGENT_CAPTION))
                console.print(f"{result['n_trajectories']} trajectories ({result['n_steps']} steps) on "
                              f"{result['dataset']}")
            return
        given = [k for k, v in agentic_flags.items() if v is not None]
        if given:
            raise SptError(f"{given[0]} applies to an agentic evaluation; add --emulator SPEC and --evaluator SPEC")
        if trajectories is not None:
            return _import_trajectories(ctx, target, trajectories, fmt, model_name, train_seed, dataset_name,
                                        {**gen_flags, "--responses": responses is not None,
                                         "--refusal-preset": refusal_preset != "spt"},
                                        {k: v for k, v in ext_flags.items()
                                         if k not in ("--model-name", "--format", "--train-seed", "--dataset-name")},
                                        db, json_out)
        if responses is not None:
            if target is not None:
                raise SptError(f"pass TARGET (evaluate a model) or --responses FILE (import completions), not both; "
                               f"got TARGET {target!r}")
            if not model_name:
                raise SptError("--responses needs --model-name NAME (the model that wrote the responses)")
            bad = [k for k, v in gen_flags.items() if v]
            if bad:
                raise SptError(f"{bad[0]} applies to generating with a model, not to --responses; drop it")
            from spt.eval.external import ExternalSpec, import_responses, parse_verdict_map, plan_import

            spec = ExternalSpec(responses=responses, model_name=model_name, prompt_col=prompt_col,
                                response_col=response_col, label_col=label_col, label=label,
                                category_col=category_col, verdict_col=verdict_col,
                                verdict_map=parse_verdict_map(verdict_map), format=fmt, dataset_name=dataset_name,
                                refusal_preset=refusal_preset, train_seed=train_seed, cluster_col=cluster_col)
            plan = plan_import(spec)  # everything validated before the store is opened
            with get_store(ctx, db) as store:
                result = import_responses(store, spec, plan)
            if json_out:
                print_json(result)
            else:
                _render_external(result)
            return
        used = [k for k, v in ext_flags.items() if v is not None]
        if used:
            raise SptError(f"{used[0]} only applies with --responses FILE (importing completions)")
        if target is None:
            raise SptError("pass TARGET (a run, checkpoint or model to evaluate) or --responses FILE --model-name NAME "
                           "(completions generated elsewhere)")
        from spt.eval.evaluate import EvaluateConfig, evaluate, parse_batch_size

        config = EvaluateConfig(
            dataset=dataset, split=split, task=task, task_split=task_split, limit=limit, max_new_tokens=max_new_tokens,
            batch_size=parse_batch_size(batch_size), temperature=temperature, seed=seed,
            refusal_preset=refusal_preset, generate=not no_generate, dtype=dtype, engine=explicit_engine,
            engine_options=engine_options, reasoning=reasoning, system_prompt=system_prompt,
        )
        config.validate()
        store = get_store(ctx, db)
        with ProgressDisplay(quiet=json_out) as display:
            result = evaluate(store, target, config, progress=display)
        if json_out:
            print_json(result.to_dict())
        else:
            _render(result)
