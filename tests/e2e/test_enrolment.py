"""Enrolment as the clinic's act, and access held over time, against the real processes.

Clinics enrol patients through the clinic API; a device may name only the
clinic that enrolled it; a transfer cuts the old clinic off at once, from
reads, from an open SSE stream and from queued webhook retries; every
enrolment is recorded with who and when. The stack (ingest, prescriber,
channels) runs with a 1 s SSE heartbeat and 3 s webhook backoff steps.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import redis

from services.channels.queues import DUE
from services.cli.stack import Stack
from shared.auth import issue, verify
from shared.keys import Keys
from tests.e2e.cli import backtrack
from tests.e2e.conftest import SECRET, running_stack
from tests.redis_server import RedisEndpoint
from tests.webhook_receiver import Receiver

PARTITIONS = 4
Headers = dict[str, str]


@pytest.fixture(scope="module")
def stack(redis_server: RedisEndpoint) -> Iterator[Stack]:
    """The three services on a flushed test Redis, with short SSE and webhook timings."""
    with running_stack(
        redis_server.url,
        partitions=PARTITIONS,
        webhook_allow_private=True,
        webhook_backoff=(3.0, 3.0, 3.0),
        webhook_timeout=1.0,
        webhook_lease=5.0,
        sse_heartbeat=1.0,
    ) as running:
        yield running


def _auth(role: str, subject: str | None, **token: Any) -> Headers:
    return {"Authorization": f"Bearer {issue(role, subject, SECRET, **token)}"}  # type: ignore[arg-type]


def _enrol(stack: Stack, user: str, clinic: str) -> httpx.Response:
    url = f"{stack.clinic_url}/v1/enrolments"
    return httpx.post(url, json={"user_id": user}, headers=_auth("clinic", clinic), timeout=10)


def _device(stack: Stack, user: str, clinic: str) -> Headers:
    """The clinic enrols the user; the device token it returned, as the app's headers."""
    reply = _enrol(stack, user, clinic)
    assert reply.status_code == 201, reply.text
    return {"Authorization": f"Bearer {reply.json()['device_token']}"}


def _unenrol(stack: Stack, user: str, headers: Headers) -> int:
    url = f"{stack.clinic_url}/v1/enrolments/{user}"
    return httpx.delete(url, headers=headers, timeout=10).status_code


def _event(user: str, kind: str, minutes_ago: float, **fields: Any) -> dict[str, Any]:
    at = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    base = {"event_id": str(uuid.uuid4()), "type": kind, "user_id": user}
    return base | {"occurred_at": at.isoformat()} | fields


def _started(user: str, **fields: Any) -> dict[str, Any]:
    return _event(user, "RehabStarted", 60, cause="gradual", **fields)


def _red_flag(user: str) -> dict[str, Any]:
    return _event(user, "PainLogged", 1, score=6, context="morning", red_flags=["saddle_numbness"])


def _post(stack: Stack, body: dict[str, Any], headers: Headers) -> httpx.Response:
    return httpx.post(f"{stack.ingest_url}/v1/events", json=body, headers=headers, timeout=10)


def _batch(stack: Stack, items: list[dict[str, Any]], headers: Headers) -> list[dict[str, Any]]:
    url = f"{stack.ingest_url}/v1/events/batch"
    reply = httpx.post(url, json={"events": items}, headers=headers, timeout=10)
    assert reply.status_code == 202, reply.text
    results: list[dict[str, Any]] = reply.json()["results"]
    return results


def _read(stack: Stack, user: str, headers: Headers, path: str = "prescription") -> httpx.Response:
    return httpx.get(f"{stack.clinic_url}/v1/users/{user}/{path}", headers=headers, timeout=10)


def _until_version(stack: Stack, user: str, version: int, headers: Headers) -> dict[str, Any]:
    """The user's latest prescription once it has reached ``version`` (read with ``headers``)."""
    deadline = time.monotonic() + 20
    while True:
        reply = _read(stack, user, headers)
        if reply.status_code == 200 and reply.json()["version"] >= version:
            found: dict[str, Any] = reply.json()
            return found
        assert time.monotonic() < deadline, f"no version {version} for {user}: {reply.text}"
        time.sleep(0.05)


def _started_patient(stack: Stack, user: str, clinic: str) -> Headers:
    """Enrolled by ``clinic``, intake posted by the device, first prescription made."""
    device = _device(stack, user, clinic)
    reply = _post(stack, _started(user), device)
    assert reply.status_code == 202, reply.text
    _until_version(stack, user, 1, device)
    return device


