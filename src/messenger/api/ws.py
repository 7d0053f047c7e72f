"""GET /api/v1/ws: the live event stream of the authenticated user (protocol in README).

One connection = one `Session` (services/live.py). Three tasks serve it: the reader (client
frames: ping, pong, typing, resume, auth), the writer (the session's queue to the socket) and the
heartbeat; a fourth closes the socket when the access token expires unless the client sent a
fresh one. Whichever ends first ends the connection with the session's close code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

import msgspec
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from messenger.api.context import context
from messenger.api.errors import error_response
from messenger.domain.errors import LiveUnavailable, MessengerError, Unauthenticated
from messenger.services.live import (
    CLOSE_HEARTBEAT_TIMEOUT,
    CLOSE_INTERNAL,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN,
    CLOSE_UNAUTHENTICATED,
    Session,
    SessionClosed,
)
from messenger.services.messaging import MessagingService
from messenger.services.tokens import AccessClaims, TokenSigner

log = logging.getLogger(__name__)

PATH = "/api/v1/ws"
MAX_RESUME_CONVERSATIONS = 1000


class Ping(msgspec.Struct, tag="ping", tag_field="type"):
    pass


class Pong(msgspec.Struct, tag="pong", tag_field="type"):
    pass


class Typing(msgspec.Struct, tag="typing", tag_field="type"):
    conversation_id: uuid.UUID


class Resume(msgspec.Struct, tag="resume", tag_field="type"):
    conversations: dict[uuid.UUID, int]
    """The seq of the last event seen, per conversation."""


class Auth(msgspec.Struct, tag="auth", tag_field="type"):
    access_token: str


ClientFrame = Ping | Pong | Typing | Resume | Auth
_decode = msgspec.json.Decoder(ClientFrame).decode


def _token(websocket: HTTPConnection) -> str | None:
    """`?access_token=` (browsers cannot set headers on a WebSocket) or `Authorization: Bearer`."""
    token = websocket.query_params.get("access_token")
    if token:
        return token
    scheme, _, value = websocket.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


class Connection:
    def __init__(self, websocket: WebSocket, session: Session, claims: AccessClaims) -> None:
        ctx = context(websocket)
        self.websocket = websocket
        self.session = session
        self.expires_at = claims.expires_at
        self.messaging: MessagingService = ctx.messaging
        self.tokens: TokenSigner = ctx.tokens
        self.heartbeat_s = ctx.settings.ws_heartbeat_s
        self.max_frame = ctx.settings.ws_max_frame_bytes
        self.resume_wait_s = ctx.settings.ws_resume_wait_s
        self.last_heard = time.monotonic()
        self.client_gone = False
        self._resuming: asyncio.Task[None] | None = None

    async def run(self) -> None:
        tasks = [
            asyncio.create_task(self._read(), name="ws-read"),
            asyncio.create_task(self._write(), name="ws-write"),
            asyncio.create_task(self._heartbeat(), name="ws-heartbeat"),
            asyncio.create_task(self._expire(), name="ws-expiry"),
            asyncio.create_task(self.session.wait_closed(), name="ws-closed"),
        ]
        helpers = [asyncio.create_task(self._release_unless_resumed(), name="ws-resume-wait")]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.error("websocket task failed", exc_info=task.exception())
                    self.session.close(CLOSE_INTERNAL, "internal error")
        finally:
            everything = [*tasks, *helpers, *([self._resuming] if self._resuming else [])]
            for task in everything:
                task.cancel()
            await asyncio.gather(*everything, return_exceptions=True)
        if not self.client_gone:
            code = self.session.close_code or 1000
            with contextlib.suppress(Exception):  # the peer may be gone or not reading
                await asyncio.wait_for(self.websocket.close(code, self.session.close_reason[:120]), 2.0)

    async def _read(self) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                self.client_gone = True
                self.session.close(int(message.get("code") or 1000), "client closed")
                return
            self.last_heard = time.monotonic()
            data = message.get("text") or message.get("bytes") or ""
            if len(data) > self.max_frame:
                self.session.close(CLOSE_TOO_BIG, f"frames are limited to {self.max_frame} bytes")
                return
            try:
                frame = _decode(data)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                self._error("invalid_frame", str(exc))
                continue
            await self._handle(frame)

    async def _handle(self, frame: ClientFrame) -> None:
        session = self.session
        if isinstance(frame, Ping):
            session.send_now({"type": "pong"})
        elif isinstance(frame, Typing):
            if session.may_type(frame.conversation_id):
                try:
                    await self.messaging.typing(session.user_id, frame.conversation_id)
                except MessengerError as exc:
                    self._error(exc.code, exc.message, conversation_id=str(frame.conversation_id))
        elif isinstance(frame, Resume):
            if self._resuming is not None and not self._resuming.done():
                self._error("resume_in_progress", "wait for the previous resume's `resumed` frame")
            elif len(frame.conversations) > MAX_RESUME_CONVERSATIONS:
                self._error("invalid_frame", f"resume at most {MAX_RESUME_CONVERSATIONS} conversations at once")
            elif any(seq < 0 for seq in frame.conversations.values()):
                self._error("invalid_frame", "a resume position is a seq, 0 or more")
            else:  # replays wait for the client to read: do not stop reading meanwhile
                self._resuming = asyncio.create_task(self._resume(frame.conversations))
        elif isinstance(frame, Auth):
            try:
                claims = self.tokens.verify_access(frame.access_token)
            except Unauthenticated as exc:
                session.close(CLOSE_UNAUTHENTICATED, exc.message)
                return
            if claims.user_id != session.user_id:
                session.close(CLOSE_UNAUTHENTICATED, "the token belongs to another user")
                return
            self.expires_at = claims.expires_at
            session.send_now({"type": "authenticated", "expires_at": claims.expires_at})
        # Pong: being heard is all it is for.

    async def _resume(self, positions: dict[uuid.UUID, int]) -> None:
        try:
            report = await self.session.resume(positions)
        except SessionClosed:
            return
        self.session.send_now(report)

    async def _write(self) -> None:
        while True:
            frame = await self.session.next_frame()
            if frame is None:
                return
            await self.websocket.send_text(frame.decode())

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            if time.monotonic() - self.last_heard > 2 * self.heartbeat_s:
                self.session.close(CLOSE_HEARTBEAT_TIMEOUT, "no frame from the client in two heartbeats")
                return
            self.session.send_now({"type": "ping"})

    async def _expire(self) -> None:
        while True:
            remaining = self.expires_at - time.time()
            if remaining <= 0:
                self.session.close(CLOSE_UNAUTHENTICATED, "access token expired: reconnect with a fresh one")
                return
            await asyncio.sleep(min(remaining, 60.0))

    async def _release_unless_resumed(self) -> None:
        """A client that said it would resume but did not: stop holding its events."""
        if not self.session.holding:
            return
        await asyncio.sleep(self.resume_wait_s)
        if self._resuming is None:
            self.session.release()

    def _error(self, code: str, message: str, **details: str) -> None:
        self.session.send_now({"type": "error", "code": code, "message": message, "details": details})


async def live(websocket: WebSocket) -> None:
    ctx = context(websocket)
    token = _token(websocket)
    await websocket.accept()
    try:
        if token is None:
            raise Unauthenticated("pass the access token as ?access_token= or Authorization: Bearer")
        claims = ctx.tokens.verify_access(token)
    except Unauthenticated as exc:
        await websocket.close(CLOSE_UNAUTHENTICATED, exc.message)
        return
    hub = ctx.hub
    holding = websocket.query_params.get("resume", "") in ("1", "true")
    session = hub.new_session(claims.user_id, hold_until_resume=holding)
    try:
        await hub.attach(session)
    except LiveUnavailable:
        await websocket.close(CLOSE_TRY_AGAIN, "live updates are unavailable right now, try again")
        return
    try:
        session.send_now({
            "type": "ready", "user_id": str(claims.user_id), "heartbeat_s": ctx.settings.ws_heartbeat_s,
            "awaiting_resume": holding,
        })
        await Connection(websocket, session, claims).run()
    finally:
        hub.detach(session)


async def not_a_handshake(request: Request) -> Response:
    """A plain GET of the socket's path: 426 Upgrade Required (RFC 9110 §15.5.22 wants the
    `Upgrade` header naming the protocol), in the JSON error shape, instead of a 404. The token
    is checked first, as on every route that needs one: 401 without a valid one."""
    token = _token(request)
    if token is None:
        raise Unauthenticated("this needs an access token: ?access_token= or Authorization: Bearer")
    context(request).tokens.verify_access(token)
    return error_response(
        426, "upgrade_required", f"{PATH} only serves WebSocket handshakes (Upgrade: websocket)",
        headers={"Upgrade": "websocket", "Connection": "Upgrade"},
    )


# The socket, and for the same path over plain HTTP the 426 (routes match by scope type).
routes = [WebSocketRoute(PATH, live, name="ws"), Route(PATH, not_a_handshake, methods=["GET"], name="ws_http")]
