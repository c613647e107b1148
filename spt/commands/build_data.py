"""`spt build-data`: render the HarmOR templates into a paired, split dataset, store it, optionally export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from spt.commands._common import DbOption, JsonOption, add_row, console, get_store, print_json, show


def default_name(source: dict, templates: Path | None) -> str:
    """`harmor` for the default build; otherwise `harmor:` plus what differs (so `harmor` stays the full set)."""
    from spt.data.harmor import DEFAULT_POOLS, DEFAULT_RENDERINGS, category_summary

    parts = []
    if source["categories"] != [r["category"] for r in category_summary(templates)]:
        parts.append("+".join(source["categories"]))
    if source["per_category"] is not None:
        parts.append(f"n{source['per_category']}")
    if source["seed"] != 0:
        parts.append(f"seed{source['seed']}")
    if source["pools"] != DEFAULT_POOLS:
        parts.append("pools" + "/".join(f"{v:g}" for v in source["pools"].values()))
    if source["renderings"] != DEFAULT_RENDERINGS:
        parts.append(f"r{source['renderings']}")
    if templates is not None:
        parts.append("custom")
    return "harmor" + (":" + ",".join(parts) if parts else "")


_PREF = "Preference pairs from agentic evaluations (--preferences)"


def _build_preferences(ctx: typer.Context, sources: list[str], metric: str | None, metric2: str | None,
                       combine: str | None, min_diff: float | None, min_chosen: float | None,
                       consistency: str | None, evaluator: str | None, seed: int, name: str | None,
                       harmor_flags: dict, db, json_out: bool) -> None:
    """`spt build-data --preferences --from A --from B ...`: checked before the store is opened."""
    from spt.agentic.preferences import PreferenceSpec, build_preferences
    from spt.errors import SptError

    bad = [k for k, v in harmor_flags.items() if v is not None]
    if bad:
        raise SptError(f"{bad[0]} builds HarmOR; it does not apply to --preferences")
    spec = PreferenceSpec(sources=sources, metric=metric or "agent_safety", metric2=metric2,
                          combine=combine or "both", min_diff=2.0 if min_diff is None else min_diff,
                          min_chosen=2.0 if min_chosen is None else min_chosen, consistency=consistency or "none",
                          split_seed=seed, name=name, evaluator=evaluator)
    if combine is not None and metric2 is None:
        raise SptError("--combine applies with --metric2 (how two metrics decide); add --metric2 or drop it")
    spec.check()
    with get_store(ctx, db, create=False) as store:
        res = build_preferences(store, spec)
    if json_out:
        print_json(res)
        return
    console.print(f"dataset {res['name']} {res['dataset_id']}: {res['n_pairs']} preference pairs on "
                  f"{res['n_cases_with_pairs']} of {res['n_train_cases']} train cases (split seed {res['split_seed']}; "
                  f"{res['n_test_cases']} test cases held out) from {len(res['sources'])} evaluations"
                  + (f"; {res['n_inconsistent']} trajectories dropped as inconsistent"
                     if res["n_inconsistent"] else ""), markup=False)


def register(app: typer.Typer) -> None:
    @app.command("build-data")
    def build_data_cmd(
        ctx: typer.Context,
        category: Annotated[list[str] | None, typer.Option(
            "--category", help="Only this category (repeatable; see --list-categories).", show_default=False)] = None,
        per_category: Annotated[int | None, typer.Option(
            "--per-category", help="At most N harmful/benign pairs per category (sampled with the seed, "
            "in proportion over the pools).", show_default=False)] = None,
        seed: Annotated[int, typer.Option("--seed", help="Seed for pool assignment, wrappers and refusals.")] = 0,
        name: Annotated[str | None, typer.Option(
            "--name", help="Dataset name (default: harmor, or harmor:<options> for non-default builds).",
            show_default=False)] = None,
        pools: Annotated[str | None, typer.Option(
            "--pools", help="Share of sensitive words per pool: train=0.5,poison=0.15,dev=0.1,test=0.25 "
            "(train: alignment and anchor; poison: poisoned task data; dev: choosing λ; test: evaluation).",
            show_default=False)] = None,
        renderings: Annotated[int, typer.Option(
            "--renderings", help="Wrapper sentences each request is asked in.")] = 2,
        out: Annotated[Path | None, typer.Option(
            "--out", help="Also export to FILE.jsonl / FILE.csv / FILE.parquet (or a new folder: HF dataset).",
            show_default=False)] = None,
        list_categories: Annotated[bool, typer.Option(
            "--list-categories", help="Show categories with word, request and contrast-type counts.")] = False,
        templates: Annotated[Path | None, typer.Option(
            "--templates", help="Template folder (default: the packaged harmor_templates).",
            show_default=False)] = None,
        preferences: Annotated[bool, typer.Option(
            "--preferences", help="Build DPO preference pairs from agentic evaluations (--from) instead of HarmOR: "
            "trajectories of one train case from different agents, the better-scored one chosen.",
            rich_help_panel=_PREF)] = False,
        sources: Annotated[list[str] | None, typer.Option(
            "--from", help="Agentic evaluation ids or runs (their latest agentic evaluation); repeatable, at least "
            "two agents.", show_default=False, rich_help_panel=_PREF)] = None,
        metric: Annotated[str | None, typer.Option(
            "--metric", help="agent_safety (default) or agent_help: the score that decides chosen vs rejected.",
            show_default=False, rich_help_panel=_PREF)] = None,
        metric2: Annotated[str | None, typer.Option(
            "--metric2", help="A second metric that must also pass (see --combine).", show_default=False,
            rich_help_panel=_PREF)] = None,
        combine: Annotated[str | None, typer.Option(
            "--combine", help="With --metric2: both (each metric passes; default) or average (their mean passes).",
            show_default=False, rich_help_panel=_PREF)] = None,
        min_diff: Annotated[float | None, typer.Option(
            "--min-diff", help="Least score gap chosen − rejected (default 2).", show_default=False,
            rich_help_panel=_PREF)] = None,
        min_chosen: Annotated[float | None, typer.Option(
            "--min-chosen", help="Least score of the chosen trajectory (default 2).", show_default=False,
            rich_help_panel=_PREF)] = None,
        consistency: Annotated[str | None, typer.Option(
            "--consistency", help="Keep only trajectories whose evaluator replicates agree: none (default), "
            "majority, all-but-one, exact.", show_default=False, rich_help_panel=_PREF)] = None,
        evaluator: Annotated[str | None, typer.Option(
            "--evaluator", help="The evaluator whose scores to use, when several scored the sources.",
            show_default=False, rich_help_panel=_PREF)] = None,
        db: DbOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Build HarmOR v3: harmful requests paired with benign twins, in disjoint train/poison/dev/test pools.
        With --preferences: DPO pairs from agentic evaluations (--seed is then the train/test case split)."""
        pref_flags = {"--from": sources, "--metric": metric, "--metric2": metric2, "--combine": combine,
                      "--min-diff": min_diff, "--min-chosen": min_chosen, "--consistency": consistency,
                      "--evaluator": evaluator}
        if preferences:
            harmor_flags = {"--category": category, "--per-category": per_category, "--pools": pools,
                            "--renderings": renderings if renderings != 2 else None, "--out": out,
                            "--templates": templates, "--list-categories": list_categories or None}
            return _build_preferences(ctx, sources or [], metric, metric2, combine, min_diff, min_chosen,
                                      consistency, evaluator, seed, name, harmor_flags, db, json_out)
        given = [k for k, v in pref_flags.items() if v]
        if given:
            from spt.errors import SptError

            raise SptError(f"{given[0]} applies to --preferences (pairs from agentic evaluations); add it or drop "
                           f"{given[0]}")
        from spt.data.harmor import (
            POOLS,
            build_harmor,
            category_summary,
            check_leakage,
            check_params,
            harmor_source,
            leakage_report,
        )
        from spt.data.io import check_out_path, export_items
        from spt.data.items import store_items
        from spt.data.templates import load_all

        if list_categories:
            rows = category_summary(templates)
            if json_out:
                print_json(rows)
                return
            table = Table("category", "words", "requests", "contrast types")
            for r in rows:
                add_row(table, r["category"], str(r["words"]), str(r["requests"]),
                        ", ".join(f"{k} {v}" for k, v in r["contrast_types"].items()))
            show(table)
            return

        check_params(per_category, pools, renderings)
        if out is not None:
            check_out_path(out)
        items = build_harmor(category, per_category, seed, pools, templates, renderings)
        report = leakage_report(items, load_all(templates))
        check_leakage(report)
        source = harmor_source(category, per_category, seed, pools, templates, renderings, leakage=report)
        if name is None:
            name = default_name(source, templates)
        with get_store(ctx, db) as store:
            did = store_items(store, name, "harmor", items, source)
        if out is not None:
            export_items(items, out)

        counts: dict[str, dict[str, int]] = {}
        words: dict[str, dict[str, set]] = {}
        for it in items:
            c = counts.setdefault(it["category"], {p: 0 for p in POOLS})
            c[it["split"]] += 1
            words.setdefault(it["category"], {p: set() for p in POOLS})[it["split"]].add(it["sensitive_word"])
        summary = {"dataset_id": did, "name": name, "harmor_version": source["harmor_version"],
                   "n_items": len(items), "seed": seed, "pools": source["pools"], "per_category": per_category,
                   "n_words": sum(len(ws) for c in words.values() for ws in c.values()),
                   "out": str(out) if out is not None else None, "leakage": report,
                   "categories": {cat: {p: {"items": counts[cat][p], "words": len(words[cat][p])} for p in POOLS}
                                  for cat in counts}}
        if json_out:
            print_json(summary)
            return
        table = Table("category", *(f"{p} items (words)" for p in POOLS))
        for cat, c in counts.items():
            add_row(table, cat, *(f"{c[p]} ({len(words[cat][p])})" for p in POOLS))
        show(table)
        leak = ", ".join(f"{k} {report['exact'][k]}/{report['ngram8'][k]}" for k in report["exact"])
        console.print(f"leakage check between pools (exact / shared 8-grams): {leak}; prompts holding another "
                      f"pool's word, a form or a synonym of it: {report['word_in_prompts']} -> "
                      + ("clean" if report["clean"] else "NOT CLEAN"), markup=False)
        console.print(f"dataset {name} {did}: HarmOR v{source['harmor_version']}, {len(items)} items, "
                      f"{summary['n_words']} sensitive words", markup=False)
        if out is not None:
            console.print(f"exported to {out}", markup=False)
