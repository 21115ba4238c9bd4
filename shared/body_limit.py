"""A cap on request bodies, applied before anything reads or parses them.

A plain ASGI middleware (no BaseHTTPMiddleware), placed in front of the
routes, so it runs before authentication and before FastAPI reads a body. A
request whose ``Content-Length`` is over the cap is answered 413 at once: the
app is never called and nothing of the body is read (the server discards
it). A body without ``Content-Length`` (chunked) is counted as it is
received; the read that passes the cap raises ``BodyTooLarge``, an
``HTTPException`` that the app's own handler answers as 413 in its usual
error shape (``{"detail": "body larger than N bytes"}``), so no more than the
cap plus one chunk is ever held.
"""

from __future__ import annotations

import orjson
from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    """413: the request body is over ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"body larger than {limit} bytes")


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


async def _refuse(send: Send, limit: int) -> None:
    body = orjson.dumps({"detail": f"body larger than {limit} bytes"})
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuses (413) request bodies over ``max_bytes``, by header first, else as they stream."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        length = _content_length(scope)
        if length is not None:
            # the server reads exactly Content-Length bytes: nothing to count
            if length > limit:
                await _refuse(send, limit)
            else:
                await self.app(scope, receive, send)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            # the app let it through (its handler normally answers it): answer here
            if started:
                raise
            await _refuse(send, limit)


__all__ = ["BodyLimit", "BodyTooLarge"]
