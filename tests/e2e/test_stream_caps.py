"""Open SSE streams are capped per clinic across processes: 429 past the cap, a closed one frees.

The stack here runs with ``BACKTRACK_SSE_MAX_STREAMS_PER_CLINIC=2``; the
stream endpoint is served by both the clinic port (prescriber) and the
channels port, and the two count together.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest
import redis

from services.cli.stack import Stack
from shared.auth import issue
from shared.settings import Settings
from tests.e2e.conftest import SECRET, stack_settings
from tests.redis_server import RedisEndpoint

CLINIC, OTHER = "clinic-cap", "clinic-cap-other"
CAP = 2


@pytest.fixture(scope="module")
def capped(redis_server: RedisEndpoint) -> Iterator[Stack]:
    """The three services with a per-clinic cap of two open streams, on a flushed test Redis."""
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    settings = stack_settings(redis_server.url, sse_max_streams_per_clinic=CAP)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("BACKTRACK_SSE_MAX_STREAMS_PER_CLINIC", str(CAP))
        running = Stack(settings, quiet=True).start()
    try:
        yield running
    finally:
        running.stop()


def _auth(role: str, subject: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue(role, subject, SECRET)}"}  # type: ignore[arg-type]


def _enrol(stack: Stack, user: str, clinic: str) -> None:
    url = f"{stack.clinic_url}/v1/enrolments"
    reply = httpx.post(url, json={"user_id": user}, headers=_auth("clinic", clinic), timeout=10)
    assert reply.status_code == 201, reply.text


def _open(streams: ExitStack, base: str, user: str, headers: dict[str, str]) -> httpx.Response:
    """Open a stream and, if it was admitted, read its first frame; the stream stays open."""
    url = f"{base}/v1/users/{user}/prescriptions/stream"
    reply = streams.enter_context(httpx.stream("GET", url, headers=headers, timeout=10))
    if reply.status_code == 200:
        chunks = reply.iter_raw()
        assert next(chunks).startswith(b"retry:")
        # a dropped reader would close the stream: keep it until the stack closes
        streams.callback(chunks.close)
    else:
        reply.read()
    return reply


def _open_when_free(
    streams: ExitStack, base: str, user: str, headers: dict[str, str], timeout: float = 10
) -> float:
    """Open a stream of ``user`` as soon as one is admitted (kept open); seconds it took."""
    started = time.monotonic()
    while True:
        with ExitStack() as attempt:
            if _open(attempt, base, user, headers).status_code == 200:
                streams.enter_context(attempt.pop_all())
                return time.monotonic() - started
        assert time.monotonic() - started < timeout, "the closed stream's slot never came back"
        time.sleep(0.05)


def test_streams_over_the_clinic_cap_get_429_and_a_closed_one_frees_its_slot(
    capped: Stack,
) -> None:
    """Two streams of a clinic open on two processes; the third is 429; closing one lets it in."""
    _enrol(capped, "cap-1", CLINIC)
    _enrol(capped, "cap-2", OTHER)
    clinic = _auth("clinic", CLINIC)
    with ExitStack() as first, ExitStack() as second:
        assert _open(first, capped.clinic_url, "cap-1", clinic).status_code == 200
        assert _open(second, capped.channels_url, "cap-1", clinic).status_code == 200
        with ExitStack() as third:
            over = _open(third, capped.clinic_url, "cap-1", clinic)
            assert over.status_code == 429
            assert int(over.headers["Retry-After"]) >= 1
            refused = _open(third, capped.channels_url, "cap-1", clinic)
            assert refused.status_code == 429
            other = _open(third, capped.channels_url, "cap-2", _auth("clinic", OTHER))
            assert other.status_code == 200  # another clinic has its own cap
        first.close()
        waited = _open_when_free(second, capped.channels_url, "cap-1", clinic)
        print(f"a closed stream's slot was free again after {waited:.2f} s")
        with ExitStack() as again:
            assert _open(again, capped.clinic_url, "cap-1", clinic).status_code == 429


def test_a_device_has_its_own_cap(capped: Stack) -> None:
    """A device opens up to sse_max_streams_per_user streams of its user; one more is 429."""
    _enrol(capped, "cap-3", "clinic-cap-3")
    device = _auth("device", "cap-3")
    per_user = Settings().sse_max_streams_per_user
    with ExitStack() as streams:
        for i in range(per_user):
            base = capped.clinic_url if i % 2 else capped.channels_url
            assert _open(streams, base, "cap-3", device).status_code == 200
        assert _open(streams, capped.clinic_url, "cap-3", device).status_code == 429
        # the clinic's streams are counted apart from its patients' own
        clinic = _auth("clinic", "clinic-cap-3")
        assert _open(streams, capped.clinic_url, "cap-3", clinic).status_code == 200
