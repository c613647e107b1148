"""run leases (lease_owner, lease_heartbeat) and one running row per identity

Rows left `running` by an older spt that share an identity keep the newest as running; the others
become `interrupted` (resumable), so the unique index can be built.

Revision ID: 0004_run_leases
Revises: 0003_metric_ci_method
Create Date: 2026-11-29
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0004_run_leases"
down_revision = "0003_metric_ci_method"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_owner", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column("lease_heartbeat", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    op.execute(
        "UPDATE run SET status = 'interrupted', "
        "error = 'another running row had the same settings (store upgraded to leases)' "
        "WHERE status = 'running' AND identity IS NOT NULL AND id NOT IN "
        "(SELECT max(id) FROM run WHERE status = 'running' AND identity IS NOT NULL GROUP BY identity)"
    )
    op.create_index("ux_run_identity_running", "run", ["identity"], unique=True,
                    sqlite_where=sa.text("status = 'running'"))


def downgrade() -> None:
    op.drop_index("ux_run_identity_running", table_name="run")
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.drop_column("lease_heartbeat")
        batch_op.drop_column("lease_owner")
