"""A minimal keep-alive HTTP/1.1 client for load: pre-built requests over raw asyncio streams.

httpx costs more CPU per request than the server under test on these 2-core
machines, so single-event ingest figures measured with it mostly measure
httpx. This client only writes bytes and reads a status line, headers and a
Content-Length body.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable


def request(host: str, port: int, path: str, body: bytes, token: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _answer(reader: asyncio.StreamReader) -> int:
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def run(
    host: str,
    port: int,
    requests: Iterable[bytes],
    connections: int,
    rate: float | None = None,
    answered: dict[int, tuple[int, float]] | None = None,
) -> tuple[list[float], list[int]]:
    """Send ``requests`` over ``connections`` keep-alive connections; latencies and statuses.

    With ``rate``, requests start on a fixed schedule (open loop), so latency
    includes any queueing the server causes. ``answered``, if given, gets each
    request's index mapped to its status and ``time.monotonic()`` at its answer.
    """
    queue = list(requests)
    latencies: list[float] = []
    statuses: list[int] = []
    started = time.perf_counter()
    index = 0

    async def worker() -> None:
        nonlocal index
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while index < len(queue):
                mine = index
                index += 1
                if rate is not None:
                    due = started + mine / rate
                    if (wait := due - time.perf_counter()) > 0:
                        await asyncio.sleep(wait)
                t0 = time.perf_counter() if rate is None else max(due, started)
                writer.write(queue[mine])
                status = await _answer(reader)
                if answered is not None:
                    answered[mine] = (status, time.monotonic())
                statuses.append(status)
                latencies.append(time.perf_counter() - t0)
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return latencies, statuses
