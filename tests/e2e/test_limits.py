"""Limits on every service over real HTTP: body caps before parsing, per-token rate limits."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from services.cli.stack import Stack
from shared.auth import issue, verify
from shared.keys import Keys
from shared.rate_limit import RateLimits, bucket_key
from tests.bench.flood import figures, flooding, pain, served
from tests.e2e.conftest import SECRET

HUGE = 48 * 1024 * 1024
CHUNK = 1024 * 1024
#: Where each service takes a JSON body without asking who sends it first.
TARGETS = {
    "ingest": ("ingest_url", "/v1/events/batch"),
    "prescriber": ("clinic_url", "/v1/subscriptions"),
    "channels": ("channels_url", "/v1/subscriptions"),
}
DEVICE_RATE = RateLimits().ingest_device


def _huge_json() -> bytes:
    """48 MB of one JSON object, a long list of short ids: costly to hold and to parse."""
    head, tail = b'{"url": "https://clinic.example/hook", "user_ids": [', b'"p-0"]}'
    item = b'"p-00000",'
    return head + item * ((HUGE - len(head) - len(tail)) // len(item)) + tail


def _status_kib(pid: int) -> dict[str, int]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {
        name: int(value.split()[0])
        for name, _, value in (line.partition(":") for line in lines)
        if name in ("VmRSS", "VmHWM")
    }


def _reset_peak(pid: int) -> bool:
    """Reset the process's peak RSS (VmHWM) to its current RSS, if the kernel lets us."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _chunks(body: bytes) -> Iterator[bytes]:
    for start in range(0, len(body), CHUNK):
        yield body[start : start + CHUNK]


@pytest.mark.parametrize("mode", ["content-length", "chunked"])
@pytest.mark.parametrize("service", sorted(TARGETS))
def test_a_huge_body_without_a_token_is_refused_without_being_held(
    stack: Stack, service: str, mode: str
) -> None:
    """48 MB posted without a token is 401 or 413, and the process's peak RSS grows < 10 MB."""
    pid = stack.processes[service].pid
    attribute, path = TARGETS[service]
    body = _huge_json()
    exact = _reset_peak(pid)
    before = _status_kib(pid)["VmRSS" if exact else "VmHWM"]
    content = body if mode == "content-length" else _chunks(body)
    reply = httpx.post(
        getattr(stack, attribute) + path,
        content=content,
        headers={"Content-Type": "application/json"},
        timeout=120,
    )
    after = _status_kib(pid)
    grew_mb = (after["VmHWM"] - before) / 1024
    how = "peak reset first" if exact else "peak so far"
    print(
        f"{service} {mode}: {reply.status_code}, peak RSS {before / 1024:.0f} ->"
        f" {after['VmHWM'] / 1024:.0f} MB (+{grew_mb:.1f} MB; {how}),"
        f" RSS now {after['VmRSS'] / 1024:.0f} MB"
    )
    assert grew_mb < 10
    assert reply.status_code in (401, 413)
    if reply.status_code == 413:
        assert reply.json()["detail"].startswith("body larger than")


def _device(user: str) -> tuple[str, dict[str, str]]:
    token = issue("device", user, SECRET)
    return token, {"Authorization": f"Bearer {token}"}


def _bucket(stack: Stack, token: str) -> tuple[float, int]:
    """The token's ingest bucket as stored: (tokens, ms of the last update)."""
    key = bucket_key("ingest", verify(token, SECRET))
    with redis.Redis.from_url(stack.redis_url) as client:
        tokens, ts = client.hmget(key, "tokens", "ts")
    return float(tokens), int(ts)


def _stored(stack: Stack, user: str) -> int:
    with redis.Redis.from_url(stack.redis_url) as client:
        return int(client.xlen(Keys(stack.settings.partitions).history(user)))


def _batch(stack: Stack, headers: dict[str, str], events: list[Any]) -> httpx.Response:
    url = f"{stack.ingest_url}/v1/events/batch"
    return httpx.post(url, json={"events": events}, headers=headers, timeout=30)


