"""Accounts: global uniqueness claims for usernames and emails, refresh tokens.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

A claim row lives on the shard of the lower-cased value it claims (DESIGN.md: global
uniqueness by lookup rows), with the value as primary key, so two registrations of one name
meet on one shard and one primary key. A claim is `pending` while its registration (or
rename) is under way, with an expiry the sweeper enforces, then `confirmed`.
"""

from alembic import op

from messenger.storage.migrations.columns import ring_pos

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for kind in ("username", "email"):
        op.execute(f"""
            CREATE TABLE {kind}_claims (
                {kind}          text        PRIMARY KEY,
                user_id         uuid        NOT NULL,
                reservation_id  uuid        NOT NULL,
                state           text        NOT NULL CHECK (state IN ('pending', 'confirmed')),
                expires_at      timestamptz,
                created_at      timestamptz NOT NULL DEFAULT now(),
                {ring_pos(kind)},
                CHECK ((state = 'pending') = (expires_at IS NOT NULL))
            )
        """)
        op.execute(f"CREATE INDEX {kind}_claims_expiring ON {kind}_claims (expires_at) WHERE state = 'pending'")
        op.execute(f"CREATE INDEX {kind}_claims_user_id ON {kind}_claims (user_id)")
        op.execute(f"CREATE INDEX {kind}_claims_ring_pos ON {kind}_claims (ring_pos)")

    op.execute(f"""
        CREATE TABLE refresh_tokens (
            id          uuid        PRIMARY KEY,
            user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            family_id   uuid        NOT NULL,
            token_hash  bytea       NOT NULL UNIQUE,
            created_at  timestamptz NOT NULL DEFAULT now(),
            expires_at  timestamptz NOT NULL,
            used_at     timestamptz,
            revoked_at  timestamptz,
            {ring_pos("user_id")}
        )
    """)
    op.execute("CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id)")
    op.execute("CREATE INDEX refresh_tokens_user_id ON refresh_tokens (user_id)")
    op.execute("CREATE INDEX refresh_tokens_ring_pos ON refresh_tokens (ring_pos)")
    # Accounts belong to a user: deleting the user removes the account (and, through
    # users_accounts, the link) in the same transaction.
    op.execute("""
        ALTER TABLE accounts ADD CONSTRAINT accounts_user_id_fkey
        FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
    """)


def downgrade() -> None:
    op.execute("ALTER TABLE accounts DROP CONSTRAINT accounts_user_id_fkey")
    op.execute("DROP TABLE refresh_tokens")
    op.execute("DROP TABLE email_claims")
    op.execute("DROP TABLE username_claims")
