"""Webhook connections go to the address that was checked: DNS rebinding, redirects, TLS names.

Real Redis, the real rx feed consumer and dispatcher, real HTTP receivers on
localhost. DNS is the attacker's part, so the tests answer lookups
themselves (``socket.getaddrinfo``, which every lookup in the process goes
through: the URL check's and, when a client connects to a name, the
client's). The test machine's network reaches loopback only
(``LoopbackOnly``): a connection to any other address fails without
leaving the machine, and is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from faststream.redis import RedisBroker
from redis.asyncio import Redis

from services.channels.dispatcher import Dispatcher, log_key
from services.channels.egress import webhook_client
from services.channels.feed import ensure_groups, subscribe_webhook_channel
from services.channels.options import ChannelSettings
from services.channels.subscriptions import SubscriptionCreated, SubscriptionLog
from services.channels.webhooks import new_secret, post
from shared.keys import DLQ, Keys
from shared.redis_store import RedisStore
from shared.settings import Settings
from tests.integration.events_factory import make_change, make_started
from tests.tls_certs import Authority
from tests.webhook_receiver import Receiver, receiver_factory

pytestmark = pytest.mark.anyio
Start = Callable[..., Receiver]
REAL_GETADDRINFO = socket.getaddrinfo
PUBLIC = "93.184.216.34"


class Resolver:
    """Answers lookups of the names in ``answers`` (each a list: the n-th lookup of a name
    gets its n-th address, the last one ever after, TTL 0); other names go to the system."""

    def __init__(self, answers: Mapping[str, Sequence[str]]) -> None:
        self.answers = answers
        self.lookups: list[tuple[str, str]] = []

    def __call__(
        self, host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in self.answers:
            return REAL_GETADDRINFO(host, port, family, type, proto, flags)
        seen = sum(1 for looked, _ in self.lookups if looked == name)
        address = self.answers[name][min(seen, len(self.answers[name]) - 1)]
        self.lookups.append((name, address))
        number = int(port or 0)
        if ":" in address:
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, number, 0, 0))]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, number))]


class LoopbackOnly(httpx.AsyncBaseTransport):
    """The test machine's network: loopback is reached, any other address is unreachable
    (recorded in ``unreachable``; nothing is sent). A name is connected to as the client
    resolves it."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.unreachable: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        with contextlib.suppress(ValueError):
            if not ipaddress.ip_address(request.url.host).is_loopback:
                self.unreachable.append(request.url.host)
                raise httpx.ConnectError(f"{request.url.host} is unreachable", request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
def receivers() -> Iterator[Start]:
    """Real webhook receivers on localhost, stopped after the test."""
    with receiver_factory() as start:
        yield start


def _settings(redis_url: str, **overrides: Any) -> ChannelSettings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "webhook_backoff": (0.05,),  # two attempts, then the dead letter
        "webhook_timeout": 1.0,
        "webhook_lease": 3.0,
    }
    return ChannelSettings(**(values | overrides))


@contextlib.asynccontextmanager
async def _channel(
    settings: ChannelSettings, redis: Redis, store: RedisStore, client: httpx.AsyncClient
) -> AsyncIterator[Dispatcher]:
    """The rx feed consumer and the dispatcher loop, as the channels process runs them."""
    assert settings.redis_url
    keys = Keys(16)
    dispatcher = Dispatcher(redis, store, settings, client=client)
    await ensure_groups(redis, keys)
    broker = RedisBroker(settings.redis_url, logger=structlog.get_logger("faststream"))
    subscribe_webhook_channel(broker, redis, keys, "test", dispatcher)
    async with broker, dispatcher.running(interval=0.02):
        await broker.start()
        yield dispatcher


async def _subscribe(redis: Redis, url: str, receiver: Receiver) -> str:
    """A subscription of clinic-a to ``url``, appended as the subscriptions API would."""
    receiver.secret = new_secret()
    event = SubscriptionCreated(
        sub_id=f"sub_{receiver.port}",
        clinic_id="clinic-a",
        url=url,
        user_ids=None,
        secret=receiver.secret,
        occurred_at=datetime.now(UTC),
    )
    await SubscriptionLog(redis, Settings().master_keys()).append(event)
    return event.sub_id


async def _settled(redis: Redis, receiver: Receiver, within: float = 20.0) -> None:
    """Wait until the change was received or dead-lettered: nothing more will happen to it."""
    deadline = time.monotonic() + within
    while not (receiver.received or await redis.xlen(DLQ)):
        if time.monotonic() > deadline:
            raise AssertionError("the change was neither delivered nor dead-lettered")
        await asyncio.sleep(0.02)


