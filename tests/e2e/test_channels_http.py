"""The channels process over HTTP: subscriptions API, scopes, SSE resume, kill -9.

``python -m services.channels`` runs as a real process against the test
Redis; webhook receivers are real HTTP servers on localhost that verify
every signature with the ``standardwebhooks`` package.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson
import pytest
from redis import Redis as SyncRedis

from services.channels.dispatcher import GROUP
from services.channels.queues import DUE
from services.cli.stack import wait_ready
from shared.auth import issue
from shared.keys import Keys
from shared.redis_server import free_port
from shared.redis_store import RedisStore, connect
from tests.integration.events_factory import make_change, make_started
from tests.webhook_receiver import Receiver, receiver_factory

SECRET = "channels-e2e-secret"
PARTITIONS = 4
Start = Callable[..., Receiver]


@pytest.fixture
def receivers() -> Iterator[Start]:
    """Real webhook receivers on localhost, stopped after the test."""
    with receiver_factory() as start:
        yield start


class Channels:
    """A ``python -m services.channels`` process on a free port."""

    def __init__(self, redis_url: str, **env: str) -> None:
        self.port = free_port()
        self.redis_url = redis_url
        self.env = {
            **os.environ,
            "BACKTRACK_REDIS_URL": redis_url,
            "BACKTRACK_SECRET": SECRET,
            "BACKTRACK_PARTITIONS": str(PARTITIONS),
            "BACKTRACK_CHANNELS_PORT": str(self.port),
            "BACKTRACK_WEBHOOK_ALLOW_PRIVATE": "1",
            "BACKTRACK_WEBHOOK_BACKOFF": "[0.05, 0.05, 0.05]",
            "BACKTRACK_WEBHOOK_TIMEOUT": "1",
            "BACKTRACK_WEBHOOK_LEASE": "2",
            "BACKTRACK_CLAIM_IDLE_MS": "1000",
            "BACKTRACK_SSE_HEARTBEAT": "0.3",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Channels:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.channels"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_ready(self.url, self.process, timeout=20)
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown, nothing flushed, leases left in Redis."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


@contextmanager
def running(redis_url: str, **env: str) -> Iterator[Channels]:
    channels = Channels(redis_url, **env).start()
    try:
        yield channels
    finally:
        channels.stop()


@pytest.fixture
def channels(redis_url: str) -> Iterator[Channels]:
    """One channels process against the test Redis, stopped after the test."""
    with running(redis_url) as process:
        yield process


@pytest.fixture
def store(redis_url: str) -> Iterator[Any]:
    """A tiny synchronous writer of enrolments and changes (through the real append script)."""
    loop = asyncio.new_event_loop()
    client = connect(redis_url)
    redis_store = RedisStore(client, partitions=PARTITIONS)

    class Writer:
        def enrol(self, user: str, clinic: str = "clinic-a") -> None:
            loop.run_until_complete(
                redis_store.append(make_started(user_id=user, clinic_id=clinic))
            )

        def change(self, user: str, version: int) -> Any:
            change = make_change(version, user_id=user)
            loop.run_until_complete(redis_store.append_change(change))
            return change

    try:
        yield Writer()
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()


def _auth(role: str, subject: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue(role, subject, SECRET)}"}  # type: ignore[arg-type]


CLINIC_A, CLINIC_B = _auth("clinic", "clinic-a"), _auth("clinic", "clinic-b")


def _subscribe(base: str, hook: Receiver, headers: dict[str, str], **body: Any) -> str:
    reply = httpx.post(f"{base}/v1/subscriptions", json={"url": hook.url, **body}, headers=headers)
    assert reply.status_code == 201, reply.text
    created = reply.json()
    hook.secret = created["secret"]
    return str(created["id"])


def test_subscription_lifecycle_over_http(channels: Channels, store: Any, receivers: Start) -> None:
    """Create shows the secret once, deliveries are logged, list hides secrets, delete stops it."""
    hook = receivers()
    store.enrol("p-1")
    reply = httpx.post(f"{channels.url}/v1/subscriptions", json={"url": hook.url}, headers=CLINIC_A)
    assert reply.status_code == 201
    created = reply.json()
    assert set(created) == {"id", "secret"}
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=", created["secret"])
    hook.secret, sub_id = created["secret"], created["id"]
    change = store.change("p-1", 1)
    hook.wait(lambda r: len(r.delivered()) == 1)
    assert hook.received[0].verified
    assert hook.received[0].webhook_id == str(change.event_id)
    listed = httpx.get(f"{channels.url}/v1/subscriptions", headers=CLINIC_A).json()
    assert [s["id"] for s in listed] == [sub_id]
    assert "secret" not in listed[0]
    assert httpx.get(f"{channels.url}/v1/subscriptions", headers=CLINIC_B).json() == []
    log_url = f"{channels.url}/v1/subscriptions/{sub_id}/deliveries"
    deadline = time.monotonic() + 5
    while not (log := httpx.get(log_url, headers=CLINIC_A).json()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log[0]["status"] == 200
    assert log[0]["attempt"] == 1
    assert log[0]["event_id"] == str(change.event_id)
    assert log[0]["latency_ms"] >= 0
    assert httpx.get(log_url, headers=CLINIC_B).status_code == 404
    assert (
        httpx.delete(f"{channels.url}/v1/subscriptions/{sub_id}", headers=CLINIC_B).status_code
        == 404
    )
    assert (
        httpx.delete(f"{channels.url}/v1/subscriptions/{sub_id}", headers=CLINIC_A).status_code
        == 204
    )
    store.change("p-1", 2)
    _settled(channels.redis_url)
    assert len(hook.received) == 1


def _settled(redis_url: str, within: float = 15) -> None:
    """Wait until the channels process can deliver nothing more: every rx feed entry read and
    acknowledged by its webhook group, and no delivery queued or leased (the due set empty)."""
    client = SyncRedis.from_url(redis_url)
    deadline = time.monotonic() + within
    while True:
        busy = client.zcard(DUE)
        for feed in Keys(PARTITIONS).rxfeeds():
            for group in client.xinfo_groups(feed):
                if group["name"] == GROUP.encode():
                    busy = busy or group["lag"] or group["pending"]
        if not busy:
            client.close()
            return
        assert time.monotonic() < deadline, "the channels did not settle"
        time.sleep(0.05)


def test_subscription_scopes(channels: Channels, store: Any) -> None:
    """Clinics subscribe only their own patients; devices never; operators name a clinic."""
    store.enrol("mine")
    store.enrol("theirs", clinic="clinic-b")
    url = f"{channels.url}/v1/subscriptions"
    hook = "http://127.0.0.1:9/hook"
    post = lambda body, headers: httpx.post(url, json=body, headers=headers)  # noqa: E731
    assert post({"url": hook, "user_ids": ["theirs"]}, CLINIC_A).status_code == 403
    assert post({"url": hook, "user_ids": ["mine", "theirs"]}, CLINIC_A).status_code == 403
    assert post({"url": hook, "user_ids": ["nobody"]}, CLINIC_A).status_code == 403
    assert post({"url": hook, "clinic_id": "clinic-b"}, CLINIC_A).status_code == 403
    assert post({"url": hook}, _auth("device", "mine")).status_code == 403
    assert httpx.get(url, headers=_auth("device", "mine")).status_code == 403
    assert post({"url": hook}, {}).status_code == 401
    assert post({"url": hook}, _auth("operator", None)).status_code == 422
    assert post({"url": hook, "clinic_id": "clinic-b"}, _auth("operator", None)).status_code == 201
    assert post({"url": hook, "user_ids": ["mine"]}, CLINIC_A).status_code == 201
    assert post({"url": "ftp://example.com/x"}, CLINIC_A).status_code == 422


def test_private_webhook_urls_are_refused_without_the_setting(redis_url: str) -> None:
    """With BACKTRACK_WEBHOOK_ALLOW_PRIVATE off, loopback and metadata URLs answer 422."""
    with running(redis_url, BACKTRACK_WEBHOOK_ALLOW_PRIVATE="0") as process:
        url = f"{process.url}/v1/subscriptions"
        for bad in (
            "http://127.0.0.1:8080/h",
            "http://169.254.169.254/latest",
            "http://[::1]/h",
            "http://10.1.2.3/h",
            "https://user:pw@example.com/h",
        ):
            reply = httpx.post(url, json={"url": bad}, headers=CLINIC_A)
            assert reply.status_code == 422, bad
            assert "webhook url refused" in reply.text


def _read_sse(
    base: str, user: str, headers: dict[str, str], count: int, last: str | None = None
) -> tuple[list[tuple[str, dict[str, Any]]], int]:
    """Open the stream, read ``count`` events (and count heartbeats), then disconnect."""
    if last:
        headers = {**headers, "Last-Event-ID": last}
    events: list[tuple[str, dict[str, Any]]] = []
    beats, ident = 0, ""
    url = f"{base}/v1/users/{user}/prescriptions/stream"
    with httpx.stream("GET", url, headers=headers, timeout=10) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        for line in reply.iter_lines():
            if line.startswith(": keep-alive"):
                beats += 1
            elif line.startswith("id: "):
                ident = line[4:]
            elif line.startswith("data: "):
                events.append((ident, orjson.loads(line[6:])))
                if len(events) == count:
                    break
    return events, beats


def test_sse_resumes_after_a_disconnect_without_gaps_or_repeats(
    channels: Channels, store: Any
) -> None:
    """Reconnecting with Last-Event-ID yields exactly the changes after it, live ones included."""
    store.enrol("s-1")
    device = _auth("device", "s-1")
    for version in (1, 2, 3):
        store.change("s-1", version)
    first, _ = _read_sse(channels.url, "s-1", device, 2)
    assert [e["version"] for _, e in first] == [1, 2]
    store.change("s-1", 4)
    timer = threading.Timer(0.8, store.change, ("s-1", 5))  # arrives while the client waits
    timer.start()
    rest, beats = _read_sse(channels.url, "s-1", CLINIC_A, 3, last=first[-1][0])
    timer.join()
    assert [e["version"] for _, e in rest] == [3, 4, 5]
    assert beats >= 1  # 0.8 s of quiet at a 0.3 s heartbeat
    ids = [i for i, _ in first + rest]
    assert len(set(ids)) == 5
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))


def test_sse_scopes(channels: Channels, store: Any) -> None:
    """The stream has the reads' scopes: another clinic's patient or another user is 403."""
    store.enrol("s-2")
    url = f"{channels.url}/v1/users/s-2/prescriptions/stream"
    assert httpx.get(url, headers=CLINIC_B).status_code == 403
    assert httpx.get(url, headers=_auth("device", "someone-else")).status_code == 403
    assert httpx.get(url).status_code == 401
    bad = {**CLINIC_A, "Last-Event-ID": "not-an-id"}
    assert httpx.get(url, headers=bad).status_code == 400


@pytest.mark.fault
def test_kill_9_during_pending_retries_loses_nothing(
    redis_url: str, store: Any, receivers: Start
) -> None:
    """A dispatcher SIGKILLed with retries pending delivers every change after a restart."""
    hook = receivers(default=500)
    users = [f"k-{i}" for i in range(4)]
    for user in users:
        store.enrol(user)
    slow = {"BACKTRACK_WEBHOOK_BACKOFF": "[0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]"}
    first = Channels(redis_url, **slow).start()
    try:
        _subscribe(first.url, hook, CLINIC_A)
        changes = [store.change(u, v) for v in (1, 2, 3) for u in users]
        hook.wait(
            lambda r: len(r.received) >= 8
        )  # every head failed at least once: retries pending
        assert hook.delivered() == []
        first.kill()
    finally:
        first.stop()
    due = SyncRedis.from_url(redis_url).zcard("bt:{wh}:due")
    assert due == len(users)
    changes += [store.change(u, 4) for u in users]  # fed while no dispatcher runs
    hook.default = 200
    with running(redis_url, **slow):
        hook.wait(
            lambda r: {x.webhook_id for x in r.delivered()} >= {str(c.event_id) for c in changes},
            timeout=20,
        )
    delivered = hook.delivered()
    assert all(r.verified for r in delivered)
    for user in users:
        versions = [r.body["version"] for r in delivered if r.body["user_id"] == user]
        assert versions == sorted(versions)
        assert set(versions) == {1, 2, 3, 4}
