"""Relations: follow edges on both ends, and follow counters on the users row.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27

A follow is a self-referential many-to-many edge whose two ends usually live on different
shards (docs/follows.md). Each end keeps the rows it lists, on its own shard:

- `follows` (who a user follows) on the follower's shard, written by the request; its
  in-shard end (follower_id) has a foreign key, its cross-shard end (followee_id) has none.
- `followers` (who follows a user) on the followee's shard, written by the relay from the
  follower's outbox; here followee_id is the in-shard end.

Both carry the follow's id (UUIDv7, so time-ordered: the listings' keyset) and a copy of the
other end's names for the listings. The counters sit on the users row so that reading a user
shows them without another query; each changes in the transaction that adds or removes the row
it counts, on the same shard.
"""

from alembic import op

from messenger.storage.migrations.columns import ring_pos

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        ALTER TABLE users
            ADD COLUMN following_count integer NOT NULL DEFAULT 0,
            ADD COLUMN followers_count integer NOT NULL DEFAULT 0
    """)
    op.execute(f"""
        CREATE TABLE follows (
            follower_id          uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            followee_id          uuid        NOT NULL,
            id                   uuid        NOT NULL,
            followee_first_name  text        NOT NULL,
            followee_last_name   text        NOT NULL,
            created_at           timestamptz NOT NULL DEFAULT now(),
            {ring_pos("follower_id")},
            PRIMARY KEY (follower_id, followee_id)
        )
    """)
    # Listing a user's follows, newest first (keyset on the follow's id).
    op.execute("CREATE UNIQUE INDEX follows_by_follower ON follows (follower_id, id)")
    # Clean-up and renames find the edges pointing at a user by the foreign end.
    op.execute("CREATE INDEX follows_followee_id ON follows (followee_id)")
    op.execute("CREATE INDEX follows_ring_pos ON follows (ring_pos)")

    op.execute(f"""
        CREATE TABLE followers (
            followee_id          uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            follower_id          uuid        NOT NULL,
            id                   uuid        NOT NULL,
            follower_first_name  text        NOT NULL,
            follower_last_name   text        NOT NULL,
            created_at           timestamptz NOT NULL,
            {ring_pos("followee_id")},
            PRIMARY KEY (followee_id, follower_id)
        )
    """)
    op.execute("CREATE UNIQUE INDEX followers_by_followee ON followers (followee_id, id)")
    op.execute("CREATE INDEX followers_follower_id ON followers (follower_id)")
    op.execute("CREATE INDEX followers_ring_pos ON followers (ring_pos)")


def downgrade() -> None:
    op.execute("DROP TABLE followers")
    op.execute("DROP TABLE follows")
    op.execute("ALTER TABLE users DROP COLUMN followers_count, DROP COLUMN following_count")
