"""places per machine (issue 18 item 4): each machine's own pod of the local pool, its heartbeat
and its own slot count

The pod of the local pool that stores before this one have (named `local`) keeps its rows and
slots; it has no machine until the first machine that uses the upgraded store adopts it.

Revision ID: 0009
Revises: 0007
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pods", schema=None) as batch_op:
        batch_op.add_column(sa.Column("machine", sqlmodel.sql.sqltypes.AutoString(length=253), nullable=True))
        batch_op.add_column(sa.Column("heartbeat_at", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("slots_per_pod", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pods", schema=None) as batch_op:
        batch_op.drop_column("slots_per_pod")
        batch_op.drop_column("heartbeat_at")
        batch_op.drop_column("machine")
