"""Initial schema: users (hash-partitioned), accounts, users_accounts, outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

Every sharded table carries `ring_pos`, its placement key's position on the ring (DESIGN.md),
so resharding can select the rows that move by position range.
"""

from alembic import op

from messenger.storage.migrations.columns import ring_pos

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

USER_PARTITIONS = 16


def upgrade() -> None:
    op.execute(f"""
        CREATE TABLE users (
            id          uuid        NOT NULL,
            first_name  text        NOT NULL,
            last_name   text        NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now(),
            updated_at  timestamptz NOT NULL DEFAULT now(),
            {ring_pos("id")},
            PRIMARY KEY (id)
        ) PARTITION BY HASH (id)
    """)
    for i in range(USER_PARTITIONS):
        op.execute(
            f"CREATE TABLE users_p{i:02d} PARTITION OF users "
            f"FOR VALUES WITH (MODULUS {USER_PARTITIONS}, REMAINDER {i})"
        )
    op.execute("CREATE INDEX users_ring_pos ON users (ring_pos)")

    # An account belongs to one user and lives on that user's shard; ring_pos follows user_id.
    op.execute(f"""
        CREATE TABLE accounts (
            id             uuid        PRIMARY KEY,
            user_id        uuid        NOT NULL,
            username       text        NOT NULL,
            email          text        NOT NULL,
            password_hash  text        NOT NULL,
            created_at     timestamptz NOT NULL DEFAULT now(),
            updated_at     timestamptz NOT NULL DEFAULT now(),
            {ring_pos("user_id")},
            CONSTRAINT accounts_username_key UNIQUE (username),
            CONSTRAINT accounts_email_key UNIQUE (email)
        )
    """)
    op.execute("CREATE INDEX accounts_user_id ON accounts (user_id)")
    op.execute("CREATE INDEX accounts_ring_pos ON accounts (ring_pos)")

    op.execute(f"""
        CREATE TABLE users_accounts (
            user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            account_id  uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
            {ring_pos("user_id")},
            PRIMARY KEY (user_id, account_id)
        )
    """)
    op.execute("CREATE INDEX users_accounts_account_id ON users_accounts (account_id)")
    op.execute("CREATE INDEX users_accounts_ring_pos ON users_accounts (ring_pos)")

    # Cross-shard events, written in the same transaction as the change that causes them.
    op.execute("""
        CREATE TABLE outbox (
            id            uuid        PRIMARY KEY,
            aggregate     text        NOT NULL,
            type          text        NOT NULL,
            payload       jsonb       NOT NULL,
            created_at    timestamptz NOT NULL DEFAULT now(),
            delivered_at  timestamptz
        )
    """)
    op.execute(
        "CREATE INDEX outbox_undelivered ON outbox (created_at) WHERE delivered_at IS NULL"
    )


def downgrade() -> None:
    op.execute("DROP TABLE outbox")
    op.execute("DROP TABLE users_accounts")
    op.execute("DROP TABLE accounts")
    op.execute("DROP TABLE users")
