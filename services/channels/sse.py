"""Server-Sent Events over a user's prescription stream (``bt:{pNN}:rx:<user>``).

Each event's ``id`` is its rx stream entry id, so a client reconnecting with
``Last-Event-ID`` resumes exactly after the last event it saw: no gap, no
repeat. A comment line (``: keep-alive``) goes out whenever nothing else has
for ``heartbeat`` seconds, so proxies keep the connection open.

Access is held over time (invariant 9): the reader's right to the stream is
checked again before every event sent and at least every ``recheck`` seconds
while nothing comes, so a token that expires (or is revoked) or a patient
transferred to another clinic ends the stream within ``recheck`` seconds,
with a last comment (``: closed: <why>``) saying why.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import Request
from redis.asyncio import Redis

from shared import sealing
from shared.data_keys import DataKeys
from shared.streams import text

LAST_ID = re.compile(r"\d{1,20}-\d{1,20}")
#: Well below the pool's 2 s socket timeout (shared.redis_store.connect).
MAX_BLOCK_SECONDS = 1.0
#: Why the reader may no longer read the stream, or None while it still may.
Access = Callable[[], Awaitable[str | None]]


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


def closing(reason: str) -> bytes:
    """The last frame of a stream whose reader lost access: a comment saying why."""
    return b": closed: " + " ".join(reason.split()).encode() + b"\n\n"


async def events(
    request: Request,
    redis: Redis,
    key: str,
    after: str,
    heartbeat: float,
    *,
    access: Access,
    recheck: float,
    data_keys: DataKeys | None = None,
) -> AsyncIterator[bytes]:
    """Frames of every entry of ``key`` after ``after``, then new ones as they come, for as
    long as ``access`` allows: it is asked before each event and at least every
    ``recheck`` seconds, and the stream ends (after ``closing``) when it refuses."""
    yield b"retry: 2000\n\n"
    last, quiet_since = after, time.monotonic()
    checked = quiet_since
    longest = min(heartbeat, MAX_BLOCK_SECONDS, recheck)
    while not await request.is_disconnected():
        # wake in time for the next check, never block for good (block=0 would)
        wait = min(longest, checked + recheck - time.monotonic())
        reply: Any = await redis.xread({key: last}, count=100, block=max(1, int(wait * 1000)))
        for _, entries in reply or ():
            for position, fields in entries:
                if refused := await access():
                    yield closing(refused)
                    return
                checked = quiet_since = time.monotonic()
                last = text(position)
                opened = fields
                if data_keys is not None and sealing.is_sealed(fields):
                    [opened] = await data_keys.open_many([fields])
                    if isinstance(opened, Exception):  # erased meanwhile (or damaged)
                        yield closing("the patient's data can no longer be read")
                        return
                yield frame(last, bytes(opened.get(b"data", b"{}")))
        if time.monotonic() - checked >= recheck:
            if refused := await access():
                yield closing(refused)
                return
            checked = time.monotonic()
        if time.monotonic() - quiet_since >= heartbeat:
            yield b": keep-alive\n\n"
            quiet_since = time.monotonic()


__all__ = ["LAST_ID", "Access", "SseStreams", "closing", "events", "frame"]