async def _log(redis: Redis, sub_id: str) -> list[dict[bytes, bytes]]:
    entries: Any = await redis.xrange(log_key(sub_id))
    return [fields for _, fields in entries]


async def test_a_rebinding_resolver_cannot_steer_a_delivery_to_loopback(
    redis_url: str,
    redis: Redis,
    redis_store: RedisStore,
    receivers: Start,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Public to the first lookup, 127.0.0.1 to the next: no connection reaches loopback.

    Attempt 1 checks the public answer and connects to that address (unreachable
    here); attempt 2 looks up again, gets 127.0.0.1 and is refused, sending nothing.
    Both are in the delivery log (what /deliveries shows), then the dead letter.
    """
    hook = receivers()
    dns = Resolver({"rebind.test": [PUBLIC, "127.0.0.1"]})
    monkeypatch.setattr(socket, "getaddrinfo", dns)
    network = LoopbackOnly()
    await redis_store.append(make_started(user_id="u-1", clinic_id="clinic-a"))
    sub_id = await _subscribe(redis, f"http://rebind.test:{hook.port}/hook", hook)
    client = httpx.AsyncClient(transport=network)
    async with _channel(_settings(redis_url), redis, redis_store, client):
        await redis_store.append_change(make_change(1))
        await _settled(redis, hook)
    assert hook.connections == 0, "the signed change was delivered to the loopback receiver"
    assert network.unreachable == [PUBLIC]  # attempt 1 went to the address its check accepted
    log = await _log(redis, sub_id)
    assert [(f[b"attempt"], f[b"status"]) for f in log] == [(b"1", b"0"), (b"2", b"0")]
    assert log[0][b"error"].startswith(b"ConnectError")
    assert log[1][b"error"].startswith(b"unsafe url:")
    assert b"127.0.0.1" in log[1][b"error"]
    assert dns.lookups == [("rebind.test", PUBLIC), ("rebind.test", "127.0.0.1")]  # one each
    dead: Any = await redis.xrange(DLQ)
    assert len(dead) == 1
    assert dead[0][1][b"error"].startswith(b"gave up after 2 attempts: unsafe url:")


async def test_redirects_are_not_followed(
    redis_url: str, redis: Redis, redis_store: RedisStore, receivers: Start
) -> None:
    """A 307 to another address is a failed attempt: the redirect target gets no connection."""
    target = receivers()
    hop = receivers(default=307, redirect=target.url)
    await redis_store.append(make_started(user_id="u-1", clinic_id="clinic-a"))
    sub_id = await _subscribe(redis, hop.url, hop)
    settings = _settings(redis_url, webhook_allow_private=True)
    async with _channel(settings, redis, redis_store, webhook_client(1.0)):
        await redis_store.append_change(make_change(1))
        await _settled(redis, target)
    assert target.connections == 0
    assert [r.status for r in hop.received] == [307, 307]
    assert [f[b"status"] for f in await _log(redis, sub_id)] == [b"307", b"307"]


async def test_https_is_pinned_with_the_name_for_sni_and_the_certificate(
    tmp_path: Path, receivers: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """https to a checked address: the endpoint sees its own name (Host), the certificate is
    verified for that name, and a second name at the same address gets no connection that
    was verified for the first (it fails verification instead of reusing it)."""
    ca = Authority.create(tmp_path)
    hook = receivers(tls=ca.issue("hooks", dns=("hooks.test",)).pair, host="hooks.test")
    dns = Resolver({"hooks.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    monkeypatch.setattr(socket, "getaddrinfo", dns)
    hook.secret = new_secret()
    body = make_change(1).model_dump_json().encode()
    async with webhook_client(2.0, verify=ca.context()) as client:
        first = await post(client, hook.url, hook.secret, "m-1", body, allow_private=True)
        other = f"https://other.test:{hook.port}/hook"
        second = await post(client, other, hook.secret, "m-2", body, allow_private=True)
    assert (first.status, first.error) == (200, "")
    assert [(r.host, r.verified) for r in hook.received] == [(f"hooks.test:{hook.port}", True)]
    assert second.status == 0
    assert "CERTIFICATE_VERIFY_FAILED" in second.error
    assert [name for name, _ in dns.lookups] == ["hooks.test", "other.test"]  # one per attempt
