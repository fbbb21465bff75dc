"""former secrets (issue 24 item 4): every value a sensitive variable held before, encrypted,
so that plans and logs mask it as they mask the current one

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "former_secrets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("category", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("value_secret", sa.LargeBinary(), nullable=False),
        sa.Column("replaced_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_former_secrets_variable", "former_secrets", ["workspace_id", "category", "key"])


def downgrade() -> None:
    op.drop_index("ix_former_secrets_variable", table_name="former_secrets")
    op.drop_table("former_secrets")
