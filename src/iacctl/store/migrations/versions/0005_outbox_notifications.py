"""outbox and notifications (SPEC F1, F3): destinations, outbox entries, the delivery log

Revision ID: 0005
Revises: 0003 (the lead sets 0004 at merge)
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notification_destinations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=90), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("url", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("url_secret", sa.LargeBinary(), nullable=True),
        sa.Column("token_secret", sa.LargeBinary(), nullable=True),
        sa.Column("events", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("verified_at", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    with op.batch_alter_table("notification_destinations", schema=None) as batch_op:
        batch_op.create_index("ix_notification_destinations_workspace_id", ["workspace_id"], unique=False)

    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("destination_id", sa.Integer(), nullable=True),
        sa.Column("destination_name", sqlmodel.sql.sqltypes.AutoString(length=90), nullable=True),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.Column("workspace_id", sa.Integer(), nullable=True),
        sa.Column("event", sqlmodel.sql.sqltypes.AutoString(length=30), nullable=False),
        sa.Column("facts_json", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.Float(), nullable=False),
        sa.Column("give_up_at", sa.Float(), nullable=False),
        sa.Column("claim_token", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=True),
        sa.Column("claimed_by_host", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("claimed_by_pid", sa.Integer(), nullable=True),
        sa.Column("claimed_by_start", sa.Float(), nullable=True),
        sa.Column("last_error", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("last_http_status", sa.Integer(), nullable=True),
        sa.Column("delivered_at", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_status_due", ["status", "next_attempt_at"], unique=False)
        batch_op.create_index("ix_outbox_destination_status", ["destination_id", "status"], unique=False)
        batch_op.create_index("ix_outbox_task_id", ["task_id"], unique=False)

    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("outbox_id", sa.Integer(), nullable=True),
        sa.Column("destination_id", sa.Integer(), nullable=True),
        sa.Column("destination_name", sqlmodel.sql.sqltypes.AutoString(length=90), nullable=False),
        sa.Column("event", sqlmodel.sql.sqltypes.AutoString(length=30), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("error", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("response_excerpt", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("result", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_deliveries_outbox_id", ["outbox_id"], unique=False)
        batch_op.create_index("ix_deliveries_destination_id", ["destination_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_destination_id")
        batch_op.drop_index("ix_deliveries_outbox_id")
    op.drop_table("deliveries")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_task_id")
        batch_op.drop_index("ix_outbox_destination_status")
        batch_op.drop_index("ix_outbox_status_due")
    op.drop_table("outbox")
    with op.batch_alter_table("notification_destinations", schema=None) as batch_op:
        batch_op.drop_index("ix_notification_destinations_workspace_id")
    op.drop_table("notification_destinations")
