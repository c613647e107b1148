"""evaluation leases, one running evaluation per identity, one current judgment per (judge, generation),
and resumable imports (import_log.finished_at, import_log.progress)

Old stores may hold rows the new unique indexes forbid; they are resolved deterministically before the
indexes are built, keeping the newest row (ids are time-ordered UUIDv7, ties broken by id):
- several `running` evaluations with one identity: the newest stays `running`, the others become
  `failed` (their generations stay and are reused by the next `spt evaluate`);
- several current judgments (superseded_by IS NULL) of one judge on one generation: the newest stays
  current, the others are marked superseded by it (history kept, as `--rejudge` does).
Imports recorded before this revision ran in one transaction, so they are finished: finished_at =
imported_at.

Revision ID: 0005_eval_leases_unique
Revises: 0004_run_leases
Create Date: 2026-11-29
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0005_eval_leases_unique"
down_revision = "0004_run_leases"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("evaluation", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_owner", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column("lease_heartbeat", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    with op.batch_alter_table("import_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("finished_at", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column("progress", sa.JSON(), nullable=True))
    op.execute("UPDATE import_log SET finished_at = imported_at WHERE finished_at IS NULL")

    op.execute(
        "UPDATE evaluation SET status = 'failed', "
        "error = 'another running evaluation had the same identity (store upgraded to leases)' "
        "WHERE status = 'running' AND id NOT IN "
        "(SELECT max(id) FROM evaluation WHERE status = 'running' GROUP BY identity)"
    )
    op.create_index("ux_evaluation_identity_running", "evaluation", ["identity"], unique=True,
                    sqlite_where=sa.text("status = 'running'"))

    op.execute(
        "UPDATE judgment SET superseded_by = ("
        "  SELECT max(n.id) FROM judgment n WHERE n.judge_id = judgment.judge_id "
        "  AND n.generation_id = judgment.generation_id AND n.superseded_by IS NULL) "
        "WHERE superseded_by IS NULL AND id <> ("
        "  SELECT max(n.id) FROM judgment n WHERE n.judge_id = judgment.judge_id "
        "  AND n.generation_id = judgment.generation_id AND n.superseded_by IS NULL)"
    )
    op.create_index("ux_judgment_current", "judgment", ["judge_id", "generation_id"], unique=True,
                    sqlite_where=sa.text("superseded_by IS NULL"))


def downgrade() -> None:
    op.drop_index("ux_judgment_current", table_name="judgment")
    op.drop_index("ux_evaluation_identity_running", table_name="evaluation")
    with op.batch_alter_table("import_log", schema=None) as batch_op:
        batch_op.drop_column("progress")
        batch_op.drop_column("finished_at")
    with op.batch_alter_table("evaluation", schema=None) as batch_op:
        batch_op.drop_column("lease_heartbeat")
        batch_op.drop_column("lease_owner")
