"""`messenger demo chat`: two users chatting live against a running server.

Registers two accounts, signs both in, opens their direct conversation, connects a WebSocket
for each and has them talk (typing indicators, messages, a read marker, an edit), printing what
each socket receives. Then Bob drops off, Alice writes on, and Bob reconnects and resumes from
his last seq: he gets exactly what he missed, in order.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
import typer
import websockets

from messenger.cli.console import console, fail

demo = typer.Typer(help="Demonstrations against a running server.", no_args_is_help=True)
PASSWORD = "demo-password-1"


def register(app: typer.Typer) -> None:
    app.add_typer(demo, name="demo")


@dataclass
class Person:
    name: str
    user_id: str
    token: str
    colour: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@demo.command()
def chat(
    base_url: Annotated[str, typer.Option("--base-url", help="The API (messenger serve).")] = "http://127.0.0.1:8080",
    messages: Annotated[int, typer.Option(help="Messages each of them sends.", min=1, max=20)] = 3,
) -> None:
    """Two users chat live; every frame each socket receives is printed."""
    try:
        asyncio.run(_chat(base_url.rstrip("/"), messages))
    except (httpx.HTTPError, OSError, websockets.WebSocketException) as exc:
        fail(f"cannot talk to {base_url}: {exc} (is `messenger serve` running?)")


async def _chat(base: str, count: int) -> None:
    ws_base = base.replace("http://", "ws://").replace("https://", "wss://")
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        alice = await _person(http, "Alice", "magenta")
        bob = await _person(http, "Bob", "cyan")
        opened = await _ok(http.post("/api/v1/conversations", json={"type": "direct", "user_id": bob.user_id},
                                     headers=alice.headers))
        cid = opened["conversation"]["id"]
        console.print(f"direct conversation [bold]{cid}[/]\n")
        last_seq: dict[str, int] = {}
        async with websockets.connect(f"{ws_base}/api/v1/ws?access_token={alice.token}") as ws_a, \
                websockets.connect(f"{ws_base}/api/v1/ws?access_token={bob.token}") as ws_b:
            readers = [asyncio.create_task(_print_frames(p, ws, last_seq)) for p, ws in ((alice, ws_a), (bob, ws_b))]
            last_message = None
            for i in range(count):
                for speaker, socket, line in ((alice, ws_a, f"Hi Bob! ({i + 1})"), (bob, ws_b, f"Hello Alice ({i + 1})")):
                    await socket.send(json.dumps({"type": "typing", "conversation_id": cid}))
                    await asyncio.sleep(0.3)
                    last_message = await _send(http, speaker, cid, line)
                    await asyncio.sleep(0.3)
            assert last_message is not None
            await _ok(http.post(f"/api/v1/conversations/{cid}/read", json={"message_id": last_message["id"]},
                                headers=alice.headers))
            await _ok(http.patch(f"/api/v1/conversations/{cid}/messages/{last_message['id']}",
                                 json={"body": "Hello Alice (edited)"}, headers=bob.headers))
            await asyncio.sleep(0.5)
            for task in readers:
                task.cancel()
        bob_seq = last_seq.get(bob.name, 0)
        console.print(f"\n[bold]Bob goes offline[/] after seq {bob_seq}; Alice writes on.\n")
        for line in ("Are you there?", "Call me when you are back"):
            await _send(http, alice, cid, line)
        async with websockets.connect(f"{ws_base}/api/v1/ws?access_token={bob.token}&resume=1") as ws_b:
            await ws_b.send(json.dumps({"type": "resume", "conversations": {cid: bob_seq}}))
            console.print(f"[bold]Bob reconnects[/] and resumes after seq {bob_seq}:")
            while True:
                frame = json.loads(await asyncio.wait_for(ws_b.recv(), 10))
                _show(bob, frame)
                if frame["type"] == "resumed":
                    break
        inbox = await _ok(http.get("/api/v1/me/conversations", headers=bob.headers))
        for entry in inbox["items"]:
            console.print(f"\nBob's inbox: {entry['last_message_preview']!r}, {entry['unread_count']} unread")


async def _person(http: httpx.AsyncClient, name: str, colour: str) -> Person:
    handle = f"{name.lower()}{uuid.uuid4().hex[:8]}"
    await _ok(http.post("/api/v1/accounts", json={
        "username": handle, "email": f"{handle}@example.com", "password": PASSWORD,
        "first_name": name, "last_name": "Demo",
    }))
    tokens = await _ok(http.post("/api/v1/auth/login", json={"login": handle, "password": PASSWORD}))
    console.print(f"[{colour}]{name}[/] registered as {handle} ({tokens['user_id']})")
    return Person(name, tokens["user_id"], tokens["access_token"], colour)


async def _send(http: httpx.AsyncClient, person: Person, cid: str, body: str) -> dict[str, Any]:
    started = time.perf_counter()
    message = await _ok(http.post(f"/api/v1/conversations/{cid}/messages",
                                  json={"body": body, "client_message_id": uuid.uuid4().hex}, headers=person.headers))
    console.print(f"[{person.colour}]{person.name}[/] sent {body!r} ({(time.perf_counter() - started) * 1000:.0f} ms)",
                  highlight=False)
    return message


async def _print_frames(person: Person, socket: Any, last_seq: dict[str, int]) -> None:
    async for raw in socket:
        frame = json.loads(raw)
        if "seq" in frame:
            last_seq[person.name] = frame["seq"]
        _show(person, frame)


def _show(person: Person, frame: dict[str, Any]) -> None:
    kind = frame["type"]
    if kind in ("message.created", "message.edited", "message.deleted"):
        m = frame["message"]
        text = f"{kind} seq={frame['seq']} {m['sender_name']}: {m['body']!r}"
    elif kind == "typing":
        text = f"typing ({frame['user_id'][:8]}…)"
    else:
        text = json.dumps(frame)[:160]
    console.print(f"  [{person.colour}]{person.name}'s socket[/] <- {text}", highlight=False)


async def _ok(request: Any) -> dict[str, Any]:
    response: httpx.Response = await request
    if response.status_code >= 400:
        raise httpx.HTTPStatusError(f"{response.status_code}: {response.text}", request=response.request, response=response)
    return response.json()  # type: ignore[no-any-return]
