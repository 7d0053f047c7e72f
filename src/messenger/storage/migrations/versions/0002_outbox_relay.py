"""Outbox relay: retries, dead letters, and the idempotency ledger on target shards.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

An event is claimed in id order (UUIDv7: creation order), applied to its target shards, and
marked delivered. A failure is retried with backoff (`next_attempt_at`) and, after too many
attempts, parked as a dead letter (`dead_at`) that `messenger check` and /metrics expose.
`applied_events` is written on the target shard in the same transaction as an event's effect,
so an effect is applied at most once however often the event is relayed.
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        ALTER TABLE outbox
            ADD COLUMN attempts        integer     NOT NULL DEFAULT 0,
            ADD COLUMN next_attempt_at timestamptz NOT NULL DEFAULT now(),
            ADD COLUMN last_error      text,
            ADD COLUMN dead_at         timestamptz
    """)
    op.execute("DROP INDEX outbox_undelivered")
    op.execute(
        "CREATE INDEX outbox_pending ON outbox (id) WHERE delivered_at IS NULL AND dead_at IS NULL"
    )
    op.execute("CREATE INDEX outbox_dead ON outbox (dead_at) WHERE dead_at IS NOT NULL")
    op.execute("""
        CREATE TABLE applied_events (
            event_id    uuid        NOT NULL,
            target      text        NOT NULL DEFAULT '',
            applied_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (event_id, target)
        )
    """)
    op.execute("CREATE INDEX applied_events_applied_at ON applied_events (applied_at)")


def downgrade() -> None:
    op.execute("DROP TABLE applied_events")
    op.execute("DROP INDEX outbox_dead")
    op.execute("DROP INDEX outbox_pending")
    op.execute(
        "CREATE INDEX outbox_undelivered ON outbox (created_at) WHERE delivered_at IS NULL"
    )
    op.execute("""
        ALTER TABLE outbox
            DROP COLUMN attempts, DROP COLUMN next_attempt_at,
            DROP COLUMN last_error, DROP COLUMN dead_at
    """)
