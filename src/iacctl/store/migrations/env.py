"""Alembic environment: runs on the connection iacctl hands it (see Store._upgrade)."""

from alembic import context
from sqlmodel import SQLModel

import iacctl.store.models  # noqa: F401  (registers the tables)

connection = context.config.attributes.get("connection")
target_metadata = SQLModel.metadata

if connection is None:
    from sqlalchemy import create_engine

    url = context.config.get_main_option("sqlalchemy.url") or "sqlite:///autogen.db"
    connection = create_engine(url).connect()

context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
