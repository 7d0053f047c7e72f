"""The errors the domain and services raise; the API maps each to one HTTP status."""

from __future__ import annotations


class MessengerError(Exception):
    """Base of every error a client may see."""

    code: str = "error"

    def __init__(self, message: str, *, details: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class InvalidInput(MessengerError):
    code = "invalid_input"


class NotFound(MessengerError):
    code = "not_found"


class Conflict(MessengerError):
    code = "conflict"


class Unauthenticated(MessengerError):
    code = "unauthenticated"


class Forbidden(MessengerError):
    code = "forbidden"


class RateLimited(MessengerError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, details={"retry_after": retry_after})
        self.retry_after = retry_after


class LimiterUnavailable(MessengerError):
    """A limit that must hold (sign-in, password changes) cannot be checked: Redis is down.
    Refusing is the safe answer; the client retries shortly."""

    code = "rate_limiter_unavailable"

    def __init__(self, limit: str) -> None:
        super().__init__(
            "sign-in is unavailable right now (its rate limit cannot be checked), try again shortly",
            details={"limit": limit},
        )


class ShardUnavailable(MessengerError):
    """A shard (or the role of it a request needs) cannot be reached in time."""

    code = "shard_unavailable"

    def __init__(self, shard: str, role: str = "primary", reason: str = "") -> None:
        message = f"{shard} {role} is unavailable" + (f": {reason}" if reason else "")
        super().__init__(message, details={"shard": shard, "role": role})
        self.shard = shard
        self.role = role


class CommitUncertain(ShardUnavailable):
    """The shard failed at or after COMMIT (the reply lost, the position read after it failing):
    the transaction may have committed. A caller must not undo what depends on it having failed
    (e.g. release a registration's claims); what it wrote is settled later from the shard."""

    def __init__(self, shard: str, reason: str = "") -> None:
        super().__init__(shard, "primary", reason)
        self.details["commit"] = "unknown"


class RangeMoved(ShardUnavailable):
    """A write met the resharding fence: the key's range moved to another shard (this process
    has adopted the new topology since, but a transaction's body cannot be replayed) or is
    frozen for a switch longer than a request may wait. Nothing was written; a retry lands on
    the shard that owns the key now."""

    code = "range_moved"

    def __init__(self, shard: str, reason: str = "", *, frozen: bool = False) -> None:
        super().__init__(shard, "primary", reason or "the key's ring range is moving to another shard")
        self.details["retryable"] = True
        self.frozen = frozen
        """The range is held for a switch (wait and retry on the same shard), not owned any more."""


class ShardBusy(MessengerError):
    """This worker had no free connection to a shard within the wait bound: overload, not an
    outage. The shard itself may be fine; the client should retry later."""

    code = "shard_busy"

    def __init__(self, shard: str, role: str, waited_s: float) -> None:
        super().__init__(
            f"{shard} {role} is busy: no connection free within {waited_s:g} s",
            details={"shard": shard, "role": role},
        )
        self.shard = shard
        self.role = role


class LiveUnavailable(Exception):
    """The live bus (Redis) cannot be reached: no socket can be served right now.

    Not a MessengerError: no HTTP request sees it; the WebSocket route closes with 1013."""
