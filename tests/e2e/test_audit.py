"""The audit log of reads, against the real processes and the real CLI.

A clinic enrols a patient whose device posts a history and whose clinic adds
a review with a note. Each read of the patient's prescriptions over HTTP (the
latest, all of them, the SSE stream) by the clinic or an operator writes
exactly one entry in the partition's audit stream, with exactly the fields
``role, by, what, user_id, outcome`` and nothing of the prescription; the
patient's own device writes none; a refused read writes one ``refused``.
``backtrack audit`` lists them, filtered by user and time, oldest first.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis

from services.cli.stack import Stack
from shared.auth import issue, verify
from shared.keys import Keys
from tests.e2e.cli import backtrack
from tests.e2e.conftest import SECRET

CLINIC, OTHER, USER, NEIGHBOUR = "clinic-audit", "clinic-elsewhere", "au-patient", "au-other"
NOTE = "discussed 5c1e88 at home"
LATEST = "GET /v1/users/{user_id}/prescription"
EVERY = "GET /v1/users/{user_id}/prescriptions"
STREAM = "GET /v1/users/{user_id}/prescriptions/stream"
FIELDS = {"role", "by", "what", "user_id", "outcome"}
Headers = dict[str, str]


def _auth(token: str) -> Headers:
    return {"Authorization": f"Bearer {token}"}


def _event(user: str, kind: str, at: datetime, **fields: Any) -> dict[str, Any]:
    base = {"event_id": str(uuid.uuid4()), "type": kind, "user_id": user}
    return base | {"occurred_at": at.isoformat()} | fields


def _patient(stack: Stack, user: str, clinic: str) -> Headers:
    """Enrolled by ``clinic``, started, a pain score and a review with NOTE; the device's headers
    once the prescriber has answered the review."""
    clinic_auth = _auth(issue("clinic", clinic, SECRET))
    enrolled = httpx.post(
        f"{stack.clinic_url}/v1/enrolments", json={"user_id": user}, headers=clinic_auth
    )
    assert enrolled.status_code == 201, enrolled.text
    device = _auth(enrolled.json()["device_token"])
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    events = [
        _event(user, "RehabStarted", t0, cause="gradual", clinic_id=clinic),
        _event(user, "PainLogged", t0 + timedelta(hours=20), score=4, context="morning"),
    ]
    url = f"{stack.ingest_url}/v1/events/batch"
    assert httpx.post(url, json={"events": events}, headers=device).status_code == 202
    review = _event(user, "ClinicianReviewed", t0 + timedelta(days=1), action="set_levels")
    review |= {"levels": {"cat_camel": 2}, "note": NOTE}
    reply = httpx.post(f"{stack.ingest_url}/v1/events", json=review, headers=clinic_auth)
    assert reply.status_code == 202, reply.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the device's reads are not audited: poll with them
        got = httpx.get(f"{stack.clinic_url}/v1/users/{user}/prescription", headers=device)
        if got.status_code == 200 and got.json()["change"] == "adjusted":
            return device
        time.sleep(0.1)
    raise AssertionError(f"the prescriber did not answer the review: {got.text}")


def _entries(stack: Stack, user: str) -> list[tuple[str, dict[str, str]]]:
    """The raw audit entries of the user's partition stream that are about the user."""
    with redis.Redis.from_url(stack.redis_url, decode_responses=True) as client:
        raw = client.xrange(Keys(stack.settings.partitions).audit(user))
    return [(position, fields) for position, fields in raw if fields["user_id"] == user]


def _new(stack: Stack, user: str, before: int) -> list[dict[str, str]]:
    return [fields for _, fields in _entries(stack, user)[before:]]


def _read(stack: Stack, what: str, user: str, headers: Headers) -> int:
    """One read of ``what`` (an SSE stream: opened, its first frame read, closed); its status."""
    path = what.removeprefix("GET ").replace("{user_id}", user)
    if what != STREAM:
        return httpx.get(f"{stack.clinic_url}{path}", headers=headers, timeout=10).status_code
    with httpx.stream("GET", f"{stack.clinic_url}{path}", headers=headers, timeout=10) as reply:
        if reply.status_code == 200:
            assert next(reply.iter_bytes()).startswith(b"retry:")
        return reply.status_code


