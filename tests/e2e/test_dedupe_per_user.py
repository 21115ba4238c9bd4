"""Dedupe per user over real HTTP: one event_id from two users is two events, and a user's
event_id sent again with another payload is refused (409, or that batch item's error)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import httpx
import redis

from services.cli.stack import Stack
from shared.auth import issue
from shared.keys import Keys
from tests.e2e.conftest import SECRET
from tests.sealed import decoded

NOW = datetime.now(UTC).replace(microsecond=0)
CONFLICT = {"error": "event_id already used with another payload"}


def _device(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue('device', user, SECRET)}"}


def _same_partition(stack: Stack, prefix: str) -> tuple[str, str]:
    """Two user ids that map to one partition of the stack (so to one dedupe key, before)."""
    keys = Keys(stack.settings.partitions)
    first = f"{prefix}-0"
    other = next(
        f"{prefix}-{i}"
        for i in count(1)
        if keys.partition(f"{prefix}-{i}") == keys.partition(first)
    )
    return first, other


def _started(user: str, event_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "RehabStarted",
        "user_id": user,
        "occurred_at": (NOW - timedelta(hours=2)).isoformat(),
        "onset_date": (NOW.date() - timedelta(days=10)).isoformat(),
        "cause": "gradual",
        **extra,
    }


def _pain(user: str, score: int, event_id: str | None = None) -> dict[str, Any]:
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "type": "PainLogged",
        "user_id": user,
        "occurred_at": (NOW - timedelta(minutes=30 - score)).isoformat(),
        "score": score,
        "context": "morning",
    }


def _history(stack: Stack, user: str) -> list[tuple[str, dict[str, Any]]]:
    """The user's stored events (position, JSON) as the event log holds them."""
    keys = Keys(stack.settings.partitions)
    with redis.Redis.from_url(stack.redis_url) as client:
        entries: Any = client.xrange(keys.history(user))
        events = [decoded(client, fields, keys.partitions) for _, fields in entries]
    return [
        (pos.decode(), event.model_dump(mode="json"))
        for (pos, _), event in zip(entries, events, strict=True)
    ]


def _prescription(stack: Stack, user: str, caused_by: str, timeout: float = 15) -> Any:
    """The user's latest prescription once it is the one ``caused_by`` led to."""
    deadline = time.monotonic() + timeout
    url = f"{stack.clinic_url}/v1/users/{user}/prescription"
    while True:
        reply = httpx.get(url, headers=_device(user), timeout=5)
        if reply.status_code == 200 and reply.json()["caused_by"] == caused_by:
            return reply.json()
        if time.monotonic() > deadline:
            raise AssertionError(f"no prescription from {caused_by}: {reply.text[:300]}")
        time.sleep(0.05)


