"""`ring_pos` becomes a plain column that a BEFORE trigger fills, so that it replicates.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03

PostgreSQL 15 does not send stored generated columns over logical replication. The row filter
of a reshard's publication is on `ring_pos`, so the replica identity must cover it (0006); the
subscriber then looks rows up by its own identity, (key, ring_pos), and refuses every UPDATE
and DELETE whose old key lacks `ring_pos` ("publisher did not send replica identity column").
As a plain column `ring_pos` is sent like any other. The trigger computes it exactly as the
generated expression did (same bytes as the ring, DESIGN.md), on insert and whenever the
placement key changes; replication's apply workers fire no ordinary trigger and keep the value
the source computed, which is the same number. Values already stored do not change.

The partitioned `users` also takes (id, ring_pos) as the identity of its root: a publication
that publishes through the root sends the root's identity as the old key, and the subscriber
routes it to a partition whose identity is (id, ring_pos).
"""

from alembic import op

from messenger.storage.migrations.columns import ring_pos

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

USER_PARTITIONS = 16

# Table -> (column the key is read from, the key's SQL expression over that row), as of this
# revision. The outbox hashes the id inside its aggregate (`user:<id>`, `conversation:<id>:…`).
PLACEMENT: dict[str, tuple[str, str]] = {
    "users": ("id", "{row}.id"),
    "accounts": ("user_id", "{row}.user_id"),
    "users_accounts": ("user_id", "{row}.user_id"),
    "username_claims": ("username", "{row}.username"),
    "email_claims": ("email", "{row}.email"),
    "refresh_tokens": ("user_id", "{row}.user_id"),
    "follows": ("follower_id", "{row}.follower_id"),
    "followers": ("followee_id", "{row}.followee_id"),
    "inbox": ("user_id", "{row}.user_id"),
    "conversations": ("id", "{row}.id"),
    "conversation_members": ("conversation_id", "{row}.conversation_id"),
    "messages": ("conversation_id", "{row}.conversation_id"),
    "conversation_events": ("conversation_id", "{row}.conversation_id"),
    "outbox": ("aggregate", "split_part({row}.aggregate, ':', 2)"),
}

# Identity indexes of 0006 (users per partition), recreated by the downgrade.
PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "accounts": ("id",),
    "users_accounts": ("user_id", "account_id"),
    "username_claims": ("username",),
    "email_claims": ("email",),
    "refresh_tokens": ("id",),
    "conversations": ("id",),
    "conversation_members": ("conversation_id", "user_id"),
    "messages": ("conversation_id", "id"),
    "conversation_events": ("conversation_id", "seq"),
    "inbox": ("user_id", "conversation_id"),
    "follows": ("follower_id", "followee_id"),
    "followers": ("followee_id", "follower_id"),
    "outbox": ("id",),
}


def upgrade() -> None:
    for table, (column, key) in PLACEMENT.items():
        position = f"(('x' || substr(md5(({key.format(row='NEW')})::text), 1, 8))::bit(32))::bigint"
        op.execute(f"ALTER TABLE {table} ALTER COLUMN ring_pos DROP EXPRESSION")
        op.execute(f"""
            CREATE FUNCTION ring_place_{table}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                NEW.ring_pos := {position};
                RETURN NEW;
            END
            $$
        """)
        op.execute(
            f"CREATE TRIGGER ring_place BEFORE INSERT OR UPDATE OF {column} ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION ring_place_{table}()"
        )
    op.execute("ALTER TABLE users REPLICA IDENTITY USING INDEX users_identity")


def downgrade() -> None:
    # PostgreSQL 15 cannot turn a column back into a generated one: re-add it, then rebuild
    # the indexes that went with the old column (0001-0006) and the replica identities.
    op.execute("ALTER TABLE users REPLICA IDENTITY DEFAULT")
    for table, (_, key) in PLACEMENT.items():
        op.execute(f"DROP TRIGGER ring_place ON {table}")
        op.execute(f"DROP FUNCTION ring_place_{table}()")
        op.execute(f"ALTER TABLE {table} DROP COLUMN ring_pos")
        generated = ring_pos(key.format(row=table).replace(f"{table}.", ""))
        op.execute(f"ALTER TABLE {table} ADD COLUMN {generated}")
        op.execute(f"CREATE INDEX {table}_ring_pos ON {table} (ring_pos)")
    for table, columns in PRIMARY_KEYS.items():
        op.execute(f"CREATE UNIQUE INDEX {table}_identity ON {table} ({', '.join((*columns, 'ring_pos'))})")
        op.execute(f"ALTER TABLE {table} REPLICA IDENTITY USING INDEX {table}_identity")
    op.execute("CREATE UNIQUE INDEX users_identity ON ONLY users (id, ring_pos)")
    for i in range(USER_PARTITIONS):
        part = f"users_p{i:02d}"
        op.execute(f"CREATE UNIQUE INDEX {part}_identity ON {part} (id, ring_pos)")
        op.execute(f"ALTER INDEX users_identity ATTACH PARTITION {part}_identity")
        op.execute(f"ALTER TABLE {part} REPLICA IDENTITY USING INDEX {part}_identity")
