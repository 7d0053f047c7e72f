"""Messaging: conversations, members, messages and their event log; inboxes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27

A conversation's rows (the conversation, its members, its messages, its event log) live on the
conversation's shard, so a send is one transaction there. Each user's inbox rows live on the
user's shard and are written by the outbox relay, so listing one's conversations reads one shard.

`conversations.last_seq` numbers every change of a conversation (a message created, edited or
deleted, members added or removed): `conversation_events` keeps them, in order, for clients that
resume after a disconnection. `message_count` numbers its messages: read markers and unread
counts are message numbers, so an inbox's unread count is `last_message_no - read_no`.
"""

from alembic import op

from messenger.storage.migrations.columns import ring_pos

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(f"""
        CREATE TABLE conversations (
            id               uuid        PRIMARY KEY,
            type             text        NOT NULL CHECK (type IN ('direct', 'group')),
            title            text,
            created_by       uuid        NOT NULL,
            created_at       timestamptz NOT NULL DEFAULT now(),
            direct_key       text        UNIQUE,
            member_count     integer     NOT NULL DEFAULT 0,
            last_seq         bigint      NOT NULL DEFAULT 0,
            message_count    bigint      NOT NULL DEFAULT 0,
            last_message_id  uuid,
            last_message_at  timestamptz,
            {ring_pos("id")},
            CHECK ((type = 'direct') = (direct_key IS NOT NULL))
        )
    """)
    op.execute("CREATE INDEX conversations_ring_pos ON conversations (ring_pos)")

    # Members carry no foreign key to users (they live on other shards): the application
    # checks that a user exists before adding them, and user.deleted removes their memberships.
    op.execute(f"""
        CREATE TABLE conversation_members (
            conversation_id  uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            user_id          uuid        NOT NULL,
            role             text        NOT NULL CHECK (role IN ('admin', 'member')),
            joined_at        timestamptz NOT NULL DEFAULT now(),
            read_no          bigint      NOT NULL DEFAULT 0,
            read_message_id  uuid,
            {ring_pos("conversation_id")},
            PRIMARY KEY (conversation_id, user_id)
        )
    """)
    op.execute("CREATE INDEX conversation_members_user_id ON conversation_members (user_id)")
    op.execute("CREATE INDEX conversation_members_ring_pos ON conversation_members (ring_pos)")

    # The primary key (conversation_id, id) is the index a page of messages scans.
    op.execute(f"""
        CREATE TABLE messages (
            conversation_id    uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            id                 uuid        NOT NULL,
            number             bigint      NOT NULL,
            seq                bigint      NOT NULL,
            sender_id          uuid        NOT NULL,
            sender_name        text        NOT NULL,
            body               text,
            client_message_id  text        NOT NULL,
            created_at         timestamptz NOT NULL,
            edited_at          timestamptz,
            deleted_at         timestamptz,
            {ring_pos("conversation_id")},
            PRIMARY KEY (conversation_id, id),
            CONSTRAINT messages_idempotency UNIQUE (conversation_id, sender_id, client_message_id),
            CHECK ((deleted_at IS NULL) = (body IS NOT NULL))
        )
    """)
    op.execute("CREATE INDEX messages_sender_id ON messages (sender_id)")
    op.execute("CREATE INDEX messages_ring_pos ON messages (ring_pos)")

    # The frame clients receive, stored as sent (json keeps the text as is).
    op.execute(f"""
        CREATE TABLE conversation_events (
            conversation_id  uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            seq              bigint      NOT NULL,
            type             text        NOT NULL,
            frame            json        NOT NULL,
            created_at       timestamptz NOT NULL DEFAULT now(),
            {ring_pos("conversation_id")},
            PRIMARY KEY (conversation_id, seq)
        )
    """)
    op.execute("CREATE INDEX conversation_events_ring_pos ON conversation_events (ring_pos)")

    # Every column the relay writes is guarded by a sequence number (membership_seq,
    # preview_seq) or only grows (last_message_no, read_no), so applying an event twice or two
    # events out of order leaves the same row.
    op.execute(f"""
        CREATE TABLE inbox (
            user_id               uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            conversation_id       uuid        NOT NULL,
            type                  text        NOT NULL CHECK (type IN ('direct', 'group')),
            title                 text,
            peer_id               uuid,
            active                boolean     NOT NULL DEFAULT true,
            membership_seq        bigint      NOT NULL DEFAULT 0,
            last_message_no       bigint      NOT NULL DEFAULT 0,
            read_no               bigint      NOT NULL DEFAULT 0,
            preview_seq           bigint      NOT NULL DEFAULT 0,
            last_message_id       uuid,
            last_message_at       timestamptz,
            last_sender_id        uuid,
            last_sender_name      text,
            last_message_preview  text,
            activity_at           timestamptz NOT NULL,
            {ring_pos("user_id")},
            PRIMARY KEY (user_id, conversation_id)
        )
    """)
    op.execute(
        "CREATE INDEX inbox_by_activity ON inbox (user_id, activity_at DESC, conversation_id DESC) "
        "WHERE active"
    )
    op.execute("CREATE INDEX inbox_ring_pos ON inbox (ring_pos)")


def downgrade() -> None:
    op.execute("DROP TABLE inbox")
    op.execute("DROP TABLE conversation_events")
    op.execute("DROP TABLE messages")
    op.execute("DROP TABLE conversation_members")
    op.execute("DROP TABLE conversations")