def _conflicts(stack: Stack) -> float:
    """The ingest process's count of events refused as a reused event_id."""
    prefix = 'backtrack_ingest_events_total{outcome="conflict"} '
    for line in httpx.get(f"{stack.ingest_url}/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line.removeprefix(prefix))
    return 0.0


def test_one_event_id_from_two_users_is_two_events(stack: Stack) -> None:
    """Two users of one partition post intakes with the same event_id: both are accepted,
    both stored in their own histories, and each prescription follows its own intake."""
    flagged, plain = _same_partition(stack, "dd-two")
    event_id = str(uuid.uuid4())
    replies = [
        httpx.post(
            f"{stack.ingest_url}/v1/events",
            json=_started(flagged, event_id, red_flags=["saddle_numbness"]),
            headers=_device(flagged),
        ),
        httpx.post(
            f"{stack.ingest_url}/v1/events",
            json=_started(plain, event_id),
            headers=_device(plain),
        ),
    ]
    assert [r.status_code for r in replies] == [202, 202]
    assert [r.json()["status"] for r in replies] == ["accepted", "accepted"]
    for user, reply in zip((flagged, plain), replies, strict=True):
        [(position, stored)] = _history(stack, user)
        assert position == reply.json()["position"]
        assert (stored["event_id"], stored["user_id"]) == (event_id, user)
    assert _history(stack, flagged)[0][1]["red_flags"] == ["saddle_numbness"]
    assert _history(stack, plain)[0][1]["red_flags"] == []
    referred = _prescription(stack, flagged, event_id)
    assert (referred["phase"], referred["referral"]["urgency"]) == ("refer", "emergency")
    built = _prescription(stack, plain, event_id)
    assert (built["phase"], built["referral"]) == ("build", None)
    assert built["exercises"]


def test_two_users_in_one_batch_are_both_stored(stack: Stack) -> None:
    """An operator's batch holding two users' events with one event_id stores both."""
    first, other = _same_partition(stack, "dd-batch")
    event_id = str(uuid.uuid4())
    operator = {"Authorization": f"Bearer {issue('operator', None, SECRET)}"}
    items = [_pain(first, 3, event_id), _pain(other, 6, event_id)]
    reply = httpx.post(
        f"{stack.ingest_url}/v1/events/batch", json={"events": items}, headers=operator
    )
    assert reply.status_code == 202
    assert [r["status"] for r in reply.json()["results"]] == ["accepted", "accepted"]
    assert [e["score"] for _, e in _history(stack, first)] == [3]
    assert [e["score"] for _, e in _history(stack, other)] == [6]


def test_a_reused_event_id_with_another_payload_is_409(stack: Stack) -> None:
    """Same user, same event_id: another payload is 409 with the contract's body and stores
    nothing; the same payload again is a duplicate; in a batch it is that item's error."""
    user = "dd-reuse"
    device = _device(user)
    conflicts = _conflicts(stack)
    original = _pain(user, 4)
    first = httpx.post(f"{stack.ingest_url}/v1/events", json=original, headers=device)
    assert first.status_code == 202
    assert first.json()["status"] == "accepted"

    changed = original | {"score": 7}
    refused = httpx.post(f"{stack.ingest_url}/v1/events", json=changed, headers=device)
    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/json"
    assert refused.json() == CONFLICT

    again = httpx.post(f"{stack.ingest_url}/v1/events", json=original, headers=device)
    assert again.status_code == 202
    assert again.json() == first.json() | {"status": "duplicate"}

    before, after = _pain(user, 1), _pain(user, 2)
    batch = [before, original | {"score": 9}, after, original]
    reply = httpx.post(
        f"{stack.ingest_url}/v1/events/batch", json={"events": batch}, headers=device
    )
    assert reply.status_code == 202
    results = reply.json()["results"]
    assert results[1] == {"index": 1} | CONFLICT
    assert [results[i]["status"] for i in (0, 2, 3)] == ["accepted", "accepted", "duplicate"]
    assert results[3] == first.json() | {"status": "duplicate"}

    stored = _history(stack, user)
    assert [pos for pos, _ in stored] == [
        first.json()["position"],
        results[0]["position"],
        results[2]["position"],
    ]
    assert [e["score"] for _, e in stored] == [4, 1, 2]
    assert _conflicts(stack) == conflicts + 2


def test_a_reused_event_id_within_one_batch(stack: Stack) -> None:
    """A user's event_id twice in one batch: same payload is a duplicate of the first,
    another payload is the item's error; only the first is stored."""
    user = "dd-inbatch"
    event = _pain(user, 5)
    batch = [event, event, event | {"score": 0}]
    reply = httpx.post(
        f"{stack.ingest_url}/v1/events/batch", json={"events": batch}, headers=_device(user)
    )
    assert reply.status_code == 202
    first, repeat, other = reply.json()["results"]
    assert first["status"] == "accepted"
    assert repeat == first | {"status": "duplicate"}
    assert other == {"index": 2} | CONFLICT
    assert [e["score"] for _, e in _history(stack, user)] == [5]
