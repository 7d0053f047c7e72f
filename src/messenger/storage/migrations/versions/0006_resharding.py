"""Resharding: replica identities that cover `ring_pos`, the outbox's ring position, the fence.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

Moving rows between shards uses logical replication with a row filter on `ring_pos`
(docs/resharding.md). PostgreSQL 15 refuses every UPDATE and DELETE of a published table whose
row filter uses a column outside the replica identity, so each sharded table gets a unique index
on (primary key, ring_pos) as its identity here, before any publication exists. The partitioned
`users` needs it on every partition: 15 does not take it from the parent.

The outbox gets a ring position of its aggregate's key (`user:<id>`, `conversation:<id>:to:<n>`)
so that pending events move with the rows they are about.

`ring_fence` lists the ring ranges `[lo, hi)` this shard must not write: `incoming` (being copied
here, not yet switched), `frozen` (moving away, writes held for the switch), `moved` (owned by
another shard now). An AFTER trigger on every sharded table refuses a change inside a fenced range
with SQLSTATE MF001 (not owned: the writer's topology is stale, reload and retry) or MF002 (frozen:
retry shortly). It is AFTER because stored generated columns are computed after BEFORE triggers.
Logical-replication apply workers do not fire ordinary triggers, so copies and reverse
replication pass; the clean-up of moved rows sets `messenger.fence_bypass` for its transaction.
An empty fence (the normal state) costs one index probe per written row.
"""

from alembic import op

from messenger.storage.migrations.columns import ring_pos

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

USER_PARTITIONS = 16

# Table -> primary key columns, as of this revision (users is handled per partition).
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

FENCE_CHECK = """
CREATE FUNCTION ring_fence_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    pos bigint;
    fence_state text;
    fence_hi bigint;
BEGIN
    IF current_setting('messenger.fence_bypass', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        pos := OLD.ring_pos;
    ELSE
        pos := NEW.ring_pos;
    END IF;
    SELECT f.state, f.hi INTO fence_state, fence_hi
    FROM ring_fence f WHERE f.lo <= pos ORDER BY f.lo DESC LIMIT 1;
    IF fence_state IS NULL OR pos >= fence_hi THEN
        RETURN NULL;
    END IF;
    IF fence_state = 'frozen' THEN
        RAISE EXCEPTION 'ring position % of % is frozen for a shard move', pos, TG_TABLE_NAME
            USING ERRCODE = 'MF002', HINT = 'retry shortly';
    END IF;
    RAISE EXCEPTION 'ring position % of % is not owned by this shard (%)', pos, TG_TABLE_NAME, fence_state
        USING ERRCODE = 'MF001', HINT = 'reload the topology and retry';
END
$$
"""


def _fence(table: str) -> None:
    op.execute(
        f"CREATE TRIGGER ring_fence AFTER INSERT OR UPDATE OR DELETE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION ring_fence_check()"
    )


def upgrade() -> None:
    aggregate_key = "split_part(aggregate, ':', 2)"
    op.execute(f"ALTER TABLE outbox ADD COLUMN {ring_pos(aggregate_key)}")
    op.execute("CREATE INDEX outbox_ring_pos ON outbox (ring_pos)")

    for table, key in PRIMARY_KEYS.items():
        columns = ", ".join((*key, "ring_pos"))
        op.execute(f"CREATE UNIQUE INDEX {table}_identity ON {table} ({columns})")
        op.execute(f"ALTER TABLE {table} REPLICA IDENTITY USING INDEX {table}_identity")

    op.execute("CREATE UNIQUE INDEX users_identity ON ONLY users (id, ring_pos)")
    for i in range(USER_PARTITIONS):
        part = f"users_p{i:02d}"
        op.execute(f"CREATE UNIQUE INDEX {part}_identity ON {part} (id, ring_pos)")
        op.execute(f"ALTER INDEX users_identity ATTACH PARTITION {part}_identity")
        op.execute(f"ALTER TABLE {part} REPLICA IDENTITY USING INDEX {part}_identity")

    op.execute("""
        CREATE TABLE ring_fence (
            lo        bigint      NOT NULL,
            hi        bigint      NOT NULL,
            state     text        NOT NULL CHECK (state IN ('incoming', 'frozen', 'moved')),
            workflow  text        NOT NULL,
            since     timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (lo),
            CHECK (0 <= lo AND lo < hi AND hi <= 4294967296)
        )
    """)
    op.execute(FENCE_CHECK)
    _fence("users")
    for table in PRIMARY_KEYS:
        _fence(table)


def downgrade() -> None:
    for table in ("users", *PRIMARY_KEYS):
        op.execute(f"DROP TRIGGER ring_fence ON {table}")
    op.execute("DROP FUNCTION ring_fence_check()")
    op.execute("DROP TABLE ring_fence")
    for i in range(USER_PARTITIONS):
        op.execute(f"ALTER TABLE users_p{i:02d} REPLICA IDENTITY DEFAULT")
    op.execute("DROP INDEX users_identity")
    for table in PRIMARY_KEYS:
        op.execute(f"ALTER TABLE {table} REPLICA IDENTITY DEFAULT")
        op.execute(f"DROP INDEX {table}_identity")
    op.execute("ALTER TABLE outbox DROP COLUMN ring_pos")
