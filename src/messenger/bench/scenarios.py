"""What a virtual user does, one iteration at a time, against the users API.

Every response is checked for its status and its shape (and, where the scenario knows it, its
content: the id asked for, the names just written, the order of a page). A failed check aborts
the iteration, as a real client's flow would stop, and counts as an error of its kind.

Extension point: a scenario is a name, a description and an async `step(vu)`; register new
ones in `SCENARIOS`. The messaging scenario (send, history page, inbox) steps a `MessagingUser`
(signed in, with its conversations); a scenario with `kind="messaging"` is run by
`messenger.bench.messaging.run_messaging_phase`, which registers the accounts, creates the
groups and opens the WebSockets that measure send-to-delivery delay before the timed part.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import msgspec

from messenger.bench.loadgen import Connection, Recorder, RequestFailed

USERS = "/api/v1/users"
CONVERSATIONS = "/api/v1/conversations"
INBOX = "/api/v1/me/conversations"
BENCH_BODY_PREFIX = "bench "
"""Every benchmark message body is this prefix and its client_message_id (the delivery key)."""
MESSAGE_FIELDS = ("id", "conversation_id", "sender_id", "client_message_id", "created_at")
PAGE_LIMIT = 20
FIRST_NAMES = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken")
LAST_NAMES = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson")
USER_FIELDS = ("id", "first_name", "last_name", "created_at", "updated_at")

Validator = Callable[[Any], str | None]
"""Returns what is wrong with a decoded body, or None when it is right."""


class StepAborted(Exception):
    """A request in the iteration failed (already recorded); the iteration stops."""


_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def user_problem(
    obj: Any, *, user_id: str | None = None, names: tuple[str, str] | None = None
) -> str | None:
    """What is wrong with a user body, if anything."""
    if not isinstance(obj, dict):
        return "user is not an object"
    for key in USER_FIELDS:
        if not isinstance(obj.get(key), str):
            return f"user field {key!r} missing or not a string"
    try:
        uuid.UUID(obj["id"])
    except ValueError:
        return f"user id {obj['id']!r} is not a UUID"
    if user_id is not None and obj["id"] != user_id:
        return f"asked for {user_id}, got {obj['id']}"
    if names is not None and (obj["first_name"], obj["last_name"]) != names:
        return f"names {obj['first_name']!r} {obj['last_name']!r}, expected {names!r}"
    return None


def page_problem(obj: Any, *, limit: int, after: str | None = None) -> str | None:
    """What is wrong with a list page (ascending order), if anything."""
    if not isinstance(obj, dict) or not isinstance(obj.get("items"), list):
        return "page has no items list"
    cursor = obj.get("next_cursor")
    if cursor is not None and not isinstance(cursor, str):
        return "next_cursor is neither a string nor null"
    items = obj["items"]
    if len(items) > limit:
        return f"{len(items)} items on a page of {limit}"
    previous = uuid.UUID(after) if after else None
    for item in items:
        if problem := user_problem(item):
            return problem
        current = uuid.UUID(item["id"])
        if previous is not None and current <= previous:
            return "page items out of order or repeated"
        previous = current
    return None


@dataclass
class VirtualUser:
    """One simulated client: its connection, its random stream and the ids it created."""

    number: int
    conn: Connection
    recorder: Recorder
    known_ids: Sequence[str]
    """Existing users to read (sampled before the run; never deleted by any scenario)."""
    rng: random.Random
    own_ids: list[str] = field(default_factory=list)
    cursor: str | None = None
    last_id: str | None = None
    headers: str = ""
    """Extra request header lines (the messaging scenario's Authorization)."""

    async def call(
        self,
        op: str,
        method: str,
        path: str,
        body: Any = None,
        *,
        expect: int = 200,
        validate: Validator | None = None,
    ) -> Any:
        """Send one request, record its outcome, return the decoded body (or raise StepAborted)."""
        payload = None if body is None else _encoder.encode(body)
        started = time.perf_counter()
        try:
            response = await self.conn.request(method, path, payload, self.headers)
        except RequestFailed as failure:
            self.recorder.failure(op, failure, None, time.perf_counter())
            raise StepAborted from None
        now = time.perf_counter()
        latency = now - started
        if response.status != expect:
            detail = f"{method} {path} -> {response.status} {response.body[:120]!r}"
            self.recorder.failure(op, RequestFailed("status", detail), latency, now)
            raise StepAborted
        decoded = None
        if validate is not None:
            try:
                decoded = _decoder.decode(response.body)
                problem = validate(decoded)
            except msgspec.DecodeError:
                problem = f"body is not JSON: {response.body[:80]!r}"
            if problem is not None:
                self.recorder.failure(op, RequestFailed("validation", problem), latency, now)
                raise StepAborted
        self.recorder.success(op, latency, now)
        return decoded

    def random_names(self) -> tuple[str, str]:
        return (self.rng.choice(FIRST_NAMES), f"{self.rng.choice(LAST_NAMES)}-{self.number}")

    def known_id(self) -> str:
        return self.rng.choice(self.known_ids)

    # The operations scenarios are made of.

    async def get(self, user_id: str | None = None, names: tuple[str, str] | None = None) -> None:
        uid = user_id or self.known_id()
        await self.call(
            "get",
            "GET",
            f"{USERS}/{uid}",
            validate=lambda b: user_problem(b, user_id=uid, names=names),
        )

    async def create(self) -> tuple[str, tuple[str, str]]:
        names = self.random_names()
        body = {"first_name": names[0], "last_name": names[1]}
        user = await self.call(
            "create",
            "POST",
            USERS,
            body,
            expect=201,
            validate=lambda b: user_problem(b, names=names),
        )
        self.own_ids.append(user["id"])
        return user["id"], names

    async def update(self, user_id: str) -> tuple[str, str]:
        names = self.random_names()
        body = {"first_name": names[0], "last_name": names[1]}
        await self.call(
            "update",
            "PUT",
            f"{USERS}/{user_id}",
            body,
            validate=lambda b: user_problem(b, user_id=user_id, names=names),
        )
        return names

    async def patch(self, user_id: str) -> None:
        first = self.rng.choice(FIRST_NAMES)
        await self.call(
            "patch",
            "PATCH",
            f"{USERS}/{user_id}",
            {"first_name": first},
            validate=lambda b: (
                user_problem(b, user_id=user_id)
                or (None if b["first_name"] == first else "patched first_name not applied")
            ),
        )

    async def delete(self, user_id: str) -> None:
        await self.call("delete", "DELETE", f"{USERS}/{user_id}", expect=204)
        if user_id in self.own_ids:
            self.own_ids.remove(user_id)

    async def list_page(self) -> None:
        """Fetch the next page of the listing, restarting from the top after the last one."""
        path = f"{USERS}?limit={PAGE_LIMIT}&order=asc"
        if self.cursor:
            path += f"&cursor={quote(self.cursor, safe='')}"
        after = self.last_id if self.cursor else None
        page = await self.call(
            "list", "GET", path, validate=lambda b: page_problem(b, limit=PAGE_LIMIT, after=after)
        )
        self.cursor = page.get("next_cursor")
        self.last_id = page["items"][-1]["id"] if page["items"] else None
        if not self.cursor:
            self.cursor = self.last_id = None


def message_problem(
    obj: Any, *, conversation_id: str, body: str | None = None, client_id: str | None = None
) -> str | None:
    """What is wrong with a message body, if anything."""
    if not isinstance(obj, dict):
        return "message is not an object"
    for key in MESSAGE_FIELDS:
        if not isinstance(obj.get(key), str):
            return f"message field {key!r} missing or not a string"
    if obj["conversation_id"] != conversation_id:
        return f"message of {obj['conversation_id']}, expected {conversation_id}"
    if not isinstance(obj.get("number"), int) or not isinstance(obj.get("seq"), int):
        return "message number/seq missing"
    if body is not None and obj.get("body") != body:
        return f"message body {obj.get('body')!r}, expected {body!r}"
    if client_id is not None and obj["client_message_id"] != client_id:
        return "client_message_id not echoed"
    return None


def history_problem(obj: Any, *, conversation_id: str, limit: int) -> str | None:
    """What is wrong with a history page (newest first), if anything."""
    if not isinstance(obj, dict) or not isinstance(obj.get("items"), list):
        return "history page has no items list"
    if not isinstance(obj.get("has_more"), bool):
        return "history has_more is not a boolean"
    items = obj["items"]
    if len(items) > limit:
        return f"{len(items)} messages on a page of {limit}"
    previous = None
    for item in items:
        if problem := message_problem(item, conversation_id=conversation_id):
            return problem
        if previous is not None and uuid.UUID(item["id"]) >= previous:
            return "history not newest first"
        previous = uuid.UUID(item["id"])
    return None


def inbox_problem(obj: Any, *, limit: int) -> str | None:
    """What is wrong with an inbox page, if anything."""
    if not isinstance(obj, dict) or not isinstance(obj.get("items"), list):
        return "inbox has no items list"
    cursor = obj.get("next_cursor")
    if cursor is not None and not isinstance(cursor, str):
        return "inbox next_cursor is neither a string nor null"
    if len(obj["items"]) > limit:
        return f"{len(obj['items'])} inbox entries on a page of {limit}"
    for entry in obj["items"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("conversation_id"), str):
            return "inbox entry without conversation_id"
        if not isinstance(entry.get("unread_count"), int) or entry["unread_count"] < 0:
            return "inbox entry unread_count missing or negative"
    return None


def _no_delivery_tracking(
    conversation_id: str, client_id: str, started: float, completed: float
) -> None:
    """The default: sends are not followed to the sockets."""


@dataclass
class MessagingUser(VirtualUser):
    """A virtual user signed in as one account, sending into the groups it belongs to."""

    user_id: str = ""
    conversations: Sequence[str] = ()
    sent: Callable[[str, str, float, float], None] = _no_delivery_tracking
    """Told each send's conversation, client_message_id, start and completion (perf_counter)."""

    async def send(self) -> None:
        cid = self.rng.choice(self.conversations)
        client_id = uuid.uuid4().hex
        body = BENCH_BODY_PREFIX + client_id
        started = time.perf_counter()
        await self.call(
            "send",
            "POST",
            f"{CONVERSATIONS}/{cid}/messages",
            {"body": body, "client_message_id": client_id},
            expect=201,
            validate=lambda b: (
                message_problem(b, conversation_id=cid, body=body, client_id=client_id)
                or (None if b["sender_id"] == self.user_id else "sender_id is not the sender")
            ),
        )
        self.sent(cid, client_id, started, time.perf_counter())

    async def history(self) -> None:
        cid = self.rng.choice(self.conversations)
        await self.call(
            "history",
            "GET",
            f"{CONVERSATIONS}/{cid}/messages?limit={PAGE_LIMIT}",
            validate=lambda b: history_problem(b, conversation_id=cid, limit=PAGE_LIMIT),
        )

    async def inbox(self) -> None:
        await self.call(
            "inbox",
            "GET",
            f"{INBOX}?limit={PAGE_LIMIT}",
            validate=lambda b: inbox_problem(b, limit=PAGE_LIMIT),
        )


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    step: Callable[[VirtualUser], Awaitable[None]]
    needs_known_ids: bool = True
    kind: str = "users"
    """users: run by `run_phase`; messaging: by `run_messaging_phase` (accounts, sockets)."""


async def _smoke(vu: VirtualUser) -> None:
    await vu.call("health", "GET", "/health")
    user_id, names = await vu.create()
    await vu.get(user_id, names)
    await vu.list_page()
    await vu.delete(user_id)


async def _crud(vu: VirtualUser) -> None:
    user_id, names = await vu.create()
    await vu.get(user_id, names)
    names = await vu.update(user_id)
    await vu.get(user_id, names)
    await vu.delete(user_id)


async def _read(vu: VirtualUser) -> None:
    await vu.get()


async def _create(vu: VirtualUser) -> None:
    await vu.create()


async def _read_heavy(vu: VirtualUser) -> None:
    r = vu.rng.random()
    if r < 0.80:
        await vu.get()
    elif r < 0.95:
        await vu.create()
    else:
        await vu.list_page()


async def _write_heavy(vu: VirtualUser) -> None:
    r = vu.rng.random()
    if r < 0.20:
        await vu.get()
    elif r < 0.70 or not vu.own_ids:
        await vu.create()
    elif r < 0.90:
        await vu.patch(vu.rng.choice(vu.own_ids))
    else:
        await vu.delete(vu.rng.choice(vu.own_ids))


async def _browse(vu: VirtualUser) -> None:
    await vu.list_page()


async def _mixed(vu: VirtualUser) -> None:
    r = vu.rng.random()
    if r < 0.80 or (r >= 0.92 and not vu.own_ids):
        await vu.get()
    elif r < 0.92:
        await vu.create()
    elif r < 0.98:
        await vu.patch(vu.rng.choice(vu.own_ids))
    else:
        await vu.delete(vu.rng.choice(vu.own_ids))


async def _messaging(vu: VirtualUser) -> None:
    assert isinstance(vu, MessagingUser)
    r = vu.rng.random()
    if r < 0.60:
        await vu.send()
    elif r < 0.85:
        await vu.history()
    else:
        await vu.inbox()


async def _empty(vu: VirtualUser) -> None:
    await vu.call("empty", "GET", "/")


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("smoke", "health, create, get, list page, delete", _smoke, False),
        Scenario("crud", "create, get, update, get, delete; every body checked", _crud, False),
        Scenario("read", "100 % get by id (the select-only ceiling's counterpart)", _read),
        Scenario("create", "100 % create (the single-row insert ceiling's counterpart)", _create),
        Scenario("read-heavy", "80 % get by id, 15 % create, 5 % list page", _read_heavy),
        Scenario("write-heavy", "20 % get, 50 % create, 20 % patch, 10 % delete", _write_heavy),
        Scenario("browse", "walk the listing page by page with cursors", _browse, False),
        Scenario("mixed", "80 % reads / 20 % writes: the seed's headline mix", _mixed),
        Scenario("empty", "GET / on the empty-handler ceiling app", _empty, False),
        Scenario(
            "messaging",
            "60 % send, 25 % history page, 15 % inbox; send-to-WebSocket delivery delay",
            _messaging,
            False,
            "messaging",
        ),
    )
}
