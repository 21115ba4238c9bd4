"""Redis dies or hangs under the services: no accepted event lost, 503 not 500, all recover."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis

from services.cli.stack import Stack
from shared.auth import issue
from shared.keys import Keys
from shared.redis_server import RedisServer
from tests.e2e.conftest import stack_settings

pytestmark = pytest.mark.fault

SECRET = "fault-secret"
T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)


@contextmanager
def _stack(server: RedisServer) -> Iterator[Stack]:
    settings = stack_settings(server.url, secret=SECRET)
    with Stack(settings, quiet=True) as stack:
        yield stack


def _event(user: str, i: int) -> dict[str, Any]:
    if i == 0:
        return {
            "event_id": str(uuid.uuid4()),
            "type": "RehabStarted",
            "user_id": user,
            "occurred_at": T0.isoformat(),
            "cause": "gradual",
        }
    return {
        "event_id": str(uuid.uuid4()),
        "type": "PainLogged",
        "user_id": user,
        "occurred_at": (T0 + timedelta(hours=6 * i)).isoformat(),
        "score": 3 + i % 3,
        "context": "morning",
    }


class Poster:
    """Posts events in a loop and records every answer."""

    def __init__(self, stack: Stack, user: str) -> None:
        self.url = f"{stack.ingest_url}/v1/events"
        self.headers = {"Authorization": f"Bearer {issue('operator', None, SECRET)}"}
        self.user = user
        self.accepted: list[str] = []
        self.statuses: list[int] = []
        self.retry_after: list[str | None] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        with httpx.Client(timeout=15) as http:
            i = 0
            while not self.stop.is_set():
                event = _event(self.user, i)
                try:
                    reply = http.post(self.url, json=event, headers=self.headers)
                except httpx.HTTPError:
                    continue
                self.statuses.append(reply.status_code)
                if reply.status_code == 202:
                    self.accepted.append(event["event_id"])
                    i += 1
                else:
                    self.retry_after.append(reply.headers.get("retry-after"))
                    time.sleep(0.05)

    def __enter__(self) -> Poster:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def _logged_ids(url: str, user: str) -> set[str]:
    with redis.Redis.from_url(url) as client:
        entries = client.xrange(Keys(4).history(user))
    return {fields[b"event_id"].decode() for _, fields in entries}


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_redis_killed_mid_ingest_loses_no_accepted_event(own_redis_server: Any) -> None:
    """With appendfsync always every 202 survives a SIGKILL of Redis; clients saw 503, not 500."""
    server = own_redis_server(appendfsync="always")
    with _stack(server) as stack, Poster(stack, "fault-1") as poster:
        _wait(lambda: len(poster.accepted) > 50, 30, "no events accepted before the kill")
        server.kill()
        _wait(lambda: 503 in poster.statuses, 30, "no 503 while Redis was down")
        assert not _ready(stack.ingest_url)
        time.sleep(1.0)
        server.restart()
        before = len(poster.accepted)
        _wait(lambda: len(poster.accepted) > before + 50, 60, "ingest did not recover")
        _wait(lambda: _ready(stack.clinic_url), 30, "prescriber not ready again")
    assert 500 not in poster.statuses
    assert set(poster.statuses) <= {202, 503}
    assert all(value is not None for value in poster.retry_after)
    missing = set(poster.accepted) - _logged_ids(server.url, "fault-1")
    assert not missing, f"{len(missing)} accepted events lost"


def test_redis_unreachable_for_ten_seconds_then_everyone_catches_up(own_redis_server: Any) -> None:
    """A hung Redis (SIGSTOP, 10 s) gives 503s and unready probes; then everyone catches up."""
    server = own_redis_server()
    with _stack(server) as stack, Poster(stack, "fault-2") as poster:
        _wait(lambda: len(poster.accepted) > 20, 30, "no events accepted before the outage")
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            _wait(lambda: 503 in poster.statuses, 30, "no 503 while Redis hung")
            assert not _ready(stack.ingest_url)
            time.sleep(max(0.0, 10 - 2))
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        _wait(lambda: _ready(stack.ingest_url), 30, "ingest readiness did not come back")
        before = len(poster.accepted)
        _wait(lambda: len(poster.accepted) > before + 20, 60, "ingest did not recover")
        poster.stop.set()
        poster.thread.join(timeout=30)
        _wait(lambda: _backlog(server.url) == 0, 120, "the prescriber did not catch up")
        _wait(lambda: _ready(stack.clinic_url), 30, "prescriber not ready again")
    assert 500 not in poster.statuses
    assert not set(poster.accepted) - _logged_ids(server.url, "fault-2")


def _backlog(url: str) -> int:
    total = 0
    with redis.Redis.from_url(url) as client:
        for feed in Keys(4).feeds():
            for group in client.xinfo_groups(feed):
                if group["name"] == b"prescriber":
                    total += (group["lag"] or 0) + group["pending"]
    return total
