"""ids never reused (issue 19 item 3): SQLite tables whose ids people and receivers see get
AUTOINCREMENT, keeping every row, id, index and foreign key; and tasks.move_count (item 7)

SQLite can only give a table AUTOINCREMENT by building it again: batch mode with
recreate="always" reflects the table as it is (so columns added by any earlier migration are
kept), creates it anew with the flag, copies the rows with their ids (which also sets the
table's high-water mark in sqlite_sequence) and puts its indexes back. Store._upgrade runs
migrations with foreign-key checks off, as SQLite requires for rebuilding a table others
reference, and checks every foreign key before it commits. PostgreSQL's sequences never give an
id twice: nothing to do there.

Revision ID: 0010
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

from iacctl.store.models import AUTOINCREMENT, AUTOINCREMENT_TABLES

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Issue 19 item 7: how many resources a plan moves (moved blocks).
    move_count = sa.Column("move_count", sa.Integer(), nullable=True)
    if op.get_bind().dialect.name != "sqlite":
        op.add_column("tasks", move_count)
        return
    for table in AUTOINCREMENT_TABLES:
        with op.batch_alter_table(table, recreate="always", table_kwargs=AUTOINCREMENT) as batch:
            if table == "tasks":
                batch.add_column(move_count)


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("move_count")
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in AUTOINCREMENT_TABLES:
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": False}):
            pass
