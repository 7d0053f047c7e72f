"""A BRIN index on `conversation_events.created_at`, for the event log's trim.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03

The retention pruner replaces each conversation's events older than the retention with one
`log.trimmed` frame (storage/retention.py). Events are appended in time order, so a block-range
index finds the old ones by reading a few block summaries instead of the whole table, and costs
next to nothing on the insert path (no entry per row).
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX conversation_events_created_at ON conversation_events USING brin (created_at)")


def downgrade() -> None:
    op.execute("DROP INDEX conversation_events_created_at")
