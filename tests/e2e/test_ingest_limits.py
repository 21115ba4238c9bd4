"""The ingest API's explicit limits on hostile input, over HTTP against the real processes."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import redis

from services.cli.stack import Stack
from shared.auth import issue
from shared.keys import Keys
from tests.e2e.conftest import SECRET
from tests.sealed import opened

USER = "lim-1"
DEVICE = {"Authorization": f"Bearer {issue('device', USER, SECRET)}"}


def _pain(**overrides: Any) -> dict[str, Any]:
    event = {
        "event_id": str(uuid.uuid4()),
        "type": "PainLogged",
        "user_id": USER,
        "occurred_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        "score": 4,
        "context": "morning",
    }
    return event | overrides


def _post(stack: Stack, body: Any, path: str = "/v1/events") -> httpx.Response:
    # The stdlib encoder, so ints past 64 bits reach the server as sent.
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = DEVICE | {"Content-Type": "application/json"}
    return httpx.post(f"{stack.ingest_url}{path}", content=content, headers=headers, timeout=15)


def _refused(reply: httpx.Response, field: str) -> dict[str, Any]:
    assert reply.status_code == 422, reply.text
    (error,) = reply.json()["detail"]
    assert error["loc"] == ["body", field], error
    return error  # type: ignore[no-any-return]


def test_body_size_limit_is_exact(stack: Stack) -> None:
    """A 500-event batch padded to exactly max_body_bytes is stored; one byte more is 413."""
    limit = stack.settings.max_body_bytes
    events = orjson.dumps({"events": [_pain() for _ in range(stack.settings.max_batch)]})
    body = events + b" " * (limit - len(events))
    assert len(body) == limit
    over = _post(stack, body + b" ", "/v1/events/batch")
    assert over.status_code == 413
    assert over.json() == {"detail": f"body larger than {limit} bytes"}
    reply = _post(stack, body, "/v1/events/batch")
    assert reply.status_code == 202
    assert [r["status"] for r in reply.json()["results"]] == ["accepted"] * 500
    assert _post(stack, orjson.dumps(_pain()) + b" " * limit).status_code == 413


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("user_id", "u" * 65),
        ("user_id", "pätient"),
        ("user_id", "１２３"),
        ("user_id", "p-1\n"),
        ("user_id", "p\x00"),
        ("user_id", ""),
        ("session_id", "s" * 65),
        ("session_id", "x" * 200_000),
        ("context", "mörning"),
        ("score", -1),
        ("score", 11),
        ("score", 7.5),
        ("score", 7.0),
        ("score", "7"),
        ("score", True),
        ("score", None),
        ("score", 10**30),
        ("occurred_at", "2026-11-24T10:00:00"),
        ("occurred_at", "not a time"),
    ],
)
def test_out_of_contract_values_are_422_naming_the_field(
    stack: Stack, field: str, value: Any
) -> None:
    """Over-long ids, non-ASCII ids, out-of-range or non-integer scores are 422 on that field."""
    _refused(_post(stack, _pain(**{field: value})), field)


def test_own_limits_of_a_session_are_422(stack: Stack) -> None:
    """More than 50 exercises, a 41-character exercise id or pain_during 11 are each refused."""
    ok_exercise = {"exercise_id": "cat_camel", "sets": 1}
    base = {"type": "SessionCompleted", "session_id": "s-1", "completed": True}
    base |= {"difficulty": "ok", "exercises": [ok_exercise]}
    for change, loc in [
        ({"exercises": [ok_exercise] * 51}, "exercises"),
        ({"exercises": [{"exercise_id": "e" * 41, "sets": 1}]}, "exercises"),
        ({"pain_during": 11}, "pain_during"),
        ({"duration_minutes": 601}, "duration_minutes"),
    ]:
        event = {k: v for k, v in _pain().items() if k not in ("score", "context")}
        reply = _post(stack, event | base | change)
        assert reply.status_code == 422
        assert reply.json()["detail"][0]["loc"][:2] == ["body", loc]
    event = {k: v for k, v in _pain().items() if k not in ("score", "context")}
    assert _post(stack, event | base).status_code == 202


@pytest.mark.parametrize(
    "literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b'"\\ud800"', b"\xff\xfe"]
)
def test_nan_infinity_and_bad_unicode_are_422_never_500(stack: Stack, literal: bytes) -> None:
    """NaN and infinity literals, lone surrogates and invalid UTF-8 are refused as not JSON."""
    body = orjson.dumps(_pain()).replace(b'"score":4', b'"score":' + literal)
    for path, payload in (
        ("/v1/events", body),
        ("/v1/events/batch", b'{"events":[' + body + b"]}"),
    ):
        reply = _post(stack, payload, path)
        assert reply.status_code == 422, reply.text
        assert reply.json()["detail"][0]["type"] == "json_invalid"


def test_unicode_escapes_that_decode_to_non_ascii_ids_are_422(stack: Stack) -> None:
    """An id smuggled in as \\u escapes (a Cyrillic a, U+0430) is still refused."""
    body = orjson.dumps(_pain()).replace(USER.encode(), b"lim-\\u0430")
    _refused(_post(stack, body), "user_id")


def _at(when: timedelta | str) -> str:
    """A fixed time, or one relative to now (computed when the test runs, not at import)."""
    return when if isinstance(when, str) else (datetime.now(UTC) + when).isoformat()


@pytest.mark.parametrize(
    ("when", "kind"),
    [
        (timedelta(minutes=6), "too_far_in_future"),
        (timedelta(days=400), "too_far_in_future"),
        ("9999-12-31T23:59:59-23:59", "too_far_in_future"),
        (-timedelta(days=31), "too_old"),  # from a device token (30 days)
        (-timedelta(days=5 * 365 + 2), "too_old"),
        ("1970-01-01T00:00:00Z", "too_old"),
        ("0001-01-01T00:00:00+01:00", "too_old"),
    ],
)
def test_times_outside_the_window_are_422(stack: Stack, when: timedelta | str, kind: str) -> None:
    """More than 5 minutes ahead, or older than a device may date (30 days): 422 with a reason."""
    occurred_at = _at(when)
    error = _refused(_post(stack, _pain(occurred_at=occurred_at)), "occurred_at")
    assert error["type"] == kind
    assert ("future" if kind == "too_far_in_future" else "past") in error["msg"]
    batch = _post(stack, {"events": [_pain(occurred_at=occurred_at), _pain()]}, "/v1/events/batch")
    assert batch.status_code == 202
    bad, good = batch.json()["results"]
    assert bad["index"] == 0
    assert "events.0.occurred_at" in bad["error"]
    assert good["status"] == "accepted"


@pytest.mark.parametrize(
    ("role", "when"),
    [
        ("device", timedelta(minutes=4)),
        ("device", -timedelta(days=29)),  # a phone that was offline for four weeks
        ("operator", "2026-01-05T08:30:00+01:00"),  # the demo cohort's first week
        ("operator", -timedelta(days=4 * 365)),  # an import of old records
    ],
)
def test_times_inside_the_window_are_accepted(
    stack: Stack, role: str, when: timedelta | str
) -> None:
    """Slightly fast clocks and a month offline from devices, old records from operators: stored."""
    token = issue(role, USER if role == "device" else None, SECRET)  # type: ignore[arg-type]
    reply = httpx.post(
        f"{stack.ingest_url}/v1/events",
        json=_pain(occurred_at=_at(when)),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert reply.status_code == 202
    assert reply.json()["status"] == "accepted"


def test_duplicate_ids_inside_one_batch_are_stored_once(stack: Stack) -> None:
    """An event_id repeated in one batch is stored once: the same content again is a
    duplicate, other content that item's error."""
    user = "lim-dup"
    device = {"Authorization": f"Bearer {issue('device', user, SECRET)}"}
    first = _pain(user_id=user)
    twin = first | {"score": 9}
    items = [first, _pain(user_id=user), first, twin]
    reply = httpx.post(
        f"{stack.ingest_url}/v1/events/batch", json={"events": items}, headers=device
    )
    assert reply.status_code == 202
    results = reply.json()["results"]
    assert [r.get("status") for r in results] == ["accepted", "accepted", "duplicate", None]
    assert results[2] == results[0] | {"status": "duplicate"}
    assert results[3] == {"index": 3, "error": "event_id already used with another payload"}
    with redis.Redis.from_url(stack.redis_url) as client:
        history = client.xrange(Keys(stack.settings.partitions).history(user))
        first = opened(client, history[0][1], stack.settings.partitions)
    assert len(history) == 2
    assert b'"score":4' in first[b"data"]
