"""kubernetes pools: freeze windows and warm-ups (SPEC S4, S6)

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "freeze_windows",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pool_id", sa.Integer(), nullable=False),
        sa.Column("starts_at", sa.Float(), nullable=False),
        sa.Column("ends_at", sa.Float(), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["pool_id"], ["pools.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("freeze_windows", schema=None) as batch_op:
        batch_op.create_index("ix_freeze_windows_pool_id", ["pool_id"], unique=False)
    with op.batch_alter_table("pools", schema=None) as batch_op:
        # S4: the last window whose start was acted on (pods deleted, warm-ups reset).
        batch_op.add_column(sa.Column("frozen_until", sa.Float(), nullable=True))
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("warmup_status", sqlmodel.sql.sqltypes.AutoString(length=20),
                                      nullable=True))
        batch_op.add_column(sa.Column("warmup_slot_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("warmup_at", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("warmup_expires_at", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("warmup_attempts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("warmup_error", sqlmodel.sql.sqltypes.AutoString(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        for name in ("warmup_error", "warmup_attempts", "warmup_expires_at", "warmup_at", "warmup_slot_id",
                     "warmup_status"):
            batch_op.drop_column(name)
    with op.batch_alter_table("pools", schema=None) as batch_op:
        batch_op.drop_column("frozen_until")
    with op.batch_alter_table("freeze_windows", schema=None) as batch_op:
        batch_op.drop_index("ix_freeze_windows_pool_id")
    op.drop_table("freeze_windows")
