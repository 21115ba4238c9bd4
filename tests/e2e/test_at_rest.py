"""Health data at rest: nothing of a patient's events is readable in Redis or its AOF.

A whole stack (ingest, prescriber, channels) on a Redis of its own with AOF on.
A clinic enrols a patient whose device posts a distinctive run of pain scores
and whose clinician writes a note carrying a marker; a webhook subscription
to an endpoint that refuses every connection keeps the patient's changes
queued. Once the prescriber has caught up, every key's DUMP and every AOF
file hold the patient's id (the readable envelope: proof the data got there)
and none of the marker, the note, or any score.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from services.cli.stack import Stack
from shared.auth import issue
from shared.keys import PRESCRIBER_GROUP, Keys
from shared.redis_server import free_port
from tests.e2e.conftest import SECRET, stack_settings
from tests.redis_server import RedisServer

CLINIC, USER = "clinic-rest", "rest-patient-5c1e"
MARKER = "zebra-marker-8e41"
NOTE = f"flare after moving house; {MARKER}; sleeps on the sofa"
#: a run no two events share: 9, 1, 8, 2, 7, 3, 6, 4, 5, 0
SCORES = [9, 1, 8, 2, 7, 3, 6, 4, 5, 0]
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=15)
Headers = dict[str, str]


def _auth(token: str) -> Headers:
    return {"Authorization": f"Bearer {token}"}


def _event(kind: str, day: float, **fields: Any) -> dict[str, Any]:
    at = (T0 + timedelta(days=day)).isoformat()
    return {"event_id": str(uuid.uuid4()), "type": kind, "user_id": USER, "occurred_at": at} | (
        fields
    )


@pytest.fixture
def sealed_stack(own_redis_server: Callable[..., RedisServer]) -> Iterator[tuple[Stack, Path]]:
    """The three services on a Redis of their own (AOF on); yields it and the AOF directory."""
    server = own_redis_server()
    settings = stack_settings(server.url, webhook_allow_private=True)
    with Stack(settings, quiet=True) as running:
        yield running, server.directory


def _caught_up(stack: Stack, within: float = 30) -> None:
    keys = Keys(stack.settings.partitions)
    deadline = time.monotonic() + within
    with redis.Redis.from_url(stack.redis_url) as client:
        while any(
            group["lag"] or group["pending"]
            for feed in keys.feeds()
            for group in client.xinfo_groups(feed)
            if group["name"] == PRESCRIBER_GROUP.encode()
        ):
            assert time.monotonic() < deadline, "the prescriber did not catch up"
            time.sleep(0.05)


def _post(stack: Stack, events: list[dict[str, Any]], headers: Headers) -> None:
    url = f"{stack.ingest_url}/v1/events/batch"
    reply = httpx.post(url, json={"events": events}, headers=headers, timeout=10)
    assert reply.status_code == 202, reply.text


def _wait_queued(stack: Stack, within: float = 20) -> None:
    """Until a webhook queue holds one of the patient's changes."""
    deadline = time.monotonic() + within
    with redis.Redis.from_url(stack.redis_url) as client:
        while not list(client.scan_iter(match=f"bt:{{wh}}:q:*:{USER}")):
            assert time.monotonic() < deadline, "no change was queued for the webhook"
            time.sleep(0.05)


def test_no_plaintext_of_a_patient_in_any_key_or_the_aof(
    sealed_stack: tuple[Stack, Path],
) -> None:
    stack, directory = sealed_stack
    clinic = _auth(issue("clinic", CLINIC, SECRET))
    hook = {"url": f"http://127.0.0.1:{free_port()}/hook"}  # nothing listens: stays queued
    reply = httpx.post(f"{stack.channels_url}/v1/subscriptions", json=hook, headers=clinic)
    assert reply.status_code == 201, reply.text
    enrolled = httpx.post(
        f"{stack.clinic_url}/v1/enrolments", json={"user_id": USER}, headers=clinic
    )
    assert enrolled.status_code == 201, enrolled.text
    device = _auth(enrolled.json()["device_token"])
    events = [_event("RehabStarted", 0, cause="gradual", clinic_id=CLINIC)]
    events += [
        _event("PainLogged", 1 + i, score=score, context="baseline")
        for i, score in enumerate(SCORES)
    ]
    _post(stack, events, device)
    review = _event("ClinicianReviewed", 12, action="hold", note=NOTE)
    _post(stack, [review], clinic)
    _caught_up(stack)
    _wait_queued(stack)
    time.sleep(1.5)  # appendfsync everysec: what is written reaches the file within a second

    with redis.Redis.from_url(stack.redis_url) as client:
        dumps = {key: client.dump(key) or b"" for key in client.scan_iter(count=1000)}
    named = [key for key, value in dumps.items() if USER.encode() in key + value]
    assert any(b":user:" in key for key in named), "the patient's history is in Redis"
    assert any(b":q:" in key for key in named), "a webhook queue holds the patient's change"
    for key, value in dumps.items():
        assert MARKER.encode() not in value, key
        assert b"sofa" not in value, key
        assert b'"score"' not in value, key
        assert b'"note"' not in value, key
    aof = b"".join(path.read_bytes() for path in directory.rglob("*.aof"))
    assert USER.encode() in aof, "the patient's entries reached the AOF"
    assert MARKER.encode() not in aof
    assert b'"score"' not in aof
    assert b'"note"' not in aof
