"""The store: SQLModel tables, engines and sessions, repository functions, Alembic migrations."""
