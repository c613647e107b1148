"""Alembic migrations of the spt store (shipped inside the package as `spt.migrations`)."""
