"""`spt judge`: judge stored generations with keyword, OpenAI-compatible or local judges."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from spt.commands._common import (
    DbOption,
    JsonOption,
    ProgressDisplay,
    add_row,
    console,
    err_console,
    get_store,
    num,
    print_json,
    show,
)
from spt.errors import SptError

if TYPE_CHECKING:
    from spt.judge import JudgeResult




def _render_summary(result: JudgeResult) -> None:
    table = Table("judge", "rubric", "judged", "cached", "scored", "unscored", "calls", "tokens", "cost $",
                  title=f"judged {result.generations} generations of {len(result.evaluations)} evaluation(s)")
    for j in result.judges:
        unscored = ", ".join(f"{k} {v}" for k, v in sorted(j.unscored.items())) or "0"
        add_row(table, j.name, j.rubric, str(j.judged + j.fixed), str(j.cached), str(j.scored), unscored,
                str(j.calls), f"{j.tokens:,}", f"{j.cost_usd:.4f}" if j.priced else "-")
    show(table)
    metrics = Table("judge", "evaluation", "metric", "value", "95% CI", "n", "unscored", title="judge metrics (all)")
    for j in result.judges:
        for m in j.metrics:
            add_row(metrics, j.name, m.evaluation_id, m.name, _f(m.value), f"[{_f(m.ci_low)}, {_f(m.ci_high)}]",
                    str(m.n), str(m.n_unscored))
    if metrics.row_count:
        show(metrics)
    cached = sum(j.cached for j in result.judges)
    if cached:
        console.print(f"{cached} judgments cached (no calls); --rejudge makes new ones, --only-unscored retries "
                      "the unscored, --fix re-parses stored replies", highlight=False)
    fixed = sum(j.fixed for j in result.judges)
    if fixed:
        console.print(f"{fixed} stored replies re-parsed to a different verdict (old judgments kept as history)",
                      highlight=False)
    dropped = sum(j.dropped for j in result.judges)
    if dropped:
        console.print(f"{dropped} judgments dropped: another process stored a judgment of the same generations "
                      "first (one current judgment per judge and generation)", highlight=False)
    unpriced = [j.model or j.name for j in result.judges if not j.priced]
    if unpriced:
        console.print(escape(f"no price for {', '.join(unpriced)}: tokens are stored; pass --price-table for a "
                             "cost"), highlight=False)
    if result.stopped == "cost_limit":
        left = sum(j.not_judged for j in result.judges)
        err_console.print(f"[yellow]cost limit reached[/yellow] (${result.cost_usd:.4f}): {left} generations "
                          "not judged; re-run with a higher --cost-limit to continue", highlight=False)


def _render_agreement(res: dict) -> None:
    table = Table("judge A", "judge B", "n", "excluded", "agreement", "kappa", "label agr.", "label kappa",
                  title="pairwise agreement on the refusal verdict")
    for p in res["pairs"]:
        add_row(table, p["a_name"], p["b_name"], str(p["n"]), str(p["n_excluded"]), _f(p["percent"]),
                _f(p["kappa"]), _f(p.get("label_percent")), _f(p.get("label_kappa")))
    show(table)
    if not res["pairs"]:
        console.print("fewer than two judges have judged these evaluations; pass several --judge options first")


_f = partial(num, spec=".3f", missing="-")  # the judge tables' numbers


def _ci(lo: float | None, hi: float | None) -> str:
    return "" if lo is None or hi is None else f"[{lo:.3f}, {hi:.3f}]"


def _render_human(res: dict) -> None:
    """Accuracy, kappa and confusion of every judge and keyword preset against the human verdicts."""
    for h in res["human_judges"]:
        rows = [r for r in res["rows"] if r["human_id"] == h["id"]]
        if not rows:
            continue
        table = Table("against", "n", "accuracy [95% CI]", "kappa [95% CI]", "both refuse", "human refuses only",
                      "judge refuses only", "neither", "degenerate", "unscored",
                      title=f"agreement with {h['name']} ({h['n_verdicts']} verdicts; refused = full or partial "
                      "refusal; all categories)",
                      caption="accuracy: exact Clopper-Pearson; kappa: bootstrap over sensitive words (else items), "
                      "widened to the exact accuracy bounds; degenerate / unscored replies are left out, not read "
                      "as answers")
        for r in rows:
            a = r["categories"][0]
            add_row(table, r["candidate"], str(a["n"]), f"{_f(a['accuracy'])} {_ci(*a['accuracy_ci'])}",
                    f"{_f(a['kappa'])} {_ci(*a['kappa_ci'])}", str(a["tp"]), str(a["fn"]), str(a["fp"]),
                    str(a["tn"]), str(a["n_degenerate"]), str(a["n_unscored"] + r["n_unjudged"]))
        show(table)
        conf = Table("against", "human", "refusal", "compliance", "degenerate", "unscored",
                     title=f"confusion: {h['name']} class x verdict (all categories)")
        for r in rows:
            c = r["categories"][0]["confusion"]
            for k, hc in enumerate(("full_refusal", "partial_refusal", "full_compliance")):
                add_row(conf, r["candidate"] if k == 0 else "", hc, *(str(c[hc][p]) for p in
                                                                      ("refusal", "compliance", "degenerate",
                                                                       "unscored")))
            conf.add_section()
        show(conf)
        cats = Table("against", "category", "n", "accuracy [95% CI]", "kappa [95% CI]", "tp/fn/fp/tn", "degenerate",
                     title=f"agreement with {h['name']} per category")
        for r in rows:
            for k, a in enumerate(r["categories"][1:]):
                add_row(cats, r["candidate"] if k == 0 else "", a["category"], str(a["n"]),
                        f"{_f(a['accuracy'])} {_ci(*a['accuracy_ci'])}", f"{_f(a['kappa'])} {_ci(*a['kappa_ci'])}",
                        f"{a['tp']}/{a['fn']}/{a['fp']}/{a['tn']}", str(a["n_degenerate"]))
            cats.add_section()
        show(cats)


def register(app: typer.Typer) -> None:
    @app.command("judge")
    def judge_cmd(
        ctx: typer.Context,
        evaluation_ids: Annotated[list[str] | None, typer.Argument(
            help="Evaluations to judge.", show_default=False, metavar="EVAL_ID")] = None,
        run: Annotated[list[str] | None, typer.Option(
            "--run", help="Judge every evaluation of this run (repeatable).", show_default=False)] = None,
        all_pending: Annotated[bool, typer.Option(
            "--all-pending", help="Judge every finished evaluation with unjudged generations.")] = False,
        judge: Annotated[list[str] | None, typer.Option(
            "--judge", help="BACKEND[:ARG]: keyword[:PRESET] | keyword-any:PRESET+PRESET | openai:MODEL | hf:PATH "
            "(repeatable; default keyword).",
            show_default=False)] = None,
        rubric: Annotated[str, typer.Option(
            help="refusal | harmfulness | xstest | strongreject (LLM judges; keyword judges refusal).")] = "refusal",
        base_url: Annotated[str | None, typer.Option(
            help="OpenAI-compatible endpoint (vLLM, TGI, transformers serve, ...); default the OpenAI API.",
            show_default=False)] = None,
        api_key_env: Annotated[str | None, typer.Option(
            help="Environment variable holding the API key (default OPENAI_API_KEY, only for the OpenAI API; "
            "a custom --base-url gets no key unless this is given).", show_default=False)] = None,
        max_connections: Annotated[int, typer.Option(help="Concurrent requests.")] = 16,
        max_retries: Annotated[int, typer.Option(
            help="Retries per request on 429, 5xx, timeouts and connection errors.")] = 4,
        timeout: Annotated[float, typer.Option(help="Seconds per request.")] = 60.0,
        only_unscored: Annotated[bool, typer.Option(
            "--only-unscored", help="Re-judge only generations whose current judgment is unscored.")] = False,
        rejudge: Annotated[bool, typer.Option(
            "--rejudge", help="Judge again; the old judgments stay as history.")] = False,
        fix: Annotated[bool, typer.Option(
            "--fix", help="Re-parse stored raw replies with the current parser, without calls.")] = False,
        price_table: Annotated[Path | None, typer.Option(
            help="YAML of model: {input: $/1M tokens, output: $/1M tokens}.", show_default=False)] = None,
        cost_limit: Annotated[float | None, typer.Option(
            help="Stop launching calls once this many USD are spent (needs --price-table).",
            show_default=False)] = None,
        on: Annotated[str, typer.Option(
            "--on", help="What to judge: response (the answer) | thinking (a reasoning model's thinking, kept by "
            "`spt evaluate --reasoning`; its metrics are named thinking_*).")] = "response",
        agreement: Annotated[bool, typer.Option(
            "--agreement",
            help="Report agreement, no calls: every judge and keyword preset against the human verdicts "
            "(accuracy, Cohen's kappa with intervals, confusion matrix, per category) and judges pairwise. "
            "Without EVAL_ID: every evaluation with human verdicts.")] = False,
        db: DbOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Judge generations (scored, or unscored with a reason), cached, with metrics per judge."""
        from spt.judge import (
            JudgeOptions,
            JudgeRunError,
            judge_evaluations,
            parse_judge_spec,
            resolve_evaluations,
        )
        from spt.judge import agreement as agreement_fn

        if not evaluation_ids and not run and not all_pending and not agreement:
            raise SptError("nothing to judge: pass EVAL_ID, --run RUN_ID or --all-pending")
        if max_connections < 1:
            raise SptError(f"--max-connections must be at least 1 (got {max_connections})")
        from spt.judge.rubrics import get_rubric

        get_rubric(rubric)  # an unknown rubric is an error even for judges that do not read one
        specs = [parse_judge_spec(j, rubric, on) for j in (judge or ["keyword"])] if (judge or not agreement) else []
        if price_table is not None:  # a bad table is an error even when nothing is pending
            from spt.judge.prices import load_price_table

            load_price_table(price_table)
        if base_url is not None:  # a malformed URL is an error even when nothing is pending
            from spt.engines.openai import check_base_url

            check_base_url(base_url)
        if api_key_env is not None:  # a variable that is not set is an error even when nothing is pending
            from spt.engines.openai import api_key

            api_key({"api_key_env": api_key_env})
        store = get_store(ctx, db)
        try:
            ids = resolve_evaluations(store, evaluation_ids, run, all_pending,
                                      judge_ids=[s.id for s in specs] if specs else None, on=on)
            if agreement:
                from spt.judge.human import human_agreement, human_evaluations

                if not ids:
                    if evaluation_ids or run or all_pending:
                        raise SptError("no evaluations to compare; pass EVAL_ID or --run RUN_ID")
                    ids = human_evaluations(store)
                    if not ids:
                        raise SptError("--agreement without EVAL_ID compares with human verdicts, and no evaluation "
                                       "has any; pass EVAL_ID or --run RUN_ID, or import verdicts with `spt evaluate "
                                       "--responses FILE --model-name NAME --verdict-col COL`")
                res = agreement_fn(store, ids, [s.id for s in specs] if judge else None)
                human = None
                if set(ids) & set(human_evaluations(store)):
                    human = human_agreement(store, ids, judge_ids=[s.id for s in specs] if judge else None)
                res["human"] = human
                if json_out:
                    print_json(res)
                    return
                if human is not None:
                    _render_human(human)
                if res["pairs"] or human is None:
                    _render_agreement(res)
                return
            if not ids:
                if json_out:
                    print_json({"evaluations": [], "judges": [], "stopped": None})
                else:
                    console.print("nothing pending: every finished evaluation is judged by these judges")
                return
            options = JudgeOptions(
                judges=judge or ["keyword"], rubric=rubric, base_url=base_url, api_key_env=api_key_env,
                max_connections=max_connections, max_retries=max_retries, timeout=timeout,
                only_unscored=only_unscored, rejudge=rejudge, fix=fix, price_table=price_table, cost_limit=cost_limit,
                on=on,
            )
            try:
                with ProgressDisplay(quiet=json_out) as display:
                    result = judge_evaluations(store, ids, options, progress=display)
            except JudgeRunError as e:
                if json_out:
                    print_json(e.result.to_dict())
                raise
        finally:
            store.close()
        if json_out:
            print_json(result.to_dict())
        else:
            _render_summary(result)
