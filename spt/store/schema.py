"""Schema versions known to this spt, readable without importing alembic.

Opening a store compares its `alembic_version` row with `HEAD` using plain sqlite3, so commands
like `spt runs` start fast; alembic is imported only when a store actually needs upgrading.
`tests/test_migrations.py` checks these constants against the revisions in `migrations/versions`.
"""

from __future__ import annotations

from pathlib import Path

# Oldest first. Append a new revision id here when adding a migration.
REVISIONS: tuple[str, ...] = ("0001_initial", "0002_run_audit", "0003_metric_ci_method", "0004_run_leases",
                             "0005_eval_leases_unique", "0006_trajectory_step")
HEAD = REVISIONS[-1]


def migrations_dir() -> Path:
    """The alembic script directory: shipped as `spt.migrations`, or `migrations/` in a checkout."""
    try:
        import spt.migrations as pkg

        return Path(pkg.__file__).parent
    except ImportError:  # running from a source tree that was not installed
        return Path(__file__).resolve().parents[2] / "migrations"
