"""A webhook's answer is read no further than its status: an endpoint cannot fill our memory.

The endpoint here is a raw socket server that answers 200 and then streams a
body of up to 256 MB; it counts the bytes the kernel took from it. A
dispatcher that read the body would take all of them.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from services.channels.egress import webhook_client
from services.channels.webhooks import new_secret, post

CHUNK = b"x" * 65536
LIMIT = 256 * 1024 * 1024

pytestmark = pytest.mark.anyio


async def test_an_endless_answer_is_not_read() -> None:
    sent = 0
    finished = asyncio.Event()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        with contextlib.suppress(ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % LIMIT)
            while sent < LIMIT:
                writer.write(CHUNK)
                await writer.drain()
                sent += len(CHUNK)
        writer.close()
        finished.set()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, webhook_client(timeout=10.0) as client:
        attempt = await post(
            client,
            f"http://127.0.0.1:{port}/hook",
            new_secret(),
            "msg-1",
            b"{}",
            allow_private=True,
        )
        await asyncio.wait_for(finished.wait(), 10)
    assert attempt.status == 200
    assert sent < 32 * 1024 * 1024, f"{sent:,} bytes of the answer were taken"