def test_a_device_names_only_the_clinic_that_enrolled_it(stack: Stack) -> None:
    """A device's RehabStarted naming another clinic is 403 (alone or as a batch item); naming
    the enrolling clinic or none is 202; an unenrolled user's device may name no clinic."""
    device = _device(stack, "en-1", "clinic-a")
    assert verify(device["Authorization"].removeprefix("Bearer "), SECRET).subject == "en-1"
    refused = _post(stack, _started("en-1", clinic_id="clinic-b"), device)
    assert refused.status_code == 403
    assert "not enrolled with that clinic" in refused.json()["detail"]
    assert _post(stack, _started("en-1", clinic_id="clinic-a"), device).status_code == 202
    assert _post(stack, _started("en-1"), device).status_code == 202
    items = [
        _started("en-1", clinic_id="clinic-b"),
        _started("en-1", clinic_id="clinic-a"),
        _started("en-1"),
    ]
    results = _batch(stack, items, device)
    assert results[0]["index"] == 0
    assert results[0]["error"].startswith("forbidden")
    assert [r.get("status") for r in results[1:]] == ["accepted", "accepted"]
    stranger = _auth("device", "en-x")
    assert _post(stack, _started("en-x", clinic_id="clinic-a"), stranger).status_code == 403
    [alone] = _batch(stack, [_started("en-x", clinic_id="clinic-a")], stranger)
    assert alone["error"].startswith("forbidden")
    assert _post(stack, _started("en-x"), stranger).status_code == 202
    _until_version(stack, "en-1", 1, device)
    assert _read(stack, "en-1", _auth("clinic", "clinic-a")).status_code == 200
    for user in ("en-1", "en-x"):
        assert _read(stack, user, _auth("clinic", "clinic-b")).status_code == 403


def test_a_transfer_cuts_the_old_clinic_off_at_once(stack: Stack) -> None:
    """After a transfer the old clinic reads 403 at once and the new one reads the whole
    history; only the enrolling clinic (or an operator) ends an enrolment."""
    old, new = _auth("clinic", "clinic-a"), _auth("clinic", "clinic-b")
    device = _started_patient(stack, "en-2", "clinic-a")
    assert _post(stack, _red_flag("en-2"), device).status_code == 202
    _until_version(stack, "en-2", 2, old)
    moved = _enrol(stack, "en-2", "clinic-b")
    assert moved.status_code == 201
    assert moved.json()["clinic_id"] == "clinic-b"
    assert _read(stack, "en-2", old).status_code == 403
    assert _read(stack, "en-2", old, "prescriptions").status_code == 403
    everything = _read(stack, "en-2", _auth("operator", None), "prescriptions").json()
    assert _read(stack, "en-2", new, "prescriptions").json() == everything
    assert [c["version"] for c in everything] == [1, 2]
    # the device token clinic-a was given is revoked; the one clinic-b got works
    _until(lambda: _read(stack, "en-2", device).status_code == 401, "old token refused", 5)
    app = {"Authorization": f"Bearer {moved.json()['device_token']}"}
    assert _read(stack, "en-2", app).status_code == 200
    assert _unenrol(stack, "en-2", old) == 403
    assert _unenrol(stack, "nobody-here", old) == 403
    assert _unenrol(stack, "en-2", app) == 403
    assert _unenrol(stack, "en-2", new) == 204
    assert _read(stack, "en-2", new).status_code == 403
    _until(lambda: _read(stack, "en-2", app).status_code == 401, "app token refused", 5)
    assert _unenrol(stack, "en-2", new) == 403
    assert _unenrol(stack, "en-2", _auth("operator", None)) == 204


def test_only_clinics_enrol_and_user_ids_are_checked(stack: Stack) -> None:
    """Operators and devices get 403 from POST /v1/enrolments; a bad body is 422."""
    url = f"{stack.clinic_url}/v1/enrolments"
    body = {"user_id": "en-3"}
    for role, subject in (("operator", None), ("device", "en-3")):
        assert httpx.post(url, json=body, headers=_auth(role, subject)).status_code == 403
    assert httpx.post(url, json=body).status_code == 401
    clinic = _auth("clinic", "clinic-a")
    for bad in ({"user_id": "no spaces"}, {"user_id": "u" * 65}, {}, body | {"clinic_id": "x"}):
        assert httpx.post(url, json=bad, headers=clinic).status_code == 422, bad
    assert httpx.delete(f"{url}/not%20an%20id", headers=clinic).status_code == 422
    assert _read(stack, "en-3", clinic).status_code == 403  # nothing was enrolled