def test_a_flooding_device_is_refused_while_another_is_served(stack: Stack) -> None:
    """One device's flood gets 429 with Retry-After; other devices' events go through meanwhile."""
    quiet = [served(stack, f"calm-{i}") for i in range(5)]
    token, headers = _device("flooder")
    with flooding(stack.ingest_url, token, "flooder", requests=30_000) as flood:
        busy = [served(stack, f"busy-{i}") for i in range(5)]
    print(f"\nquiet: {figures(quiet)}\nflood: {figures(busy)}")
    print(f"flooder: {flood.requests:,} requests in {flood.seconds:.1f} s: {dict(flood.statuses)}")
    assert set(flood.statuses) == {202, 429}
    accepted = flood.statuses[202]
    allowed = DEVICE_RATE.burst + DEVICE_RATE.per_second * flood.seconds
    assert DEVICE_RATE.burst <= accepted <= allowed
    assert _stored(stack, "flooder") == accepted  # nothing of a 429 was stored
    # what the flooder sees next: its bucket refills 5 a second, far from a full batch
    refused = _batch(stack, headers, [pain("flooder") for _ in range(500)])
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert _stored(stack, "flooder") == accepted
    for i in range(5):  # everyone else's change is readable by them
        _, theirs = _device(f"busy-{i}")
        url = f"{stack.clinic_url}/v1/users/busy-{i}/prescription"
        assert httpx.get(url, headers=theirs).json()["version"] == 1


def test_a_batch_costs_one_token_per_event_and_is_refused_whole(stack: Stack) -> None:
    """400 then 500 events take 900 tokens; another 500 do not fit: 429, none of them stored."""
    token, headers = _device("cost-1")
    assert _batch(stack, headers, [pain("cost-1") for _ in range(400)]).status_code == 202
    first, first_at = _bucket(stack, token)
    assert first == DEVICE_RATE.burst - 400
    assert _batch(stack, headers, [pain("cost-1") for _ in range(500)]).status_code == 202
    second, second_at = _bucket(stack, token)
    refill = (second_at - first_at) * DEVICE_RATE.per_second / 1000
    assert second == pytest.approx(min(DEVICE_RATE.burst, first + refill) - 500)
    refused = _batch(stack, headers, [pain("cost-1") for _ in range(500)])
    assert refused.status_code == 429, "500 tokens came back: more than 80 s between requests?"
    left, _ = _bucket(stack, token)
    assert int(refused.headers["Retry-After"]) == math.ceil((500 - left) / DEVICE_RATE.per_second)
    assert _stored(stack, "cost-1") == 900
    assert _batch(stack, headers, [pain("cost-1") for _ in range(50)]).status_code == 202


def _week_offline(user: str) -> list[dict[str, Any]]:
    """What a phone logs in a week without a connection: 141 events, oldest first."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=7)
    first = {"event_id": str(uuid.uuid4()), "type": "RehabStarted", "user_id": user}
    first |= {"occurred_at": start.isoformat(), "onset_date": str(start.date()), "cause": "gradual"}
    events = [first]
    for day in range(7):
        for hour in range(20):  # a pain score an hour while awake
            at = start + timedelta(days=day, hours=4 + hour, minutes=1)
            context = "morning" if hour == 0 else "baseline"
            events.append(pain(user) | {"occurred_at": at.isoformat(), "context": context})
    return events


def test_a_week_of_offline_events_is_accepted(stack: Stack) -> None:
    """A phone back online after a week posts 141 events in batches of 50: every one stored."""
    _, headers = _device("week-1")
    events = _week_offline("week-1")
    assert len(events) == 141
    for start in range(0, len(events), 50):
        reply = _batch(stack, headers, events[start : start + 50])
        assert reply.status_code == 202, reply.text
        assert {r.get("status") for r in reply.json()["results"]} == {"accepted"}
    assert _stored(stack, "week-1") == len(events)
