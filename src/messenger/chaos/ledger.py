"""The ledger: every write the API acknowledged, and the outcome of every request.

A write counts as acknowledged only when its 2xx response was read. A write that failed
without a clear refusal (a timeout, a broken connection, a 5xx after the statement may have
run: `CommitUncertain`) may still have committed, so the ledger keeps its value as *possible*
beside the last acknowledged one: re-reading must find one of them, never anything else, and
never nothing. The sockets' side (which message each socket user saw) is kept here too, so
"missing after reconnect + resume" is a pure function of the ledger.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request: when it ended (seconds on the run's clock), what, and how."""

    at: float
    op: str
    ok: bool
    shard: str | None = None
    """The shard the error named, else the shard of the request's key; None when unknown."""
    key: str | None = None
    error: str = ""
    """Empty when ok; else e.g. `503 shard_unavailable`, `timeout`, `connect`, `stale`."""


@dataclass(slots=True)
class UserEntry:
    user_id: str
    shard: str
    phase: str
    names: tuple[str, str]
    """The last acknowledged (first_name, last_name)."""
    possible: set[tuple[str, str]] = field(default_factory=set)
    """Every value a re-read may show: the last acknowledged and any unsure write after it."""


@dataclass(frozen=True, slots=True)
class MessageEntry:
    message_id: str
    conversation_id: str
    seq: int
    body: str
    shard: str
    phase: str


class LedgerError(Exception):
    """The ledger was told something impossible (a patch of a user it never saw created)."""


class Ledger:
    def __init__(self) -> None:
        self.users: dict[str, UserEntry] = {}
        self.messages: dict[str, MessageEntry] = {}
        self.outcomes: list[Outcome] = []
        self.phase = "setup"
        """The fault under way; every acknowledged write is tagged with it."""
        self.received: dict[str, set[str]] = {}
        """Socket user id -> ids of the messages its sockets delivered (replays included)."""

    # -- requests ---------------------------------------------------------------------------

    def record(self, outcome: Outcome) -> None:
        """Outcomes arrive in time order from one event loop; kept sorted for slicing."""
        if self.outcomes and outcome.at < self.outcomes[-1].at:
            bisect.insort(self.outcomes, outcome, key=lambda o: o.at)
        else:
            self.outcomes.append(outcome)

    def outcomes_between(self, start: float, end: float) -> list[Outcome]:
        """Outcomes with start <= at < end."""
        lo = bisect.bisect_left(self.outcomes, start, key=lambda o: o.at)
        hi = bisect.bisect_left(self.outcomes, end, key=lambda o: o.at)
        return self.outcomes[lo:hi]

    # -- users ------------------------------------------------------------------------------

    def user_created(self, user_id: str, shard: str, names: tuple[str, str]) -> None:
        self.users[user_id] = UserEntry(user_id, shard, self.phase, names, {names})

    def user_patched(self, user_id: str, names: tuple[str, str]) -> None:
        entry = self._user(user_id)
        entry.names = names
        entry.possible = {names}

    def user_write_unsure(self, user_id: str, names: tuple[str, str]) -> None:
        """A patch whose outcome is unknown: it may or may not have committed."""
        self._user(user_id).possible.add(names)

    def _user(self, user_id: str) -> UserEntry:
        try:
            return self.users[user_id]
        except KeyError:
            raise LedgerError(f"user {user_id} is not in the ledger") from None

    # -- messages ---------------------------------------------------------------------------

    def message_sent(
        self, message_id: str, conversation_id: str, seq: int, body: str, shard: str
    ) -> None:
        if message_id in self.messages:  # the same send acknowledged twice (an idempotent retry)
            return
        self.messages[message_id] = MessageEntry(
            message_id, conversation_id, seq, body, shard, self.phase
        )

    def messages_by_conversation(self) -> dict[str, list[MessageEntry]]:
        grouped: dict[str, list[MessageEntry]] = {}
        for entry in self.messages.values():
            grouped.setdefault(entry.conversation_id, []).append(entry)
        for entries in grouped.values():
            entries.sort(key=lambda e: e.seq)
        return grouped

    def delivered(self, user_id: str, message_id: str) -> None:
        self.received.setdefault(user_id, set()).add(message_id)

    def missing_deliveries(
        self, members: Mapping[str, Iterable[str]], socket_users: Iterable[str]
    ) -> dict[str, list[str]]:
        """Socket user -> acknowledged messages of their conversations they never received.

        `members`: conversation id -> member user ids. Every socket starts at seq 0 of every
        conversation it is in (resume from 0), so it owes every message, whenever sent.
        """
        watching = set(socket_users)
        missing: dict[str, list[str]] = {}
        for entry in self.messages.values():
            for user in members.get(entry.conversation_id, ()):
                if user in watching and entry.message_id not in self.received.get(user, ()):
                    missing.setdefault(user, []).append(entry.message_id)
        return missing

    @property
    def writes(self) -> int:
        return len(self.users) + len(self.messages)
