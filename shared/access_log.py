"""One canonical log line and the request metrics for every HTTP request.

A plain ASGI middleware (no BaseHTTPMiddleware: it costs a task per request).
The line carries method, path, status, event count and duration, plus the
request id (the client's ``X-Request-ID`` if it sent a usable one, else a new
one; either way the response carries it back in ``X-Request-ID``); never
the query string, headers, bodies or scores (invariant 9).
Handlers add fields by setting ``request.state.log_fields`` (a dict).
Probe endpoints log at DEBUG so health checks do not drown the INFO stream.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Protocol

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROBES = frozenset({"/healthz", "/readyz", "/metrics"})


class RequestObserver(Protocol):
    def observe_request(self, endpoint: str, status: int, duration: float) -> None: ...


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id" and 0 < len(value) <= 64 and value.isascii():
            return str(value.decode())
    return uuid.uuid4().hex


class CanonicalLog:
    """Logs one line per request and feeds ``metrics``; exceptions still log (as 500)."""

    def __init__(
        self, app: ASGIApp, metrics: RequestObserver | None = None, logger: str = "backtrack.http"
    ) -> None:
        self.app = app
        self.metrics = metrics
        self._log = structlog.get_logger(logger)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        state = scope.setdefault("state", {})
        fields: dict[str, Any] = {"count": 0}
        state["log_fields"] = fields
        request_id = _request_id(scope)

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # the id to quote when asking about this request: it is on its log line
                headers = [*message.get("headers", ()), (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_status)
        finally:
            duration = time.perf_counter() - start
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            if self.metrics is not None:
                self.metrics.observe_request(endpoint, status, duration)
            log = self._log.debug if endpoint in PROBES and status < 500 else self._log.info
            log(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round(duration * 1000, 2),
                **fields,
            )
            structlog.contextvars.clear_contextvars()
