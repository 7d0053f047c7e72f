"""Live delivery inside one worker: the sockets' sessions, in order and bounded.

A `Session` is what one connected socket receives, independent of the transport: frames wait
in a bounded queue for the socket's writer. Conversation events carry consecutive seqs; the
session delivers them in seq order with no gap and no repeat:

- a frame whose seq is the next one is delivered; one already delivered is dropped;
- a frame after a gap (published out of order by two workers, or lost by pub/sub) is held
  while the missing ones are read from the conversation's log, then everything goes in order;
- `resume` (a reconnecting client's last seq per conversation) replays the log after those
  positions, holding live frames of those conversations until the replay has caught up;
- the first frame of a conversation the session has no position for (seq n) is held while the
  log says what came before it: the events committed since the session started (seqs before n
  that two workers published out of order, or pub/sub lost) go first, then n. Accepting n at
  once would make a late n - 1 look "already delivered" and drop it. Events of transactions
  begun before the session started are the client's to read (history, or its resume).

Live frames that do not fit the queue mean a client that does not read: it is disconnected
(memory stays bounded). Replayed frames wait for room instead, so a long replay is paced by the
client's reading, not stored.

`LiveHub` keeps the worker's sessions by user and the bus subscriptions they need.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
import uuid
from collections import deque
from collections.abc import Coroutine, Mapping
from typing import Any, Protocol

import msgspec

from messenger.domain.conversations import LoggedEvent
from messenger.domain.errors import LiveUnavailable, MessengerError
from messenger.storage.redis.live_bus import LiveBus
from messenger.storage.redis.rate_limits import ConcurrencyLimit

log = logging.getLogger(__name__)

# Close codes (RFC 6455 and the application range), documented in README "Live delivery".
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_TOO_BIG = 1009
CLOSE_POLICY = 1008
CLOSE_INTERNAL = 1011
CLOSE_RESTART = 1012
CLOSE_TRY_AGAIN = 1013
CLOSE_UNAUTHENTICATED = 4401
CLOSE_HEARTBEAT_TIMEOUT = 4408
CLOSE_TOO_SLOW = 4429

GAP_FILL_ATTEMPTS = 5


class EventLog(Protocol):
    page_size: int

    async def after(
        self, conversation_id: uuid.UUID, user_id: uuid.UUID, after_seq: int, limit: int | None = None
    ) -> list[LoggedEvent] | None: ...

    async def after_many(
        self, user_id: uuid.UUID, positions: Mapping[uuid.UUID, int]
    ) -> dict[uuid.UUID, list[LoggedEvent]]: ...

    async def before(
        self, conversation_id: uuid.UUID, user_id: uuid.UUID, before_seq: int, since: float
    ) -> tuple[int, list[LoggedEvent]] | None: ...


class _Header(msgspec.Struct):
    type: str
    conversation_id: uuid.UUID | None = None
    seq: int | None = None
    user_id: uuid.UUID | None = None
    session_id: uuid.UUID | None = None

SESSION_REVOKED = b'"session.revoked"'
"""A control frame on a user's channel (services/sessions.py): close that session's sockets
(or all of the user's, with no session id), never forwarded to a client."""


_header = msgspec.json.Decoder(_Header)
_encode = msgspec.json.Encoder().encode


class SessionClosed(Exception):
    pass


class TooManySockets(Exception):
    """The user already has as many sockets open as allowed (across workers)."""


class GapNotFilled(Exception):
    """The log did not have events that a later live event proves committed."""


class Session:
    def __init__(
        self, user_id: uuid.UUID, log_: EventLog, *, queue_limit: int = 256, held_limit: int = 1024,
        typing_interval_s: float = 1.0, hold_until_resume: bool = False,
        session_id: uuid.UUID | None = None, typing_per_s: float = 5.0,
    ) -> None:
        self.user_id = user_id
        self.slot = uuid.uuid4().hex
        """This socket's name in its user's socket count (storage/redis ConcurrencyLimit)."""
        self.session_id = session_id
        """The access token's session (`sid`): a revocation of it closes this socket."""
        self.holding = hold_until_resume
        """Hold every conversation event until the client's resume has been served (it asked
        for that when connecting), so none reaches it ahead of the replay before it."""
        self._log = log_
        self._queue_limit = queue_limit
        self._held_limit = held_limit
        self._typing_interval_s = typing_interval_s
        self._out: deque[bytes] = deque()
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._closed = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason = ""
        self._delivered: dict[uuid.UUID, int] = {}
        self._held: dict[uuid.UUID, list[tuple[int, bytes]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._typing_sent: dict[uuid.UUID, float] = {}
        self._started = time.time()
        """Wall clock, compared with the log's created_at (the database's clock, kept in sync)."""
        # Typing frames per socket, whatever the conversation, before any lookup: a client
        # sending random conversation ids must not cost a Redis GET and a query each.
        self._typing_rate = typing_per_s
        self._typing_tokens = max(1.0, 2 * typing_per_s)
        self._typing_at = time.monotonic()

    # -- the socket's side ------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def next_frame(self) -> bytes | None:
        """The next frame to send; None once the session is closed."""
        while not self._out:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        if self.closed:
            return None
        frame = self._out.popleft()
        if len(self._out) < self._queue_limit // 2:
            self._room.set()
        return frame

    def close(self, code: int, reason: str) -> None:
        """Ask for the socket to be closed with `code` (the first reason given wins)."""
        if self.closed:
            return
        self.close_code, self.close_reason = code, reason
        self._closed.set()
        self._ready.set()
        self._room.set()
        for task in self._tasks:
            task.cancel()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def send_now(self, frame: dict[str, object]) -> None:
        """A control frame for this socket alone (pong, errors, resume reports)."""
        self._offer(_encode(frame))

    def may_type(self, conversation_id: uuid.UUID) -> bool:
        """Throttle typing indicators: one per conversation per interval per socket."""
        now = time.monotonic()
        burst = max(1.0, 2 * self._typing_rate)
        self._typing_tokens = min(burst, self._typing_tokens + (now - self._typing_at) * self._typing_rate)
        self._typing_at = now
        if self._typing_tokens < 1:
            return False
        self._typing_tokens -= 1
        if now - self._typing_sent.get(conversation_id, -1e9) < self._typing_interval_s:
            return False
        if len(self._typing_sent) > 1000:
            self._typing_sent.clear()
        self._typing_sent[conversation_id] = now
        return True

    # -- the bus's side ---------------------------------------------------------------------

    def live(self, frame: bytes) -> None:
        """A frame from the bus for this session's user."""
        if self.closed:
            return
        try:
            header = _header.decode(frame)
        except msgspec.DecodeError:
            log.warning("dropping an undecodable live frame")
            return
        if header.seq is None or header.conversation_id is None:
            self._offer(frame)
            return
        self._sequenced(header.conversation_id, header.seq, frame)

    async def resume(self, positions: Mapping[uuid.UUID, int]) -> dict[str, object]:
        """Replay each conversation's events after the client's last seen seq, then go on live.

        Returns the report for the client: each conversation's seq after the replay, and the
        conversations refused (no such conversation, or not a member).
        """
        for conversation_id, seq in positions.items():
            self._delivered[conversation_id] = seq
            self._held.setdefault(conversation_id, [])
        refused: list[uuid.UUID] = []
        try:
            first_pages = await self._log.after_many(self.user_id, positions)
            for conversation_id in positions:
                events = first_pages.get(conversation_id)
                if events is None:
                    refused.append(conversation_id)
                    self._forget(conversation_id)
                    continue
                await self._catch_up(conversation_id, events)
        except (MessengerError, GapNotFilled) as exc:
            self.close(CLOSE_TRY_AGAIN, f"resume failed, reconnect and resume again: {exc}")
            raise SessionClosed from None
        finally:
            for conversation_id in positions:
                self._held.pop(conversation_id, None)
        self.release()
        return {
            "type": "resumed",
            "conversations": {
                str(c): self._delivered[c] for c in positions if c in self._delivered
            },
            "refused": [str(c) for c in refused],
        }

    def release(self) -> None:
        """Stop holding events for a resume (served, or never sent): deliver what was held."""
        if not self.holding:
            return
        self.holding = False
        for conversation_id in [c for c, held in self._held.items() if c not in self._delivered]:
            held = sorted(self._held.pop(conversation_id))
            for seq, frame in held:
                self._sequenced(conversation_id, seq, frame)

    # -- ordering ---------------------------------------------------------------------------

    def _sequenced(self, conversation_id: uuid.UUID, seq: int, frame: bytes) -> None:
        held = self._held.get(conversation_id)
        if held is None and self.holding:
            held = self._held[conversation_id] = []
        if held is not None:  # a replay or gap fill of this conversation is under way
            if len(held) >= self._held_limit:
                self.close(CLOSE_TOO_SLOW, "too many events waiting for a replay")
                return
            heapq.heappush(held, (seq, frame))
            return
        last = self._delivered.get(conversation_id)
        if last is None and seq > 1:
            self._held[conversation_id] = [(seq, frame)]
            self._background(conversation_id, self._first(conversation_id, seq))
        elif last is None or seq == last + 1:
            self._delivered[conversation_id] = seq
            self._offer(frame)
            if _removes(frame, self.user_id):
                self._forget(conversation_id)
        elif seq > last + 1:
            self._held[conversation_id] = [(seq, frame)]
            self._background(conversation_id, self._catch_up(conversation_id, None))
        # else: delivered already (the replay had it, or the bus repeated it)

    def _background(self, conversation_id: uuid.UUID, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(self._fill(conversation_id, work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _first(self, conversation_id: uuid.UUID, seq: int) -> None:
        """Find the position before the first frame seen of a conversation (seq `seq`): the
        events before it committed since the session started go first. A replica that has not
        replayed seq - 1 yet is asked again."""
        for attempt in range(1, GAP_FILL_ATTEMPTS + 1):
            found = await self._log.before(conversation_id, self.user_id, seq, self._started)
            if found is None:  # not a member (any more): nothing before it to deliver
                self._delivered[conversation_id] = seq - 1
                await self._catch_up(conversation_id, [])
                return
            highest, events = found
            if highest >= seq - 1:
                self._delivered[conversation_id] = (events[0][0] if events else seq) - 1
                await self._catch_up(conversation_id, events)
                return
            await asyncio.sleep(0.05 * attempt)
        # The replica stays behind: start at this frame (what the session did before) rather
        # than close a socket on every first frame while a replica lags.
        log.info("no position before %s seq %d: starting there", conversation_id, seq)
        self._delivered[conversation_id] = seq - 1
        await self._catch_up(conversation_id, [])

    async def _fill(self, conversation_id: uuid.UUID, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            pass
        except SessionClosed:
            pass
        except Exception as exc:  # a shard down, say: the client reconnects and resumes
            log.info("gap fill of %s failed: %s", conversation_id, exc)
            self.close(CLOSE_TRY_AGAIN, "missed events cannot be read now: reconnect and resume")
        finally:
            self._held.pop(conversation_id, None)

    async def _catch_up(self, conversation_id: uuid.UUID, events: list[LoggedEvent] | None) -> None:
        """Deliver `events` (or the log's) after the last delivered seq, then the held live frames,
        reading the log again while a gap remains before them."""
        held = self._held[conversation_id]
        fruitless = 0
        while True:
            last = self._delivered[conversation_id]
            if events is None:
                events = await self._log.after(conversation_id, self.user_id, last)
                if events is None:  # no longer a member: the held frames are all they may see
                    for seq, frame in sorted(held):
                        if seq > last:
                            await self._put(frame)
                    self._forget(conversation_id)
                    return
            progressed = False
            for seq, frame in events:
                if seq == last + 1:
                    await self._put(frame)
                    last = self._delivered[conversation_id] = seq
                    progressed = True
            full_page = len(events) >= self._log.page_size
            events = None
            while held and held[0][0] <= last + 1:
                seq, frame = heapq.heappop(held)
                if seq == last + 1:
                    await self._put(frame)
                    last = self._delivered[conversation_id] = seq
                    progressed = True
            if not held and not full_page:
                return
            if not progressed:
                fruitless += 1
                if fruitless >= GAP_FILL_ATTEMPTS:
                    raise GapNotFilled(f"{conversation_id} after seq {last}")
                await asyncio.sleep(0.05 * fruitless)

    def _forget(self, conversation_id: uuid.UUID) -> None:
        self._delivered.pop(conversation_id, None)

    # -- the queue --------------------------------------------------------------------------

    def _offer(self, frame: bytes) -> None:
        if self.closed:
            return
        if len(self._out) >= self._queue_limit:
            self.close(CLOSE_TOO_SLOW, "the client does not read its events fast enough")
            return
        self._out.append(frame)
        self._ready.set()

    async def _put(self, frame: bytes) -> None:
        while len(self._out) >= self._queue_limit // 2:
            if self.closed:
                raise SessionClosed
            self._room.clear()
            await self._room.wait()
        if self.closed:
            raise SessionClosed
        self._out.append(frame)
        self._ready.set()


def _removes(frame: bytes, user_id: uuid.UUID) -> bool:
    header = _header.decode(frame)
    return header.type == "member.removed" and header.user_id == user_id


class LiveHub:
    """The worker's sessions by user, and the bus subscriptions they need."""

    def __init__(
        self, log_: EventLog, *, redis_url: str, timeout_s: float, queue_limit: int = 256,
        socket_slots: ConcurrencyLimit | None = None, typing_per_s: float = 5.0,
    ) -> None:
        self._log = log_
        self._queue_limit = queue_limit
        self._slots = socket_slots
        self._typing_per_s = typing_per_s
        self._sessions: dict[uuid.UUID, set[Session]] = {}
        self._subscriptions: dict[uuid.UUID, asyncio.Future[None]] = {}
        self._releasing: set[asyncio.Future[None]] = set()
        self.bus = LiveBus(
            redis_url, timeout_s=timeout_s, on_frame=self.dispatch, on_lost=self._lost
        )

    @property
    def session_count(self) -> int:
        return sum(len(s) for s in self._sessions.values())

    def sessions_of(self, user_id: uuid.UUID) -> int:
        return len(self._sessions.get(user_id, ()))

    def new_session(
        self, user_id: uuid.UUID, *, hold_until_resume: bool = False, session_id: uuid.UUID | None = None
    ) -> Session:
        return Session(
            user_id, self._log, queue_limit=self._queue_limit, hold_until_resume=hold_until_resume,
            session_id=session_id, typing_per_s=self._typing_per_s,
        )

    async def attach(self, session: Session) -> None:
        """Start delivering to `session`; returns once its user's channel is subscribed.
        Raises TooManySockets when its user is at the limit of open sockets."""
        user_id = session.user_id
        if self._slots is not None and not await self._slots.acquire(str(user_id), session.slot):
            raise TooManySockets(f"at most {self._slots.limit} sockets per user")
        self._sessions.setdefault(user_id, set()).add(session)
        subscription = self._subscriptions.get(user_id)
        if subscription is None or (subscription.done() and subscription.exception() is not None):
            subscription = asyncio.ensure_future(self.bus.subscribe(user_id))
            self._subscriptions[user_id] = subscription
        try:
            await asyncio.shield(subscription)
        except LiveUnavailable:
            self.detach(session)
            raise

    async def refresh(self, session: Session) -> None:
        """Keep the socket's slot in its user's count (each heartbeat; it lapses otherwise)."""
        if self._slots is not None:
            await self._slots.acquire(str(session.user_id), session.slot)

    def detach(self, session: Session) -> None:
        if self._slots is not None:
            task = asyncio.ensure_future(self._slots.release(str(session.user_id), session.slot))
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)
        sessions = self._sessions.get(session.user_id)
        if sessions is None:
            return
        sessions.discard(session)
        if not sessions:
            del self._sessions[session.user_id]
            subscription = self._subscriptions.pop(session.user_id, None)
            if subscription is not None and not subscription.done():
                subscription.cancel()
            self.bus.unsubscribe(session.user_id)

    def dispatch(self, user_id: uuid.UUID, frame: bytes) -> None:
        sessions = tuple(self._sessions.get(user_id, ()))
        if SESSION_REVOKED in frame[:40]:
            try:
                header = _header.decode(frame)
            except msgspec.DecodeError:
                return
            if header.type != "session.revoked":
                return
            ended = header.session_id
            for session in sessions:
                if ended is None or session.session_id == ended:
                    session.close(CLOSE_UNAUTHENTICATED, "this session has ended: sign in again")
            return
        for session in sessions:
            session.live(frame)

    async def publish(self, user_ids: list[uuid.UUID], frame: bytes) -> None:
        """Best effort: a frame the bus cannot take is still in the log, and the next event (or
        the client's resume) brings it."""
        if not user_ids:
            return
        try:
            await self.bus.publish(user_ids, frame)
        except LiveUnavailable as exc:
            log.warning("live event not published: %s", exc)

    def close_all(self, code: int, reason: str) -> None:
        for sessions in tuple(self._sessions.values()):
            for session in tuple(sessions):
                session.close(code, reason)

    async def close(self) -> None:
        self.close_all(CLOSE_GOING_AWAY, "server shutting down: reconnect and resume")
        await self.bus.close()

    def _lost(self) -> None:
        log.warning("live bus subscription lost: closing %d socket(s) for them to resume", self.session_count)
        self._subscriptions.clear()
        self.close_all(CLOSE_RESTART, "live updates were interrupted: reconnect and resume")
