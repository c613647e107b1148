"""trajectory_step: the steps of agent trajectories (tool calls, observations), one row per step

Revision ID: 0006_trajectory_step
Revises: 0005_eval_leases_unique
Create Date: 2026-12-07
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0006_trajectory_step"
down_revision = "0005_eval_leases_unique"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trajectory_step",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("generation_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("thought", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("tool", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("tool_input", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("observation", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("meta", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["generation_id"], ["generation.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("generation_id", "position"),
    )
    with op.batch_alter_table("trajectory_step", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_trajectory_step_generation_id"), ["generation_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_trajectory_step_tool"), ["tool"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("trajectory_step", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_trajectory_step_tool"))
        batch_op.drop_index(batch_op.f("ix_trajectory_step_generation_id"))
    op.drop_table("trajectory_step")
