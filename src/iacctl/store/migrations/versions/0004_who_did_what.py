"""who did what: the actor who created, confirmed and cancelled each task (issue 9)

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COLUMNS = ("created_by", "confirmed_by", "cancelled_by")


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        for name in COLUMNS:
            batch_op.add_column(sa.Column(name, sqlmodel.sql.sqltypes.AutoString(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        for name in reversed(COLUMNS):
            batch_op.drop_column(name)
