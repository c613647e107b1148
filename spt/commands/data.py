"""`spt data import|list|show|export`: datasets in the store (HarmOR builds, tasks, poison, imports)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from spt.commands._common import DbOption, JsonOption, console, get_store, print_json, show
from spt.data.tasks import BUILTIN_TASKS

_BUILTINS = (*BUILTIN_TASKS, "builtin:harmor-comply", "harmor")


def _resolve(store, name: str):
    """Resolve a dataset; built-in names are built and stored on first use."""
    from spt.data import ensure_harmor, ensure_poison_dataset, ensure_task_dataset, resolve_dataset
    from spt.errors import SptError

    try:
        return resolve_dataset(store, name)
    except SptError:
        if name in BUILTIN_TASKS:
            ensure_task_dataset(store, name)
        elif name == "builtin:harmor-comply":
            ensure_poison_dataset(store, name)
        elif name == "harmor":
            ensure_harmor(store)
        else:
            raise
        return resolve_dataset(store, name)


def _split_counts(store, dataset_id: str) -> dict[str, int]:
    from sqlalchemy import func
    from sqlmodel import select

    from spt.store.models import DatasetItem

    with store.session() as s:
        rows = s.exec(select(DatasetItem.split, func.count()).where(DatasetItem.dataset_id == dataset_id)
                      .group_by(DatasetItem.split)).all()
    return {sp: n for sp, n in sorted(rows)}


def _import_format(ctx, file: Path, fmt: str, name: str | None, label: str | None, kind: str | None, db,
                   json_out: bool, columns: dict[str, str | None]) -> None:
    """`spt data import FILE --format NAME`: validated fully before the store is opened."""
    from spt.data.formats import default_name, format_items, get_format, import_format
    from spt.data.io import read_rows
    from spt.errors import SptError

    f = get_format(fmt)
    if kind is not None:
        raise SptError(f"--kind does not apply with --format {f.name}: the format decides the labels")
    used = [k for k, v in columns.items() if v is not None]
    if used:
        raise SptError(f"{used[0]} does not apply with --format {f.name}: the format maps the columns")
    rows, _ = read_rows(file)
    items = format_items(rows, f, source_name=Path(file).name, path=file, label=label)
    name = name if name is not None else default_name(f, file, label)
    with get_store(ctx, db) as store:
        did = import_format(store, file, f, name, label)
        counts = _split_counts(store, did)
    labels: dict[str, int] = {}
    for it in items:
        labels[it["label"]] = labels.get(it["label"], 0) + 1
    n = sum(counts.values())
    if json_out:
        print_json({"dataset_id": did, "name": name, "format": f.name, "n_items": n, "splits": counts,
                    "labels": labels})
    else:
        console.print(f"imported {n} items as [bold]{name}[/bold] ({f.name}: "
                      + ", ".join(f"{v} {k}" for k, v in sorted(labels.items())) + f") {did}  splits: {counts}")


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Datasets: import, list, show, export.", no_args_is_help=True)
    app.add_typer(data_app, name="data")

    @data_app.command("import")
    def import_cmd(
        ctx: typer.Context,
        file: Annotated[Path, typer.Argument(help="JSONL/JSON/CSV/parquet file or HF dataset folder.")],
        kind: Annotated[str | None, typer.Option("--kind", help="task | harmful | benign | poison (not with "
                                                 "--format).", show_default=False)] = None,
        name: Annotated[str | None, typer.Option("--name", help="Dataset name in the store (with --format default: "
                                                 "the format, or the file's stem for orbench).",
                                                 show_default=False)] = None,
        fmt: Annotated[str | None, typer.Option(
            "--format", help="A public set's own layout: xstest, advbench, harmbench, strongreject, orbench, toolemu, "
            "s1k, limo, direct-refusal, safechain "
            "(maps its columns, labels and categories).", show_default=False)] = None,
        label: Annotated[str | None, typer.Option(
            "--label", help="orbench only: harmful or benign (default from the file name: toxic -> harmful, "
            "hard/80k -> benign).", show_default=False)] = None,
        prompt_col: Annotated[str | None, typer.Option("--prompt-col", show_default=False,
                                                       help="Prompt column (default: prompt).")] = None,
        response_col: Annotated[str | None, typer.Option("--response-col", show_default=False,
                                                         help="Response column (default: response).")] = None,
        messages_col: Annotated[str | None, typer.Option("--messages-col", show_default=False,
                                                         help="Chat messages column (list of role/content).")] = None,
        category_col: Annotated[str | None, typer.Option("--category-col", show_default=False,
                                                         help="Category column (default: category).")] = None,
        label_col: Annotated[str | None, typer.Option("--label-col", show_default=False,
                                                      help="Per-row harmful/benign label (safe/unsafe, 0/1).")] = None,
        pair_col: Annotated[str | None, typer.Option("--pair-col", show_default=False,
                                                     help="Pair id column (default: pair_id).")] = None,
        split_col: Annotated[str | None, typer.Option("--split-col", show_default=False,
                                                      help="Split column (default: split).")] = None,
        answer_col: Annotated[str | None, typer.Option("--answer-col", show_default=False,
                                                       help="Exact-match answer column for tasks.")] = None,
        db: DbOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Import prompts (harmful/benign), task data or poison from a file, validated before storing."""
        from spt.data.io import IMPORT_KINDS, import_dataset, read_rows, rows_to_items
        from spt.errors import SptError

        if fmt is not None:
            _import_format(ctx, file, fmt, name, label, kind, db, json_out,
                           {"--prompt-col": prompt_col, "--response-col": response_col, "--messages-col": messages_col,
                            "--category-col": category_col, "--label-col": label_col, "--pair-col": pair_col,
                            "--split-col": split_col, "--answer-col": answer_col})
            return
        if label is not None:
            raise SptError("--label applies with --format orbench; for other files use --kind and --label-col")
        if kind is None or name is None:
            from spt.data.formats import FORMATS

            raise SptError(f"pass --kind ({' | '.join(IMPORT_KINDS)}) and --name, or --format for a public set's "
                           f"layout ({', '.join(FORMATS)})")
        if kind not in IMPORT_KINDS:
            raise SptError(f"unknown --kind {kind!r}; use one of {', '.join(IMPORT_KINDS)}")
        cols = dict(prompt_col=prompt_col, response_col=response_col, messages_col=messages_col,
                    category_col=category_col, label_col=label_col, pair_col=pair_col, split_col=split_col,
                    answer_col=answer_col)
        # Read and validate fully before the store is even opened.
        rows, _fmt = read_rows(file)
        rows_to_items(rows, kind, source_name=Path(file).name, **cols)
        with get_store(ctx, db) as store:
            did = import_dataset(store, file, kind, name, **cols)
            counts = _split_counts(store, did)
        n = sum(counts.values())
        if json_out:
            print_json({"dataset_id": did, "name": name, "kind": kind, "n_items": n, "splits": counts})
        else:
            console.print(f"imported {n} items as [bold]{name}[/bold] ({kind}) {did}  splits: {counts}")

    @data_app.command("list")
    def list_cmd(ctx: typer.Context, db: DbOption = None, json_out: JsonOption = False) -> None:
        """Datasets in the store, newest first."""
        from sqlmodel import col, select

        from spt.store.models import Dataset

        with get_store(ctx, db) as store:
            with store.session() as s:
                ds = s.exec(select(Dataset).order_by(col(Dataset.created_at).desc())).all()
            rows = [{"id": d.id, "name": d.name, "kind": d.kind, "n_items": d.n_items,
                     "splits": (d.meta or {}).get("splits") or _split_counts(store, d.id),
                     "created_at": d.created_at} for d in ds]
        if json_out:
            print_json(rows)
            return
        table = Table("name", "kind", "items", "splits", "id", "created")
        for r in rows:
            table.add_row(r["name"], r["kind"], str(r["n_items"]),
                          " ".join(f"{k}={v}" for k, v in r["splits"].items()), r["id"][:19], r["created_at"][:19])
        show(table)
        if not rows:
            console.print("no datasets yet: try `spt build-data` or `spt data import`")

    @data_app.command("show")
    def show_cmd(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(help="Dataset name, id or id prefix.")],
        n: Annotated[int, typer.Option("-n", "--n", help="Example items to show.")] = 5,
        db: DbOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """A dataset's source, splits, categories, labels and a few items."""
        from spt.data import load_items

        with get_store(ctx, db) as store:
            d = _resolve(store, name)
            items = load_items(store, d.id)
        by: dict[str, dict[str, int]] = {"split": {}, "label": {}, "category": {}, "contrast_type": {}}
        for it in items:
            for k in by:
                v = it.get(k) or "-"
                by[k][v] = by[k].get(v, 0) + 1
        info = {"id": d.id, "name": d.name, "kind": d.kind, "n_items": d.n_items, "created_at": d.created_at,
                "source": d.source, "counts": {k: dict(sorted(v.items())) for k, v in by.items()},
                "examples": items[: max(n, 0)]}
        if json_out:
            print_json(info)
            return
        console.print(f"[bold]{d.name}[/bold] ({d.kind}) {d.id}")
        console.print(f"items {d.n_items}, created {d.created_at}")
        console.print(f"source {d.source}", markup=False)
        for k, v in info["counts"].items():
            if list(v) != ["-"]:
                console.print(f"{k}: " + ", ".join(f"{a}={b}" for a, b in v.items()), markup=False)
        for it in info["examples"]:
            console.print(f"- [{it['split']}/{it['label']}] {it['prompt']!r} -> {it['response']!r}", markup=False)

    @data_app.command("export")
    def export_cmd(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(help="Dataset name, id or id prefix.")],
        out: Annotated[Path, typer.Option("--out", help="FILE.jsonl / FILE.csv / FILE.parquet or a new folder.")],
        split: Annotated[str | None, typer.Option("--split", help="Only this split.", show_default=False)] = None,
        db: DbOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Write a dataset's items (stable order) to a file."""
        from spt.data import check_out_path, export_items, load_items
        from spt.errors import SptError

        check_out_path(out)
        with get_store(ctx, db) as store:
            d = _resolve(store, name)
            if split is not None:
                splits = _split_counts(store, d.id)
                if split not in splits:
                    raise SptError(f"--split {split!r}: dataset {d.name} has no such split; use one of "
                                   f"{', '.join(sorted(str(k) for k in splits)) or '(none)'}, or leave it out")
            items = load_items(store, d.id, split=split)
        export_items(items, out)
        if json_out:
            print_json({"dataset_id": d.id, "name": d.name, "n_items": len(items), "out": str(out)})
        else:
            console.print(f"exported {len(items)} items of {d.name} to {out}")
