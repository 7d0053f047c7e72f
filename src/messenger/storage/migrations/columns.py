"""Column definitions shared by migrations. Never change one: old revisions depend on it."""


def ring_pos(key: str) -> str:
    """The placement key's ring position (DESIGN.md), computed exactly as the ring does."""
    return (
        "ring_pos bigint NOT NULL GENERATED ALWAYS AS "
        f"((('x' || substr(md5({key}::text), 1, 8))::bit(32))::bigint) STORED"
    )
