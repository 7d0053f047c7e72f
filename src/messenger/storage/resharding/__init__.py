"""Online resharding: what moves when shards join or leave the ring (docs/resharding.md)."""