@pytest.fixture(scope="module")
def device(stack: Stack) -> Headers:
    _patient(stack, NEIGHBOUR, OTHER)
    return _patient(stack, USER, CLINIC)


@pytest.mark.parametrize("what", [LATEST, EVERY, STREAM])
def test_each_read_is_one_entry_without_health_data(
    stack: Stack, device: Headers, what: str
) -> None:
    """A clinic's read and an operator's each write one entry of exactly who, what, whose and
    the outcome; the patient's own device writes none, and no entry holds their data."""
    operator_token = issue("operator", None, SECRET)
    jti = verify(operator_token, SECRET).jti
    prescription = httpx.get(f"{stack.clinic_url}/v1/users/{USER}/prescription", headers=device)
    readers = [
        (_auth(issue("clinic", CLINIC, SECRET)), {"role": "clinic", "by": CLINIC}),
        (_auth(operator_token), {"role": "operator", "by": jti}),
    ]
    for headers, who in readers:
        before = len(_entries(stack, USER))
        assert _read(stack, what, USER, headers) == 200
        new = _new(stack, USER, before)
        assert new == [{**who, "what": what, "user_id": USER, "outcome": "allowed"}]
        assert set(new[0]) == FIELDS
    before = len(_entries(stack, USER))
    assert _read(stack, what, USER, device) == 200
    assert _new(stack, USER, before) == []
    stored = json.dumps([fields for _, fields in _entries(stack, USER)])
    body = prescription.json()
    for secret in (NOTE, "5c1e88", prescription.text, body["event_id"], body["caused_by"]):
        assert secret not in stored
    assert not any(e["exercise_id"] in stored for e in body["exercises"])


@pytest.mark.parametrize("what", [LATEST, EVERY, STREAM])
def test_a_refused_read_is_one_refused_entry(stack: Stack, device: Headers, what: str) -> None:
    """Another clinic's read is 403 and recorded as refused (probing shows), once."""
    before = len(_entries(stack, USER))
    assert _read(stack, what, USER, _auth(issue("clinic", OTHER, SECRET))) == 403
    refused = {"role": "clinic", "by": OTHER, "what": what, "user_id": USER}
    assert _new(stack, USER, before) == [{**refused, "outcome": "refused"}]


def test_cli_lists_the_reads_of_a_user_since_a_time(stack: Stack, device: Headers) -> None:
    """``backtrack audit --user U --since T`` prints exactly U's entries from T, oldest first;
    without ``--user`` every user's, merged by time."""
    clinic = _auth(issue("clinic", CLINIC, SECRET))
    assert _read(stack, LATEST, USER, clinic) == 200  # before T: left out
    last = _entries(stack, USER)[-1][0]
    since_ms = int(last.split("-")[0]) + 1
    while int(time.time() * 1000) <= since_ms:  # the next entry's id must be past T
        time.sleep(0.001)
    assert _read(stack, EVERY, USER, clinic) == 200
    assert _read(stack, LATEST, NEIGHBOUR, _auth(issue("clinic", OTHER, SECRET))) == 200
    assert _read(stack, LATEST, USER, _auth(issue("clinic", OTHER, SECRET))) == 403
    since = datetime.fromtimestamp(since_ms / 1000, UTC).isoformat(timespec="milliseconds")
    printed = backtrack(stack, "audit", "--user", USER, "--since", since)
    got = [json.loads(line) for line in printed.splitlines()]
    expected = [(p, f) for p, f in _entries(stack, USER) if int(p.split("-")[0]) >= since_ms]
    assert [e["position"] for e in got] == [p for p, _ in expected]
    assert [(e["what"], e["by"], e["outcome"]) for e in got] == [
        (EVERY, CLINIC, "allowed"),
        (LATEST, OTHER, "refused"),
    ]
    everyone = [
        json.loads(line) for line in backtrack(stack, "audit", "--since", since).splitlines()
    ]
    assert {e["user_id"] for e in everyone} == {USER, NEIGHBOUR}
    assert [e["at"] for e in everyone] == sorted(e["at"] for e in everyone)
