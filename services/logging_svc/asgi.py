"""The two ingest POSTs served as plain ASGI, in front of FastAPI's routing.

Per request, FastAPI's routing, dependency solving and exception middleware
cost more CPU than validating and appending the event. ``DirectRoutes`` sits
inside the canonical request log and answers ``POST /v1/events`` and
``POST /v1/events/batch`` itself, calling the same handlers as the FastAPI
routes, which stay registered: they are what ``/openapi.json`` describes, and
they serve the requests if this middleware is left out. Everything else
(other paths and methods, 405s, redirects) goes to FastAPI unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import HTTPException
from fastapi.exception_handlers import http_exception_handler
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

#: ``handler(scope, receive, authorization, content_length) -> Response``; raises HTTPException.
Handler = Callable[[Scope, Receive, str | None, str], Awaitable[Response]]


async def read_body(receive: Receive, content_length: str, limit: int) -> bytes:
    """The body, refusing (413) more than ``limit`` bytes whatever Content-Length claims."""
    if content_length.isdigit() and int(content_length) > limit:
        raise HTTPException(413, f"body larger than {limit} bytes")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        if message["type"] != "http.request":
            continue
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"body larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _headers(scope: Scope) -> tuple[str | None, str]:
    """The first Authorization and Content-Length values, as Starlette's ``Headers.get``."""
    authorization: str | None = None
    length: str | None = None
    for name, value in scope["headers"]:
        if name == b"authorization" and authorization is None:
            authorization = value.decode("latin-1")
        elif name == b"content-length" and length is None:
            length = value.decode("latin-1")
    return authorization, length or ""


class DirectRoutes:
    """Serve ``routes`` (POST path -> (route, handler)) without FastAPI's per-request machinery.

    ``scope["route"]`` is set to the documented route, so the request log and
    metrics name the same endpoint; HTTPExceptions become FastAPI's response
    for them (``{"detail": ...}`` and the exception's headers).
    """

    def __init__(self, app: ASGIApp, routes: Mapping[str, tuple[Any, Handler]]) -> None:
        self.app = app
        self.routes = dict(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = None
        if scope["type"] == "http" and scope["method"] == "POST":
            target = self.routes.get(_route_path(scope))
        if target is None:
            await self.app(scope, receive, send)
            return
        route, handler = target
        scope["route"] = route
        try:
            response = await handler(scope, receive, *_headers(scope))
        except HTTPException as exc:
            response = await http_exception_handler(Request(scope, receive), exc)
        await response(scope, receive, send)


__all__ = ["DirectRoutes", "Handler", "read_body"]
