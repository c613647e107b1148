"""`spt merge RUN_ID`: fold a LoRA adapter checkpoint into full weights (a new `merged` checkpoint)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spt.commands._common import DbOption, JsonOption, console, get_store, print_json


def register(app: typer.Typer) -> None:
    @app.command("merge")
    def merge_cmd(
        ctx: typer.Context,
        run_id: Annotated[str, typer.Argument(help="Run id (or unique prefix).")],
        checkpoint: Annotated[str | None, typer.Option("--checkpoint", help="Adapter checkpoint id "
                                                       "(default: the run's final one).")] = None,
        out: Annotated[Path | None, typer.Option("--out", help="Output directory (default: next to the "
                                                 "run's checkpoints).")] = None,
        dtype: Annotated[str, typer.Option("--dtype", help="float32 | bfloat16 | float16.")] = "float32",
        db: DbOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Merge LoRA into full weights with the tokenizer and chat template; record the checkpoint."""
        from spt.train import merge_run

        if out is not None and out.expanduser().exists() and not out.expanduser().is_dir():
            from spt.errors import SptError

            raise SptError(f"--out {out} is a file; the merged weights are written into a folder, pass a folder path")
        store = get_store(ctx, db, create=False)
        res = merge_run(store, run_id, checkpoint, out, dtype)
        if json_out:
            print_json(res)
            return
        verb = "already merged" if res["reused"] else "merged"
        console.print(f"{verb}: checkpoint {res['checkpoint_id']} ({res['meta']['dtype']}) at {res['path']}")
