"""Request guards: the optional API key, and a limit on the size of request bodies."""

from __future__ import annotations

import secrets
from collections.abc import Callable
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


def api_key_guard(expected: str | None) -> Callable[..., Any]:
    """A FastAPI dependency that answers 401 unless the request carries ``expected`` (no-op without a key)."""

    def check(given: str | None = Security(_key_header)) -> None:
        if expected is None:
            return
        if given is None:
            raise HTTPException(401, f"missing API key: send it in the {API_KEY_HEADER} header")
        if not secrets.compare_digest(given.encode(), expected.encode()):
            raise HTTPException(401, "wrong API key")

    return check


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
            response = JSONResponse({"detail": self.message}, status_code=413, headers={"Connection": "close"})
            return await response(scope, receive, send)
        received = 0

        async def counted() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                # an HTTPException passes FastAPI's body parsing unchanged and becomes the 413 answer
                raise HTTPException(413, self.message)
            return message

        await self.app(scope, counted, send)
