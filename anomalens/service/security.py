"""Request guards, each an ASGI middleware that answers before the request's body is read: the optional API key,
and a limit on the size of request bodies."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Container
from typing import Any

from fastapi import HTTPException, Security
from fastapi.security import APIKeyHeader
from starlette.responses import JSONResponse

API_KEY_HEADER = "X-API-Key"
# declared as a security scheme, so that the OpenAPI spec (and /docs) shows the key and how to send it
_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="needed on every endpoint except /health when the service has a key",
)


def api_key_declared(_: str | None = Security(_key_header)) -> None:
    """Declares the key on the routes that need it (the OpenAPI spec); ``ApiKeyGuard`` checks it."""


def _refusal(status: int, detail: str) -> JSONResponse:
    # the body may still be on its way: closing the connection is what leaves it unread
    return JSONResponse({"detail": detail}, status_code=status, headers={"Connection": "close"})


class ApiKeyGuard:
    """ASGI middleware: 401 unless the request carries ``expected`` in the X-API-Key header, except on
    ``open_paths`` and under ``open_prefix``; the key is checked on the headers alone, so a request without it
    is answered before its body is read (no upload of a stranger is parsed or written to a temporary file).

    Every other path needs the key, unknown ones too: a new endpoint is guarded unless it is opened here.
    """

    def __init__(self, app: Any, expected: str, open_paths: Container[str], open_prefix: str):
        self.app, self.expected, self.open_paths, self.open_prefix = app, expected.encode(), open_paths, open_prefix

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in self.open_paths or path.startswith(self.open_prefix):
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(API_KEY_HEADER.lower().encode())
        if given is None:
            return await _refusal(401, f"missing API key: send it in the {API_KEY_HEADER} header")(scope, receive, send)
        if not secrets.compare_digest(given, self.expected):
            return await _refusal(401, "wrong API key")(scope, receive, send)
        await self.app(scope, receive, send)


class BodySizeLimit:
    """ASGI middleware: 413 (saying ``message``) for a body over ``limit_for(path)`` bytes, declared or streamed.

    A declared Content-Length is refused before anything is read; a chunked body is counted as it arrives
    and stopped at the limit, so an upload never fills the disk or memory first.
    """

    def __init__(self, app: Any, limit_for: Callable[[str], int], message: str):
        self.app, self.limit_for, self.message = app, limit_for, message

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await _refusal(413, self.message)(scope, receive, send)
        received = 0

        async def counted() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                # an HTTPException passes FastAPI's body parsing unchanged and becomes the 413 answer
                raise HTTPException(413, self.message, headers={"Connection": "close"})
            return message

        await self.app(scope, counted, send)
