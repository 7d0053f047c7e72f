"""The empty-handler ceiling: an ASGI app that answers every request with `{}` at once.

Served by the same granian setup as the API, it measures what the server and the load
generator cost per request before any of our code runs.
"""

from __future__ import annotations

from typing import Any

BODY = b"{}"
HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"2")]


async def serve_lifespan(receive: Any, send: Any) -> None:
    """Acknowledge the server's startup and shutdown (these apps own no resources)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
