"""metric.ci_method: the interval method behind each metric's ci_low/ci_high

Revision ID: 0003_metric_ci_method
Revises: 0002_run_audit
Create Date: 2026-11-29
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0003_metric_ci_method"
down_revision = "0002_run_audit"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("metric", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ci_method", sqlmodel.sql.sqltypes.AutoString(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("metric", schema=None) as batch_op:
        batch_op.drop_column("ci_method")
