"""`spt build-data`: render the HarmOR templates into a paired, split dataset, store it, optionally export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from spt.commands._common import DbOption, JsonOption, console, get_store, print_json


def default_name(source: dict, templates: Path | None) -> str:
    """`harmor` for the default build; otherwise `harmor:` plus what differs (so `harmor` stays the full set)."""
    from spt.data.harmor import DEFAULT_TEST_FRACTION, category_summary

    parts = []
    if source["categories"] != [r["category"] for r in category_summary(templates)]:
        parts.append("+".join(source["categories"]))
    if source["per_category"] is not None:
        parts.append(f"n{source['per_category']}")
    if source["seed"] != 0:
        parts.append(f"seed{source['seed']}")
    if source["test_fraction"] != DEFAULT_TEST_FRACTION:
        parts.append(f"test{source['test_fraction']:g}")
    if templates is not None:
        parts.append("custom")
    return "harmor" + (":" + ",".join(parts) if parts else "")


def register(app: typer.Typer) -> None:
    @app.command("build-data")
    def build_data_cmd(
        ctx: typer.Context,
        category: Annotated[list[str] | None, typer.Option(
            "--category", help="Only this category (repeatable; see --list-categories).", show_default=False)] = None,
        per_category: Annotated[int | None, typer.Option(
            "--per-category", help="At most N harmful/benign pairs per category (sampled with the seed).",
            show_default=False)] = None,
        seed: Annotated[int, typer.Option("--seed", help="Seed for pairing, splits, refusal choice.")] = 0,
        name: Annotated[str | None, typer.Option(
            "--name", help="Dataset name (default: harmor, or harmor:<options> for non-default builds).",
            show_default=False)] = None,
        test_fraction: Annotated[float, typer.Option(
            "--test-fraction", help="Share of templates (per category and side) held out for test.")] = 0.3,
        out: Annotated[Path | None, typer.Option(
            "--out", help="Also export to FILE.jsonl / FILE.csv / FILE.parquet (or a new folder: HF dataset).",
            show_default=False)] = None,
        list_categories: Annotated[bool, typer.Option(
            "--list-categories", help="Show categories with word and template counts, then exit.")] = False,
        templates: Annotated[Path | None, typer.Option(
            "--templates", help="Template folder (default: the packaged harmor_templates).",
            show_default=False)] = None,
        db: DbOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Build HarmOR: risky prompts paired with safe look-alikes, split by template, stored and exported."""
        from spt.data.harmor import build_harmor, category_summary, check_params, harmor_source
        from spt.data.io import check_out_path, export_items
        from spt.data.items import store_items

        if list_categories:
            rows = category_summary(templates)
            if json_out:
                print_json(rows)
                return
            table = Table("category", "words", "risky", "safe", "refusals", "pairs", "contrast types")
            for r in rows:
                table.add_row(r["category"], str(r["words"]), str(r["risky_templates"]), str(r["safe_templates"]),
                              str(r["refusals"]), str(r["pairs"]), ", ".join(r["contrast_types"]))
            console.print(table)
            return

        check_params(per_category, test_fraction)
        if out is not None:
            check_out_path(out)
        items = build_harmor(category, per_category, seed, test_fraction, templates)
        source = harmor_source(category, per_category, seed, test_fraction, templates)
        if name is None:
            name = default_name(source, templates)
        with get_store(ctx, db) as store:
            did = store_items(store, name, "harmor", items, source)
        if out is not None:
            export_items(items, out)

        counts: dict[str, dict[str, int]] = {}
        for it in items:
            c = counts.setdefault(it["category"], {"harmful": 0, "benign": 0, "train": 0, "test": 0})
            c[it["label"]] += 1
            c[it["split"]] += 1
        summary = {"dataset_id": did, "name": name, "n_items": len(items), "seed": seed,
                   "test_fraction": test_fraction, "per_category": per_category,
                   "out": str(out) if out is not None else None, "categories": counts}
        if json_out:
            print_json(summary)
            return
        table = Table("category", "harmful", "benign", "train", "test")
        for cat, c in counts.items():
            table.add_row(cat, str(c["harmful"]), str(c["benign"]), str(c["train"]), str(c["test"]))
        console.print(table)
        console.print(f"dataset [bold]{name}[/bold] {did} ({len(items)} items)")
        if out is not None:
            console.print(f"exported to {out}")
