"""The chat side of a resharding run: accounts, follows, groups and messages made through the
API before the load, the ledger of every message acknowledged, and the check afterwards that
each acknowledged message is in its conversation's history exactly once.

Everything is made through the API (not bulk-loaded) so that the rows a reshard moves are what
the service itself writes: accounts and their claims, follows on both sides, conversations and
members, messages with their inbox rows, event log and outbox.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import msgspec

from messenger.bench.loadgen import Connection, RequestFailed
from messenger.bench.messaging import (
    Account,
    auth_header,
    conversations_by_member,
    create_groups,
    on_connections,
    register_accounts,
    request_json,
)
from messenger.bench.phase import Target
from messenger.bench.scenarios import CONVERSATIONS, USERS

HISTORY_PAGE = 100
"""The largest page the API serves: the check reads whole histories."""
SEED_BODY_PREFIX = "seed "


@dataclass(frozen=True, slots=True)
class Chatter:
    """An account the load sends as, and the groups it is in."""

    user_id: str
    headers: str
    conversations: tuple[str, ...]


@dataclass(slots=True)
class MessageLedger:
    """Client message ids acknowledged (201/200), by conversation, and the sends' counts. A send
    that got no answer may be in its history or not: only counted."""

    acknowledged: dict[str, set[str]] = field(default_factory=dict)
    seeded: int = 0
    sent: int = 0
    """Acknowledged during the load."""
    unanswered_sends: int = 0
    rejected: int = 0

    def acknowledge(self, conversation_id: str, client_id: str) -> None:
        self.acknowledged.setdefault(conversation_id, set()).add(client_id)

    def unanswered(self) -> None:
        self.unanswered_sends += 1


@dataclass(frozen=True, slots=True)
class ChatSetup:
    chatters: list[Chatter]
    readers: dict[str, str]
    """Conversation id -> the headers of a member, to read its history."""
    accounts: int
    follows: int
    conversations: int
    messages: int
    seconds: float


async def set_up_chat(
    target: Target,
    ledger: MessageLedger,
    *,
    accounts: int,
    group_size: int,
    follows_each: int,
    messages: int,
    timeout: float,
    note: Callable[[str], None],
    seed: int = 7,
) -> ChatSetup:
    """Accounts (signed in), each following `follows_each` others, in groups of `group_size`,
    and `messages` sent into the groups; every message goes into `ledger`."""
    started = time.perf_counter()
    rng = random.Random(seed)
    made = await register_accounts(target, accounts, timeout)
    note(f"registered and signed in {len(made):,} accounts")
    follows = await _follow(target, made, follows_each, rng, timeout)
    note(f"{follows:,} follows")
    groups = await create_groups(target, made, group_size, rng, timeout)
    note(f"{len(groups):,} groups of about {group_size}")
    member_of = conversations_by_member(groups)
    chatters = [Chatter(a.user_id, auth_header(a), tuple(member_of[a.user_id])) for a in made]
    readers = {cid: auth_header(members[0]) for cid, members in groups.items()}
    await _seed_messages(target, chatters, messages, ledger, rng, timeout, note)
    return ChatSetup(chatters, readers, len(made), follows, len(groups), ledger.seeded,
                     time.perf_counter() - started)


async def _follow(target: Target, accounts: list[Account], each: int, rng: random.Random, timeout: float) -> int:
    pairs = [
        (a, b)
        for a in accounts
        for b in [b for b in rng.sample(accounts, min(each + 1, len(accounts))) if b is not a][:each]
    ]

    async def follow(conn: Connection, pair: tuple[Account, Account]) -> None:
        follower, followee = pair
        await request_json(conn, "PUT", f"{USERS}/{followee.user_id}/follow", None, auth_header(follower))

    await on_connections(target, pairs, follow, timeout=max(timeout, 30.0))
    return len(pairs)


async def _seed_messages(
    target: Target,
    chatters: Sequence[Chatter],
    count: int,
    ledger: MessageLedger,
    rng: random.Random,
    timeout: float,
    note: Callable[[str], None],
) -> None:
    step = max(count // 10, 1)

    async def send(conn: Connection, n: int) -> None:
        chatter = rng.choice(chatters)
        cid = rng.choice(chatter.conversations)
        client_id = f"seed-{n}"
        await request_json(conn, "POST", f"{CONVERSATIONS}/{cid}/messages",
                           {"body": SEED_BODY_PREFIX + client_id, "client_message_id": client_id},
                           chatter.headers)
        ledger.acknowledge(cid, client_id)
        ledger.seeded += 1
        if ledger.seeded % step == 0:
            note(f"seeded {ledger.seeded:,} / {count:,} messages")

    await on_connections(target, range(count), send, timeout=max(timeout, 30.0))


@dataclass(slots=True)
class MessageCheck:
    conversations: int = 0
    checked: int = 0
    """Acknowledged messages looked for."""
    lost: list[str] = field(default_factory=list)
    """'<conversation>: <client id>' of each acknowledged message no history holds."""
    duplicated: list[str] = field(default_factory=list)
    """Client ids that appear more than once in one history."""
    lost_moving: int = 0
    unreadable: list[str] = field(default_factory=list)
    """Conversations whose history could not be read (each counts its messages as lost)."""


async def verify_messages(
    target: Target,
    ledger: MessageLedger,
    readers: dict[str, str],
    key_class: Callable[[str], str],
    timeout: float,
) -> MessageCheck:
    """Read every conversation's whole history through the API and look for each acknowledged
    message, and for any client id seen twice."""
    check = MessageCheck(conversations=len(ledger.acknowledged))
    check.checked = sum(len(ids) for ids in ledger.acknowledged.values())

    async def read(conn: Connection, cid: str) -> None:
        try:
            seen = await _history(conn, cid, readers[cid])
        except (RequestFailed, ValueError) as exc:
            check.unreadable.append(f"{cid}: {exc}")
            seen = {}
        missing = sorted(ledger.acknowledged[cid] - seen.keys())
        check.lost += [f"{cid}: {client_id}" for client_id in missing]
        if missing and key_class(cid) == "moving":
            check.lost_moving += len(missing)
        check.duplicated += [f"{cid}: {client_id} ×{n}" for client_id, n in seen.items() if n > 1]

    await on_connections(target, sorted(ledger.acknowledged), read, timeout=timeout)
    return check


async def _history(conn: Connection, conversation_id: str, headers: str) -> dict[str, int]:
    """Client message id -> how many times the whole history holds it."""
    seen: dict[str, int] = {}
    before = ""
    while True:
        path = f"{CONVERSATIONS}/{conversation_id}/messages?limit={HISTORY_PAGE}{before}"
        response = await conn.request("GET", path, None, headers)
        if response.status != 200:
            raise ValueError(f"GET {path} -> {response.status} {response.body[:200]!r}")
        page = msgspec.json.decode(response.body)
        for item in page["items"]:
            seen[item["client_message_id"]] = seen.get(item["client_message_id"], 0) + 1
        if not page["has_more"] or not page["items"]:
            return seen
        before = f"&before={page['items'][-1]['id']}"
