"""Keyset indexes for refreshing the names copied into other users' rows.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

A rename (or a deletion) rewrites every copy of a user's names: their messages' sender_name,
the followee names in follows, the follower names in followers. The relay does it in batches,
each resuming after the last key of the one before. The single-column indexes on the user's
column could not serve that order, so each batch re-read all of the user's rows: O(n^2) for a
prolific sender. These indexes lead with the user's column and continue with the table's key,
so each batch is one index range scan of `batch` rows; they also serve every lookup the
single-column ones did, which they replace.
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX messages_by_sender ON messages (sender_id, conversation_id, id)")
    op.execute("DROP INDEX messages_sender_id")
    op.execute("CREATE INDEX follows_by_followee ON follows (followee_id, follower_id)")
    op.execute("DROP INDEX follows_followee_id")
    op.execute("CREATE INDEX followers_by_follower ON followers (follower_id, followee_id)")
    op.execute("DROP INDEX followers_follower_id")


def downgrade() -> None:
    op.execute("CREATE INDEX followers_follower_id ON followers (follower_id)")
    op.execute("DROP INDEX followers_by_follower")
    op.execute("CREATE INDEX follows_followee_id ON follows (followee_id)")
    op.execute("DROP INDEX follows_by_followee")
    op.execute("CREATE INDEX messages_sender_id ON messages (sender_id)")
    op.execute("DROP INDEX messages_by_sender")
