"""A real HTTP webhook receiver on localhost for the channel tests.

Each receiver is a tiny Starlette app served by uvicorn in a thread on a free
port. It verifies every request's signature with the ``standardwebhooks``
package (independent of our signing code), records it, and answers from a
script of status codes (then ``default``), optionally after hanging, or with
``Location: redirect`` when one is given. It counts the TCP connections it
accepts (``connections``), and serves https with ``tls`` (a certificate and
key) under the name ``host``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from shared.redis_server import free_port


@dataclass
class Received:
    webhook_id: str
    body: dict[str, Any]
    status: int
    verified: bool
    at: float
    host: str = ""


@dataclass
class Receiver:
    script: list[int] = field(default_factory=list)
    default: int = 200
    hang: float = 0.0
    secret: str | None = None
    received: list[Received] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    redirect: str | None = None
    tls: tuple[str, str] | None = None
    host: str = "127.0.0.1"
    connections: int = 0

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}/hook"

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        try:
            Webhook(self.secret or "whsec_AAAA").verify(body, dict(request.headers))
            verified = True
        except WebhookVerificationError:
            verified = False
        status = self.script.pop(0) if self.script else self.default
        parsed = orjson.loads(body)
        self.received.append(
            Received(
                request.headers["webhook-id"],
                parsed,
                status,
                verified,
                time.monotonic(),
                request.headers.get("host", ""),
            )
        )
        if self.hang:
            await asyncio.sleep(self.hang)
        if self.redirect is not None:
            return Response(status_code=status, headers={"location": self.redirect})
        return Response(status_code=status)

    def delivered(self) -> list[Received]:
        """Requests answered 2xx, in arrival order."""
        return [r for r in self.received if 200 <= r.status < 300]

    def wait(self, check: Any, timeout: float = 10.0) -> None:
        """Block until ``check(self)`` is true, or fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not check(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"receiver timed out; got {len(self.received)} requests")
            time.sleep(0.02)


def _counting(receiver: Receiver) -> type[H11Protocol]:
    """uvicorn's h11 protocol, counting each accepted connection on ``receiver``."""

    class Counting(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            receiver.connections += 1
            super().connection_made(transport)

    return Counting


def serve(receiver: Receiver) -> Generator[Receiver, None, None]:
    """Run ``receiver`` until the generator is closed."""
    app = Starlette(routes=[Route("/hook", receiver._hook, methods=["POST"])])
    cert, key = receiver.tls or (None, None)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=receiver.port,
        http=_counting(receiver),
        ssl_certfile=cert,
        ssl_keyfile=key,
        log_config=None,  # leave the process's logging as the tests configured it
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("webhook receiver did not start")
        time.sleep(0.01)
    try:
        yield receiver
    finally:
        server.should_exit = True
        thread.join(timeout=5)


@contextmanager
def receiver_factory() -> Iterator[Callable[..., Receiver]]:
    """A factory of running receivers, all stopped on exit (tests wrap it in a fixture)."""
    running: list[Generator[Receiver, None, None]] = []

    def start(**options: Any) -> Receiver:
        gen = serve(Receiver(**options))
        running.append(gen)
        return next(gen)

    try:
        yield start
    finally:
        for gen in running:
            gen.close()
