"""Alembic environment: migrate one shard primary, under an advisory lock.

`messenger.storage.migrator` runs this once per shard (each in its own process, since
Alembic's `context`/`op` are process-global) with the shard's URL in `config.attributes`.
All pending revisions apply in one transaction that first takes a transaction-level advisory
lock, so two concurrent runs on a shard serialise: the second sees the first's result and
applies nothing twice.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

MIGRATION_LOCK_KEY = 7_146_918_422  # any constant; identifies "messenger schema migration"
LOCK_TIMEOUT = "120s"

config = context.config
engine = create_engine(config.attributes["url"], poolclass=NullPool)

with engine.connect() as connection:
    context.configure(
        connection=connection,
        transaction_per_migration=False,
        compare_type=True,
    )
    with context.begin_transaction():
        connection.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        context.run_migrations()
engine.dispose()