def test_an_operators_intake_enrols_only_a_user_nobody_holds(stack: Stack) -> None:
    """An operator's RehabStarted naming a clinic enrols a user without one, and never
    moves a user another clinic holds."""
    operator = _auth("operator", None)
    assert _post(stack, _started("en-4", clinic_id="clinic-c"), operator).status_code == 202
    _until_version(stack, "en-4", 1, operator)
    assert _read(stack, "en-4", _auth("clinic", "clinic-c")).status_code == 200
    assert _post(stack, _started("en-4", clinic_id="clinic-d"), operator).status_code == 202
    assert _read(stack, "en-4", _auth("clinic", "clinic-d")).status_code == 403
    assert _read(stack, "en-4", _auth("clinic", "clinic-c")).status_code == 200


def test_every_enrolment_is_recorded_with_who_and_when(stack: Stack) -> None:
    """Enrolment, transfer and unenrolment each leave a record in the partition's
    enrolment stream: user, clinic, previous clinic, who, when."""
    before = datetime.now(UTC)
    assert _enrol(stack, "en-5", "clinic-a").status_code == 201
    assert _enrol(stack, "en-5", "clinic-b").status_code == 201
    assert _unenrol(stack, "en-5", _auth("operator", None)) == 204
    after = datetime.now(UTC)
    stream = Keys(PARTITIONS).enrolments("en-5")
    assert stream.endswith("}:enrolments")
    with redis.Redis.from_url(stack.redis_url, decode_responses=True) as client:
        records = [f for _, f in client.xrange(stream) if f["user_id"] == "en-5"]
    assert [(r["action"], r["clinic_id"], r["previous"], r["by"]) for r in records] == [
        ("enrolled", "clinic-a", "", "clinic:clinic-a"),
        ("enrolled", "clinic-b", "clinic-a", "clinic:clinic-b"),
        ("unenrolled", "", "clinic-b", "operator"),
    ]
    assert all(before <= datetime.fromisoformat(r["at"]) <= after for r in records)


def _follow(
    stack: Stack, user: str, headers: Headers, on_first: Callable[[], None], patience: float = 20
) -> tuple[list[int], list[str], float]:
    """Read the user's SSE stream until the server ends it: the versions received, the
    comment lines, and the wall-clock time it ended. ``on_first`` runs after the first event."""
    versions: list[int] = []
    comments: list[str] = []
    deadline = time.monotonic() + patience
    url = f"{stack.clinic_url}/v1/users/{user}/prescriptions/stream"
    with httpx.stream("GET", url, headers=headers, timeout=10) as reply:
        assert reply.status_code == 200
        for line in reply.iter_lines():
            if line.startswith("data: "):
                versions.append(orjson.loads(line[6:])["version"])
                if len(versions) == 1:
                    on_first()
            elif line.startswith(":"):
                comments.append(line)
            assert time.monotonic() < deadline, f"the stream is still open: {comments[-3:]}"
    return versions, comments, time.time()


def test_a_stream_closes_once_its_token_expires(stack: Stack) -> None:
    """With no new change, an SSE stream opened with a 3-second token ends after expiry,
    saying why; heartbeats go on until then."""
    _started_patient(stack, "sse-1", "clinic-a")
    issued = time.time()
    token = _auth("clinic", "clinic-a", ttl_seconds=3, now=issued)
    versions, comments, ended = _follow(stack, "sse-1", token, lambda: None)
    expired = int(issued) + 3
    print(f"\nSSE closed {ended - expired:.2f} s after its token expired")
    assert ended - expired < 5, "the contract: closed within 5 s of expiry"
    assert versions == [1]
    assert ": keep-alive" in comments
    assert comments[-1].startswith(": closed: unauthorised")
    assert "expired" in comments[-1]


def test_a_stream_closes_once_its_patient_moves_to_another_clinic(stack: Stack) -> None:
    """With no new change, the old clinic's SSE stream ends after the patient's transfer."""
    _started_patient(stack, "sse-2", "clinic-a")
    moved: list[float] = []

    def transfer() -> None:
        assert _enrol(stack, "sse-2", "clinic-b").status_code == 201
        moved.append(time.time())

    versions, comments, ended = _follow(stack, "sse-2", _auth("clinic", "clinic-a"), transfer)
    print(f"\nSSE closed {ended - moved[0]:.2f} s after the transfer")
    assert ended - moved[0] < 5, "the contract: closed within 5 s of a transfer"
    assert versions == [1]
    assert comments[-1] == ": closed: this token may not read that user"


