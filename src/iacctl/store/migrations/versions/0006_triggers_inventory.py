"""run triggers and the inventory (SPEC F4, F2; seed 002 H6)

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("trigger_sources", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column("trigger_hops", sa.Integer(), nullable=True))

    op.create_table(
        "run_triggers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("source_workspace_id", sa.Integer(), nullable=False),
        sa.Column("only_if_changed", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.ForeignKeyConstraint(["source_workspace_id"], ["workspaces.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("workspace_id", "source_workspace_id"),
    )
    with op.batch_alter_table("run_triggers", schema=None) as batch_op:
        batch_op.create_index("ix_run_triggers_workspace_id", ["workspace_id"], unique=False)
        batch_op.create_index("ix_run_triggers_source_workspace_id", ["source_workspace_id"], unique=False)

    op.create_table(
        "inventory_resources",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("address", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("module", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("mode", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("type", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("index_key", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("provider", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("resource_id_secret", sa.LargeBinary(), nullable=True),
        sa.Column("serial", sa.Integer(), nullable=False),
        sa.Column("first_seen", sa.Float(), nullable=False),
        sa.Column("last_seen", sa.Float(), nullable=False),
        sa.Column("removed_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("workspace_id", "address"),
    )
    with op.batch_alter_table("inventory_resources", schema=None) as batch_op:
        batch_op.create_index("ix_inventory_resources_workspace_id", ["workspace_id"], unique=False)
        batch_op.create_index("ix_inventory_type", ["type"], unique=False)

    op.create_table(
        "inventory_syncs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("synced_serial", sa.Integer(), nullable=True),
        sa.Column("synced_at", sa.Float(), nullable=True),
        sa.Column("syncing_serial", sa.Integer(), nullable=True),
        sa.Column("sync_started_at", sa.Float(), nullable=True),
        sa.Column("sync_host", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("sync_pid", sa.Integer(), nullable=True),
        sa.Column("sync_start", sa.Float(), nullable=True),
        sa.Column("last_error", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("workspace_id"),
    )

    op.create_table(
        "inventory_endpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("url", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("hmac_key_secret", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("inventory_endpoints")
    op.drop_table("inventory_syncs")
    with op.batch_alter_table("inventory_resources", schema=None) as batch_op:
        batch_op.drop_index("ix_inventory_type")
        batch_op.drop_index("ix_inventory_resources_workspace_id")
    op.drop_table("inventory_resources")
    with op.batch_alter_table("run_triggers", schema=None) as batch_op:
        batch_op.drop_index("ix_run_triggers_source_workspace_id")
        batch_op.drop_index("ix_run_triggers_workspace_id")
    op.drop_table("run_triggers")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("trigger_hops")
        batch_op.drop_column("trigger_sources")
