"""`spt evaluate TARGET`: generations, keyword refusal, alignment/task loss and task accuracy."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from spt.commands._common import DbOption, JsonOption, console, err_console, get_store, print_json

_STAGE_LABEL = {"generate": "generating", "task": "task answers", "alignment_loss": "alignment loss",
                "task_loss": "task loss"}


@contextmanager
def _progress(enabled: bool) -> Iterator[Any]:
    """A progress callback (stage, done, total, new_tokens) drawing one rich bar per stage."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if not enabled:
        yield None
        return
    prog = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=err_console, transient=False)
    tasks: dict[str, Any] = {}
    tokens: dict[str, int] = {}
    started: dict[str, float] = {}

    def update(stage: str, done: int, total: int, new_tokens: int) -> None:
        if stage not in tasks:
            tasks[stage] = prog.add_task(_STAGE_LABEL.get(stage, stage), total=total, rate="")
            tokens[stage] = 0
            started[stage] = time.perf_counter()
        tokens[stage] += new_tokens
        dt = time.perf_counter() - started[stage]
        rate = f"{tokens[stage] / dt:.0f} tok/s" if tokens[stage] and dt > 0 else ""
        prog.update(tasks[stage], completed=done, total=total, rate=rate)

    with prog:
        yield update


_ORDER = ("refusal_rate", "asr", "over_refusal_rate", "pair_score", "alignment_loss", "alignment_loss_harmful",
          "alignment_loss_benign", "task_loss", "task_accuracy")


def _fmt(v: Any) -> str:
    return "" if v is None else f"{v:.3f}"


def _render(result: dict) -> None:
    metrics = result["metrics"]
    order = list(dict.fromkeys([*_ORDER, *(m["name"] for m in metrics)]))
    cats = sorted({m["category"] for m in metrics}, key=lambda c: (c != "all", c))
    table = Table(title=f"evaluation {result['evaluation_id']}  (run {result['run_id']})",
                  caption=f"refusal preset: {result['refusal_preset']}; 95% bootstrap CIs")
    for col, just in (("category", "left"), ("metric", "left"), ("value", "right"), ("95% CI", "right"),
                      ("n", "right"), ("unscored", "right")):
        table.add_column(col, justify=just, no_wrap=col != "category")  # type: ignore[arg-type]
    for c in cats:
        rows = sorted((m for m in metrics if m["category"] == c), key=lambda m: order.index(m["name"]))
        for k, m in enumerate(rows):
            table.add_row(escape(c) if k == 0 else "", m["name"], _fmt(m["value"]),
                          f"[{_fmt(m['ci_low'])}, {_fmt(m['ci_high'])}]" if m["value"] is not None else "",
                          str(m["n"]), str(m["n_unscored"]), end_section=k == len(rows) - 1)
    if console.is_terminal:
        console.print(table)
    else:  # piped: do not squeeze the table into 80 columns
        from rich.console import Console

        Console(width=max(console.width, 160), soft_wrap=True).print(table)
    tps = result.get("tokens_per_s")
    console.print(
        f"dataset {escape(result['dataset'])} ({result['split']}, {result['n_items']} items)"
        + (f", task {escape(result['task'])} ({result['n_task_items']} items)" if result.get("task") else "")
        + f", preset {result['refusal_preset']}: generated {result['n_generated']}, reused {result['n_reused']}"
        + (f", copied {result['n_copied']}" if result.get("n_copied") else "")
        + (f", {tps:.1f} new tokens/s" if tps else ""),
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def _cmd(
        ctx: typer.Context,
        target: Annotated[str, typer.Argument(help="Run id (or unique prefix): its final checkpoint; a checkpoint "
                                              "id; or a model reference (tiny-random, smollm2-135m, a directory).")],
        dataset: Annotated[str | None, typer.Option("--dataset", help="Safety dataset name or id (default: HarmOR).",
                                                    show_default=False)] = None,
        split: Annotated[str, typer.Option("--split", help="Split of the safety dataset.")] = "test",
        task: Annotated[str | None, typer.Option(
            "--task", help="Task for task_loss/task_accuracy (default: the run's task; 'none' to skip).",
            show_default=False)] = None,
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
        db: DbOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Evaluate a run, checkpoint or model: refusal, over-refusal, pair score, losses, task accuracy.

        Re-running the same command resumes: only missing generations are produced.
        """
        from spt.eval.evaluate import EvaluateConfig, evaluate, parse_batch_size

        config = EvaluateConfig(
            dataset=dataset, split=split, task=task, limit=limit, max_new_tokens=max_new_tokens,
            batch_size=parse_batch_size(batch_size), temperature=temperature, seed=seed,
            refusal_preset=refusal_preset, generate=not no_generate, dtype=dtype,
        )
        config.validate()
        store = get_store(ctx, db)
        with _progress(err_console.is_terminal and not json_out) as prog:
            result = evaluate(store, target, config, progress=prog)
        if json_out:
            print_json(result)
        else:
            _render(result)
