"""What a virtual user does, one iteration at a time, against the users API.

Every response is checked for its status and its shape (and, where the scenario knows it, its
content: the id asked for, the names just written, the order of a page). A failed check aborts
the iteration, as a real client's flow would stop, and counts as an error of its kind.

Extension point: a scenario is a name, a description and an async `step(vu)`; register new
ones in `SCENARIOS`. Messaging scenarios (send, history page, inbox, send-to-delivery delay
over WebSocket) belong here once the messaging API exists.
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
            response = await self.conn.request(method, path, payload)
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


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    step: Callable[[VirtualUser], Awaitable[None]]
    needs_known_ids: bool = True


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
    )
}
