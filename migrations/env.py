"""Alembic environment: runs on the connection spt hands over, in batch mode for SQLite."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from spt.store.models import SQLModel  # noqa: F401  (registers the tables on the metadata)

config = context.config
target_metadata = SQLModel.metadata


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:  # developer use through alembic's own CLI
    url = config.get_main_option("sqlalchemy.url") or "sqlite:///" + os.environ["SPT_DB"]
    with create_engine(url).connect() as conn:
        _run(conn)
