"""`spt sweep` (not implemented yet)."""

from __future__ import annotations

import typer

from spt.commands._common import not_implemented


def register(app: typer.Typer) -> None:
    @app.command("sweep", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def _cmd() -> None:
        """Not implemented yet."""
        not_implemented("sweep")
