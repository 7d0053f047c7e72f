"""Pages of a listing: how many items a client may ask for at once (pure, no I/O)."""

from __future__ import annotations

from messenger.domain.errors import InvalidInput

MAX_PAGE_SIZE = 100
"""The most items any keyset-paginated listing returns per page."""


def check_page_limit(limit: int, maximum: int = MAX_PAGE_SIZE) -> int:
    """`limit` when it is 1..maximum; otherwise InvalidInput naming the field."""
    if not 1 <= limit <= maximum:
        raise InvalidInput(f"limit must be between 1 and {maximum}", details={"field": "limit"})
    return limit