def test_a_stream_closes_once_its_token_is_revoked(stack: Stack) -> None:
    """With no new change, an SSE stream ends after its token is revoked by the real CLI."""
    _started_patient(stack, "sse-4", "clinic-a")
    token = issue("clinic", "clinic-a", SECRET)
    jti = json.loads(backtrack(stack, "token", "inspect", stdin=token))["jti"]
    revoked: list[float] = []

    def revoke() -> None:
        backtrack(stack, "token", "revoke", "--jti", jti)
        revoked.append(time.time())

    headers = {"Authorization": f"Bearer {token}"}
    versions, comments, ended = _follow(stack, "sse-4", headers, revoke)
    print(f"\nSSE closed {ended - revoked[0]:.2f} s after the revocation")
    assert ended - revoked[0] < 5, "the contract: closed within 5 s of a revocation"
    assert versions == [1]
    assert comments[-1].startswith(": closed: unauthorised")
    assert "revoked" in comments[-1]


def test_a_change_after_a_transfer_never_reaches_the_old_clinics_stream(stack: Stack) -> None:
    """A change made after the transfer is not sent on the old clinic's open stream."""
    _started_patient(stack, "sse-3", "clinic-a")
    moved: list[float] = []

    def transfer_then_change() -> None:
        device = _device(stack, "sse-3", "clinic-b")  # the app's token from its new clinic
        moved.append(time.time())
        assert _post(stack, _red_flag("sse-3"), device).status_code == 202

    old = _auth("clinic", "clinic-a")
    versions, comments, ended = _follow(stack, "sse-3", old, transfer_then_change)
    referred = _until_version(stack, "sse-3", 2, _auth("clinic", "clinic-b"))
    print(f"\nSSE closed {ended - moved[0]:.2f} s after the transfer; version 2 was made")
    assert referred["change"] == "referred"
    assert versions == [1]
    assert comments[-1] == ": closed: this token may not read that user"


def _log(stack: Stack, sub_id: str, headers: Headers) -> list[dict[str, Any]]:
    url = f"{stack.clinic_url}/v1/subscriptions/{sub_id}/deliveries"
    reply = httpx.get(url, headers=headers, timeout=10)
    assert reply.status_code == 200, reply.text
    entries: list[dict[str, Any]] = reply.json()
    return entries


def _until(check: Callable[[], Any], what: str, within: float = 20) -> Any:
    deadline = time.monotonic() + within
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return found


def test_queued_retries_for_a_transferred_patient_are_dropped_and_logged(
    stack: Stack, receivers: Callable[..., Receiver]
) -> None:
    """A change whose first delivery failed is not attempted again once its patient moved to
    another clinic: the queue drops it and the delivery log says so."""
    hook = receivers(default=500)
    clinic = _auth("clinic", "clinic-a")
    device = _device(stack, "wh-1", "clinic-a")
    body = {"url": hook.url, "user_ids": ["wh-1"]}
    created = httpx.post(f"{stack.clinic_url}/v1/subscriptions", json=body, headers=clinic)
    assert created.status_code == 201, created.text
    hook.secret, sub_id = created.json()["secret"], created.json()["id"]
    assert _post(stack, _started("wh-1"), device).status_code == 202
    hook.wait(lambda r: len(r.received) == 1, timeout=20)  # failed once: a retry in 3 s
    assert _enrol(stack, "wh-1", "clinic-b").status_code == 201

    def dropped() -> list[dict[str, Any]]:
        return [e for e in _log(stack, sub_id, clinic) if e["status"] == "dropped"]

    [entry] = _until(dropped, "a dropped entry in the delivery log")
    with redis.Redis.from_url(stack.redis_url) as client:
        _until(lambda: client.zcard(DUE) == 0, "an empty delivery queue")
    assert len(hook.received) == 1
    assert entry["event_id"] == hook.received[0].webhook_id
    assert (entry["user_id"], entry["version"], entry["attempt"]) == ("wh-1", 1, 2)
    assert "no longer enrolled" in entry["reason"]
    assert [e["status"] for e in _log(stack, sub_id, clinic)] == ["dropped", 500]
    metrics = httpx.get(f"{stack.channels_url}/metrics", timeout=10).text
    assert "backtrack_webhook_dropped_total 1.0" in metrics
