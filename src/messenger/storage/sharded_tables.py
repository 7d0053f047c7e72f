"""The registry of sharded tables: each one's placement key, the text the ring hashes.

Resharding moves a table's rows by `ring_pos`, the stored position of this key; a table that
carries `ring_pos` and is missing here would be left behind on the old shard, so the plan
refuses to run (`missing_from_registry`) and a test checks the registry against the schema.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ShardedTable:
    name: str
    placement_key: str
    """The SQL expression whose text `ring_pos` hashes (a column, or the outbox's aggregate key)."""
    primary_key: tuple[str, ...]


SHARDED_TABLES: tuple[ShardedTable, ...] = (
    ShardedTable("users", "id", ("id",)),
    ShardedTable("accounts", "user_id", ("id",)),
    ShardedTable("users_accounts", "user_id", ("user_id", "account_id")),
    ShardedTable("username_claims", "username", ("username",)),
    ShardedTable("email_claims", "email", ("email",)),
    ShardedTable("refresh_tokens", "user_id", ("id",)),
    ShardedTable("follows", "follower_id", ("follower_id", "followee_id")),
    ShardedTable("followers", "followee_id", ("followee_id", "follower_id")),
    ShardedTable("inbox", "user_id", ("user_id", "conversation_id")),
    ShardedTable("conversations", "id", ("id",)),
    ShardedTable("conversation_members", "conversation_id", ("conversation_id", "user_id")),
    ShardedTable("messages", "conversation_id", ("conversation_id", "id")),
    ShardedTable("conversation_events", "conversation_id", ("conversation_id", "seq")),
    ShardedTable("outbox", "split_part(aggregate, ':', 2)", ("id",)),
)
"""Parents before children, so a copy or a clean-up in this order meets foreign keys in order."""

TABLES_BY_NAME = {t.name: t for t in SHARDED_TABLES}

RING_POS_TABLES_SQL = """
SELECT c.relname
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE a.attname = 'ring_pos' AND NOT a.attisdropped
  AND n.nspname = current_schema()
  AND c.relkind IN ('r', 'p') AND NOT c.relispartition
ORDER BY c.relname
"""
"""The tables of a shard's schema that carry `ring_pos` (partitions are their parent's)."""


def missing_from_registry(tables_with_ring_pos: list[str]) -> list[str]:
    """The tables that carry `ring_pos` but that the registry does not list."""
    return sorted(set(tables_with_ring_pos) - set(TABLES_BY_NAME))
