"""run_audit: the history of manual run metadata changes (`spt runs set`)

Revision ID: 0002_run_audit
Revises: 0001_initial
Create Date: 2026-11-25
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0002_run_audit"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_audit",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("run_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("old_value", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("new_value", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("changed_at", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["run.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("run_audit", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_run_audit_run_id"), ["run_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("run_audit", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_run_audit_run_id"))

    op.drop_table("run_audit")
