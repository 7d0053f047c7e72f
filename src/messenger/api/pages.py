"""The pages a person opens in a browser, served by the API process itself:

- `/` (and `/c/{conversation_id}`): the chat, plain JavaScript modules under `static/chat/`;
- `/cluster`: the operator's page (its data needs the ops token, see api/cluster.py);
- `/docs/assets/*`: Swagger UI's files from the installed swagger-ui-bundle-v2 package.

No build step and nothing from a CDN: every file a page loads comes from this server, which
the Content-Security-Policy below enforces (a page that tried a CDN would fail in the tests).
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

STATIC = Path(__file__).parent / "static"
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": PAGE_CSP,
    "Cache-Control": "no-cache",  # revalidate (ETag), so a new release is picked up at once
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def chat(_request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers=_PAGE_HEADERS, media_type="text/html; charset=utf-8")


async def cluster(_request: Request) -> Response:
    return FileResponse(STATIC / "cluster.html", headers=_PAGE_HEADERS, media_type="text/html; charset=utf-8")


routes: list[BaseRoute] = [
    Route("/", chat, methods=["GET"], name="chat"),
    Route("/c/{conversation_id}", chat, methods=["GET"], name="chat_conversation"),
    Route("/cluster", cluster, methods=["GET"], name="cluster_page"),
    Mount("/static", StaticFiles(directory=STATIC), name="static"),
    Mount("/docs/assets", StaticFiles(directory=Path(str(swagger_ui_path))), name="docs_assets"),
]
