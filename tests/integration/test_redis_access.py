"""Redis as shipped admits only the services' user; over TLS it verifies the server.

Access: the deploy/redis profile started by its ``redis-start.sh``, as
compose and Kubernetes start it (``tests.shipped_redis``). TLS: a
redis-server whose only port speaks TLS (``own_redis_server(tls=...)``),
with a CA and server certificate made at test time.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import yaml
from redis.asyncio import Redis

from services.channels.feed import ensure_groups
from shared.broker import broker_for
from shared.keys import Keys
from shared.redis_server import RedisServer, Tls
from shared.redis_store import RedisStore, connect
from tests.integration.events_factory import make_change, make_pain, make_started
from tests.shipped_redis import DEPLOY, SCRIPT, USER, local_conf, shipped, start_env
from tests.tls_certs import Authority

pytestmark = pytest.mark.anyio
PASSWORD = secrets.token_hex(32)
NOAUTH = r"Authentication required|already authenticated"  # without and with HELLO (RESP3)
WRONGPASS = "invalid username-password pair or user is disabled"


@pytest.fixture
def shipped_port(tmp_path: Path) -> Iterator[int]:
    with shipped("everysec", tmp_path, PASSWORD) as port:
        yield port


async def _round_trip(client: Redis) -> None:
    """What the services do to the log: scripted appends, reads, consumer groups."""
    store = RedisStore(client, partitions=16)
    started = make_started(user_id="acl-1", clinic_id="clinic-a")
    assert (await store.append(started)).status == "accepted"
    assert (await store.append(started)).status == "duplicate"
    await store.append(make_pain(user_id="acl-1"))
    await store.append_change(make_change(1, user_id="acl-1"))
    assert [e.type for _, e in await store.history("acl-1")] == ["RehabStarted", "PainLogged"]
    assert [c.version for _, c in await store.prescriptions("acl-1")] == [1]
    assert await store.clinic_of("acl-1") == "clinic-a"
    await ensure_groups(client, Keys(16))


async def test_the_store_works_with_the_login_in_the_url(shipped_port: int) -> None:
    """redis://backtrack:PASSWORD@host: appends, reads and consumer groups all work."""
    client = connect(f"redis://{USER}:{PASSWORD}@127.0.0.1:{shipped_port}/0")
    try:
        await _round_trip(client)
    finally:
        await client.aclose()
    broker = broker_for(f"redis://{USER}:{PASSWORD}@127.0.0.1:{shipped_port}/0")
    async with broker:
        await broker.connect()
        assert await broker.ping(timeout=5)


def test_clients_without_the_password_are_refused(shipped_port: int) -> None:
    """No login: NOAUTH; the default user: off; a wrong password: WRONGPASS.

    redis-py raises both as AuthenticationError, the server's code stripped.
    """
    anonymous = redis.Redis(port=shipped_port)
    with anonymous, pytest.raises(redis.AuthenticationError, match=NOAUTH):
        anonymous.ping()  # NOAUTH
    default = redis.Redis(port=shipped_port, password=PASSWORD)
    with default, pytest.raises(redis.AuthenticationError, match=WRONGPASS):
        default.ping()
    wrong = redis.Redis(port=shipped_port, username=USER, password="wrong" * 8)
    with wrong, pytest.raises(redis.AuthenticationError, match=WRONGPASS):
        wrong.ping()


def test_the_services_user_runs_no_dangerous_command_and_touches_only_backtrack_keys(
    shipped_port: int,
) -> None:
    """FLUSHALL, KEYS, CONFIG and ACL need an operator's user; keys outside bt:* are closed."""
    with redis.Redis(port=shipped_port, username=USER, password=PASSWORD) as client:
        dangerous = [("FLUSHALL",), ("KEYS", "*"), ("CONFIG", "GET", "*"), ("ACL", "LIST")]
        for command in dangerous:
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.execute_command(*command)
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.set("elsewhere", "1")
        assert client.set("bt:probe", "1")


@pytest.mark.parametrize(
    ("password", "why"),
    [(None, "must be set"), ("short", "at least 32"), ("p@ss/" + "x" * 40, "may hold only")],
)
def test_the_start_script_refuses_a_missing_short_or_unsafe_password(
    tmp_path: Path, password: str | None, why: str
) -> None:
    """Without a usable REDIS_PASSWORD redis-server is never started."""
    done = subprocess.run(
        ["sh", str(SCRIPT), str(local_conf("everysec", tmp_path)), "--port", "0"],
        env=start_env(password),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert why in done.stderr


def test_the_compose_health_check_logs_in(shipped_port: int) -> None:
    """The compose probe (redis-cli with REDISCLI_AUTH) gets PONG from the shipped server."""
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    (probe,) = compose["services"]["redis"]["healthcheck"]["test"][1:]
    command = probe.replace("$$", "$").replace("redis-cli", f"redis-cli -p {shipped_port}")
    env = start_env(PASSWORD, REDIS_USERNAME=USER)
    assert subprocess.run(["sh", "-c", command], env=env, timeout=30, check=False).returncode == 0
    env["REDIS_PASSWORD"] = "wrong" * 8
    assert subprocess.run(["sh", "-c", command], env=env, timeout=30, check=False).returncode != 0


@pytest.fixture
def tls_redis(tmp_path: Path, own_redis_server: Callable[..., RedisServer]) -> RedisServer:
    ca = Authority.create(tmp_path)
    leaf = ca.issue("redis", dns=("localhost",), ips=("127.0.0.1",))
    return own_redis_server(tls=Tls(leaf.cert, leaf.key, ca.cert))


async def test_the_store_round_trips_over_tls_with_the_server_verified(
    tls_redis: RedisServer,
) -> None:
    """rediss:// with the CA in the URL (ssl_ca_certs): certificate and host name verified."""
    assert tls_redis.url.startswith("rediss://127.0.0.1:")
    assert "ssl_ca_certs=" in tls_redis.url
    client = connect(tls_redis.url)
    try:
        await _round_trip(client)
    finally:
        await client.aclose()
    broker = broker_for(tls_redis.url)
    async with broker:
        await broker.connect()
        assert await broker.ping(timeout=5)


async def test_tls_refuses_a_server_the_ca_did_not_sign(
    tls_redis: RedisServer, tmp_path: Path
) -> None:
    """Verification is on: with another CA in the URL the connection is refused."""
    (tmp_path / "other").mkdir()
    other = Authority.create(tmp_path / "other")
    url = tls_redis.url.split("?", 1)[0] + f"?ssl_ca_certs={other.cert}"
    client = connect(url)
    try:
        with pytest.raises(redis.exceptions.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.ping()
    finally:
        await client.aclose()


def test_a_plain_connection_to_the_tls_port_fails(tls_redis: RedisServer) -> None:
    """redis:// (no TLS) to the TLS port gets no answer: the server speaks only TLS."""
    plain = redis.Redis(port=tls_redis.port, socket_timeout=2)
    refused = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
    with plain, pytest.raises(refused):
        plain.ping()
