"""Erasure over real HTTP: ``DELETE /v1/users/{user_id}`` against the three real processes.

A clinic enrols a patient, subscribes a real webhook receiver and follows the
patient's SSE stream; the patient's app posts an intake. Then only an operator
token may erase (202); afterwards the patient's reads answer 404 to an operator
and 403 to the clinic, the open stream closes, the device token stops working,
the receiver gets exactly one signed ``PatientErased`` with nothing but
``type``, ``user_id`` and ``occurred_at``, and no key but the erasure record
names the patient. The call is in the audit log, with the refused attempts.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis

from services.channels import notices
from services.cli.stack import Stack
from shared.auth import issue, payload_of
from shared.keys import Keys
from tests.e2e.conftest import SECRET, running_stack
from tests.redis_server import RedisEndpoint
from tests.webhook_receiver import Receiver

PARTITIONS = 4
USER = "zq5-erased-over-http"
Headers = dict[str, str]
ANOTHER_ENROLMENT = "user erased: the id cannot be enrolled again"


@pytest.fixture(scope="module")
def stack(redis_server: RedisEndpoint) -> Iterator[Stack]:
    """The three services on a flushed test Redis, webhooks to loopback allowed."""
    with running_stack(
        redis_server.url,
        partitions=PARTITIONS,
        webhook_allow_private=True,
        webhook_backoff=(1.0, 1.0, 1.0),
        webhook_timeout=1.0,
        webhook_lease=5.0,
        sse_heartbeat=0.5,
    ) as running:
        yield running


def _auth(role: str, subject: str | None) -> Headers:
    return {"Authorization": f"Bearer {issue(role, subject, SECRET)}"}  # type: ignore[arg-type]


def _until(check: Callable[[], Any], what: str, within: float = 20) -> Any:
    deadline = time.monotonic() + within
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return found


def _intake(user: str) -> dict[str, Any]:
    at = (datetime.now(UTC) - timedelta(minutes=30)).isoformat()
    return {
        "event_id": str(uuid.uuid4()),
        "type": "RehabStarted",
        "user_id": user,
        "occurred_at": at,
        "cause": "gradual",
    }


def _follow(stack: Stack, headers: Headers, comments: list[str]) -> threading.Thread:
    """Read the user's SSE stream in a thread until the server ends it, keeping comments."""

    def read() -> None:
        url = f"{stack.clinic_url}/v1/users/{USER}/prescriptions/stream"
        with httpx.stream("GET", url, headers=headers, timeout=30) as reply:
            assert reply.status_code == 200
            comments.extend(line for line in reply.iter_lines() if line.startswith(":"))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def test_an_operator_erases_a_patient_and_their_clinic_is_told_once(
    stack: Stack, receivers: Callable[..., Receiver]
) -> None:
    """202 to an operator only; then 404 to reads, the stream closed, one signed notice, and
    the id cannot be enrolled again."""
    clinic, operator = _auth("clinic", "clinic-z"), _auth("operator", None)
    hook = receivers()
    created = httpx.post(
        f"{stack.clinic_url}/v1/subscriptions", json={"url": hook.url}, headers=clinic
    )
    assert created.status_code == 201, created.text
    hook.secret = created.json()["secret"]
    enrol = f"{stack.clinic_url}/v1/enrolments"
    enrolled = httpx.post(enrol, json={"user_id": USER}, headers=clinic)
    device = {"Authorization": f"Bearer {enrolled.json()['device_token']}"}
    posted = httpx.post(f"{stack.ingest_url}/v1/events", json=_intake(USER), headers=device)
    assert posted.status_code == 202, posted.text
    hook.wait(lambda r: len(r.delivered()) == 1, timeout=20)  # the first prescription
    read = f"{stack.clinic_url}/v1/users/{USER}/prescription"
    assert httpx.get(read, headers=clinic).status_code == 200
    comments: list[str] = []
    following = _follow(stack, clinic, comments)
    _until(lambda: any("keep-alive" in c for c in comments), "the stream to be open")

    erase = f"{stack.clinic_url}/v1/users/{USER}"
    assert httpx.delete(erase, headers=clinic).status_code == 403
    assert httpx.delete(erase, headers=device).status_code == 403
    accepted = httpx.delete(erase, headers=operator)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json() == {"user_id": USER, "state": "started"}

    gone = httpx.get(read, headers=operator)
    assert (gone.status_code, gone.json()) == (404, {"detail": "user erased"})
    assert httpx.get(f"{read}s", headers=operator).status_code == 404
    assert httpx.get(read, headers=clinic).status_code in (403, 404)
    following.join(timeout=10)
    assert not following.is_alive(), "the clinic's stream is still open"
    assert comments[-1].startswith(": closed:")

    hook.wait(lambda r: len(r.delivered()) == 2, timeout=20)
    notice = hook.delivered()[1]
    assert notice.verified
    assert set(notice.body) == {"type", "user_id", "occurred_at"}
    assert (notice.body["type"], notice.body["user_id"]) == ("PatientErased", USER)
    assert notice.webhook_id == notices.notice_id(USER, notice.body["occurred_at"])

    with redis.Redis.from_url(stack.redis_url) as client:
        record = Keys(PARTITIONS).erased(USER)
        _until(lambda: client.hget(record, "state") == b"done", "the erasure to finish")
        _until(lambda: not client.keys(f"bt:{{wh}}:q:*:{USER}"), "the notice queue to empty")
        assert [k.decode() for k in client.scan_iter(match=f"*{USER}*")] == [record]
        assert client.hget(record, "by") == f"operator:{_jti(operator)}".encode()
        assert httpx.get(read, headers=clinic).status_code == 403  # enrolled nowhere now
        _until(lambda: httpx.get(read, headers=device).status_code == 401, "device revoked", 10)
        again = httpx.delete(erase, headers=operator)
        assert (again.status_code, again.json()) == (202, {"user_id": USER, "state": "done"})
        assert not client.keys(f"bt:{{wh}}:q:*:{USER}")  # nothing queued again
        again = httpx.post(enrol, json={"user_id": USER}, headers=clinic)
        assert (again.status_code, again.json()) == (409, {"detail": ANOTHER_ENROLMENT})
        late = httpx.post(f"{stack.ingest_url}/v1/events", json=_intake(USER), headers=operator)
        assert late.status_code == 410, late.text  # no key is made for them again
        assert [k.decode() for k in client.scan_iter(match=f"*{USER}*")] == [record]
        audit = [f for _, f in client.xrange(Keys(PARTITIONS).audit(USER))]
    erasures = [(f[b"role"], f[b"outcome"]) for f in audit if f[b"what"].startswith(b"DELETE")]
    assert erasures == [
        (b"clinic", b"refused"),
        (b"operator", b"allowed"),
        (b"operator", b"allowed"),
    ]
    assert len(hook.delivered()) == 2


def _jti(headers: Headers) -> str:
    return str(payload_of(headers["Authorization"].removeprefix("Bearer "))["jti"])
