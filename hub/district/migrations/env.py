"""Alembic environment of the district database; run through hub.district.db.migrate(), which
passes the engine in ``config.attributes["engine"]`` (no alembic.ini, no URL in a file)."""

from __future__ import annotations

from alembic import context

from hub.district.models import TABLES

engine = context.config.attributes["engine"]

with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=TABLES, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()
