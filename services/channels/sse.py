"""Server-Sent Events over a user's prescription stream (``bt:{pNN}:rx:<user>``).

Each event's ``id`` is its rx stream entry id, so a client reconnecting with
``Last-Event-ID`` resumes exactly after the last event it saw: no gap, no
repeat. A comment line (``: keep-alive``) goes out whenever nothing else has
for ``heartbeat`` seconds, so proxies keep the connection open.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from redis.asyncio import Redis

from shared.streams import text

LAST_ID = re.compile(r"\d{1,20}-\d{1,20}")
#: Well below the pool's 2 s socket timeout (shared.redis_store.connect).
MAX_BLOCK_SECONDS = 1.0


class SseStreams:
    """A cap on open streams: each holds a Redis connection while it blocks."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def admit(self) -> bool:
        if self.open >= self.limit:
            return False
        self.open += 1
        return True

    def leave(self) -> None:
        self.open = max(0, self.open - 1)


def frame(position: str, data: bytes) -> bytes:
    """One SSE event: the change JSON (a single line) under its stream id."""
    return b"id: " + position.encode() + b"\nevent: PrescriptionChanged\ndata: " + data + b"\n\n"


async def events(
    request: Request, redis: Redis, key: str, after: str, heartbeat: float
) -> AsyncIterator[bytes]:
    """Frames of every entry of ``key`` after ``after``, then new ones as they come."""
    yield b"retry: 2000\n\n"
    last, quiet_since = after, time.monotonic()
    block_ms = max(1, int(min(heartbeat, MAX_BLOCK_SECONDS) * 1000))
    while not await request.is_disconnected():
        reply: Any = await redis.xread({key: last}, count=100, block=block_ms)
        for _, entries in reply or ():
            for position, fields in entries:
                last = text(position)
                yield frame(last, bytes(fields.get(b"data", b"{}")))
                quiet_since = time.monotonic()
        if time.monotonic() - quiet_since >= heartbeat:
            yield b": keep-alive\n\n"
            quiet_since = time.monotonic()


__all__ = ["LAST_ID", "SseStreams", "events", "frame"]
