"""Invariant 9: no pain scores, notes, secrets or tokens in logs, from processes and in-process.

The processes run at their default level (INFO), their stderr and stdout go to
files, and a representative flow (enrolment, pain 7/10, a session with pain 7,
invalid and forbidden writes, bad tokens, clinic reads) passes through them;
so do clinicians' reviews with a note, accepted, refused and invalid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import structlog

from services.cli.stack import SERVICES, wait_ready
from services.logging_svc.app import create_app
from shared.auth import issue
from shared.redis_server import free_port
from shared.settings import Settings
from shared.store import MemoryStore
from tests.redis_server import RedisEndpoint

SECRET = "log-hygiene-secret-3f9c2a"
USER, CLINIC = "log-u7", "clinic-log"
FORBIDDEN_KEYS = {
    "score",
    "pain_during",
    "note",
    "notes",
    "token",
    "secret",
    "authorization",
    "password",
}
#: A clinician's note: free text about a patient, which no log line may carry.
NOTE_MARK = "nh-5b2f9e"
NOTE = f"{NOTE_MARK}: disclosed a past injury at work, wants it kept private"


def _event(kind: str, user: str = USER, **fields: Any) -> dict[str, Any]:
    when = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    base = {"event_id": str(uuid.uuid4()), "type": kind, "user_id": user, "occurred_at": when}
    return base | fields


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Services:
    """ingest + prescriber as processes at their default log level, output to files."""

    def __init__(self, redis_url: str, directory: Path) -> None:
        self.ingest_url = f"http://127.0.0.1:{free_port()}"
        self.clinic_url = f"http://127.0.0.1:{free_port()}"
        env = {
            **os.environ,
            "BACKTRACK_REDIS_URL": redis_url,
            "BACKTRACK_SECRET": SECRET,
            "BACKTRACK_PARTITIONS": "4",
            "BACKTRACK_INGEST_PORT": self.ingest_url.rsplit(":", 1)[1],
            "BACKTRACK_CLINIC_PORT": self.clinic_url.rsplit(":", 1)[1],
        }
        env.pop("BACKTRACK_LOG_LEVEL", None)
        self.files = [directory / f"{name}.log" for name in SERVICES]
        self.processes = []
        for module, path in zip(SERVICES.values(), self.files, strict=True):
            with path.open("wb") as out:
                argv = [sys.executable, "-m", module]
                self.processes.append(subprocess.Popen(argv, env=env, stdout=out, stderr=out))
        for url in (self.ingest_url, self.clinic_url):
            wait_ready(url)

    def wait_for(self, text: str, timeout: float = 15) -> None:
        """Until some process has written ``text`` (log lines trail the answers)."""
        deadline = time.monotonic() + timeout
        while not any(text in path.read_text(errors="replace") for path in self.files):
            assert time.monotonic() < deadline, f"nothing logged {text!r}"
            time.sleep(0.05)

    def stop(self) -> str:
        """SIGTERM both (they drain and log their shutdown), then all they wrote."""
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return "".join(path.read_text(errors="replace") for path in self.files)


@pytest.fixture
def services(redis_server: RedisEndpoint, tmp_path: Path) -> Iterator[Services]:
    running = Services(redis_server.url, tmp_path)
    try:
        yield running
    finally:
        running.stop()


def _flow(services: Services) -> list[str]:
    """Drive a representative flow; return every token it used."""
    device, operator = issue("device", USER, SECRET), issue("operator", None, SECRET)
    clinic, stranger = issue("clinic", CLINIC, SECRET), issue("device", "log-x", SECRET)
    wrong = issue("operator", None, "another-secret")
    ingest = f"{services.ingest_url}/v1/events"
    started = _event("RehabStarted", clinic_id=CLINIC, cause="gradual")
    assert httpx.post(ingest, json=started, headers=_auth(operator)).status_code == 202
    pain = _event("PainLogged", score=7, context="during_exercise")
    assert httpx.post(ingest, json=pain, headers=_auth(device)).status_code == 202
    done = _event("SessionCompleted", session_id="s-7", completed=True, difficulty="hard")
    batch = [done | {"pain_during": 7}, _event("PainLogged", score=77, context="morning")]
    batch += [_event("PainLogged", user="log-x", score=7, context="morning")]
    reply = httpx.post(f"{ingest}/batch", json={"events": batch}, headers=_auth(device))
    assert reply.status_code == 202
    bad = _event("PainLogged", score=77, context="morning")
    assert httpx.post(ingest, json=bad, headers=_auth(device)).status_code == 422
    assert httpx.post(ingest, json=pain, headers=_auth(stranger)).status_code == 403
    assert httpx.post(ingest, json=pain, headers=_auth(wrong)).status_code == 401
    assert httpx.post(ingest, json=pain, headers=_auth(device + "x")).status_code == 401
    read = f"{services.clinic_url}/v1/users/{USER}/prescriptions"
    deadline = time.monotonic() + 15
    while len(httpx.get(read, headers=_auth(clinic)).json()) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert httpx.get(read, headers=_auth(wrong)).status_code == 401
    assert httpx.get(read, headers=_auth(stranger)).status_code == 403
    return [device, operator, clinic, stranger, wrong]


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield str(key).lower()
            yield from _keys(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _keys(inner)


def _assert_clean(text: str, tokens: list[str]) -> None:
    assert SECRET not in text
    for token in tokens:
        assert token not in text
        assert token.split(".")[1] not in text  # not even the signature part
    assert "score" not in text.lower()
    assert "bearer" not in text.lower()


def test_process_logs_carry_no_scores_or_secrets(services: Services) -> None:
    """The processes' INFO output for a full flow names no score, pain_during, token or secret."""
    tokens = _flow(services)
    services.wait_for(f"/v1/users/{USER}/prescriptions")
    text = services.stop()
    lines = [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert len(lines) == len(text.splitlines()), "every output line is one JSON object"
    events = {line["event"] for line in lines}
    assert {"request", "ingest_started", "prescriber_started", "prescriber_stopped"} <= events
    statuses = {line["status"] for line in lines if line["event"] == "request"}
    assert {202, 401, 403, 422} <= statuses
    assert not FORBIDDEN_KEYS & {key for line in lines for key in _keys(line)}
    _assert_clean(text, tokens)


@pytest.mark.anyio
async def test_in_process_log_calls_carry_no_scores_or_tokens() -> None:
    """What the ingest code asks structlog to log (before any redaction) holds no score or token."""
    app = create_app(Settings(secret=SECRET, partitions=4), store=MemoryStore(partitions=4))
    device = issue("device", USER, SECRET)
    pain = _event("PainLogged", score=7, context="morning")
    transport = httpx.ASGITransport(app=app)
    with structlog.testing.capture_logs() as captured:
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            await client.post("/v1/events", json=pain, headers=_auth(device))
            batch = {"events": [pain, pain | {"score": 77}, _event("PainLogged", score=7)]}
            await client.post("/v1/events/batch", json=batch, headers=_auth(device))
            await client.post("/v1/events", json=pain, headers=_auth(device[:-2]))
    assert len(captured) == 3
    assert not FORBIDDEN_KEYS & {key for entry in captured for key in _keys(entry)}
    _assert_clean(orjson.dumps(captured, default=str).decode(), [device])


def test_one_event_can_be_followed_through_the_process_logs(services: Services) -> None:
    """The ingest line names the event and its request; the change line names it as its cause."""
    operator = issue("operator", None, SECRET)
    started = _event("RehabStarted", user="log-trace", clinic_id=CLINIC, cause="gradual")
    headers = _auth(operator) | {"X-Request-ID": "trace-0042"}
    reply = httpx.post(f"{services.ingest_url}/v1/events", json=started, headers=headers)
    assert reply.status_code == 202
    assert reply.headers["x-request-id"] == "trace-0042"
    minted = httpx.post(f"{services.ingest_url}/v1/events", json=started, headers=_auth(operator))
    assert len(minted.headers["x-request-id"]) == 32  # a new id when the client sent none
    services.wait_for(f'"caused_by":"{started["event_id"]}"')
    lines = [orjson.loads(x) for x in services.stop().splitlines() if x.startswith("{")]
    requests = [x for x in lines if x.get("event_id") == started["event_id"]]
    assert [x["event"] for x in requests] == ["request", "request"]
    assert {x["request_id"] for x in requests} == {"trace-0042", minted.headers["x-request-id"]}
    [change] = [x for x in lines if x.get("caused_by") == started["event_id"]]
    assert change["event"] == "prescription_changed"
    assert change["user_id"] == "log-trace"
    assert change["event_id"] != started["event_id"]


def _reviews(services: Services) -> str:
    """Post reviews carrying NOTE every way the ingest answers; the id of the one folded."""
    clinic, operator = issue("clinic", CLINIC, SECRET), issue("operator", None, SECRET)
    device = issue("device", "log-note", SECRET)
    ingest = f"{services.ingest_url}/v1/events"
    ten_days_ago = (datetime.now(UTC) - timedelta(days=10)).isoformat()
    started = _event("RehabStarted", "log-note", clinic_id=CLINIC, cause="sprain_strain")
    started["occurred_at"] = ten_days_ago
    assert httpx.post(ingest, json=started, headers=_auth(operator)).status_code == 202
    review = _event("ClinicianReviewed", "log-note", action="hold", note=NOTE)
    assert httpx.post(ingest, json=review, headers=_auth(clinic)).status_code == 202
    assert httpx.post(ingest, json=review, headers=_auth(device)).status_code == 403
    too_long = review | {"note": NOTE * 40, "event_id": str(uuid.uuid4())}
    assert httpx.post(ingest, json=too_long, headers=_auth(clinic)).status_code == 422
    stranger = _event("ClinicianReviewed", "log-x", action="hold", note=NOTE)
    levels = _event("ClinicianReviewed", "log-note", action="set_levels", note=NOTE)
    batch = {"events": [stranger, levels, too_long, review]}
    reply = httpx.post(f"{ingest}/batch", json=batch, headers=_auth(clinic))
    assert [sorted(r) for r in reply.json()["results"]] == [
        ["error", "index"],
        ["error", "index"],
        ["error", "index"],
        ["event_id", "position", "status"],
    ]
    return str(review["event_id"])


def test_process_logs_never_carry_a_clinicians_note(services: Services) -> None:
    """A review's note, stored, refused or invalid, is on no line of any process, nor a note key."""
    folded = _reviews(services)
    # ten days after a sprain the review moves protect to build: the prescriber read it
    services.wait_for(f'"caused_by":"{folded}"')
    text = services.stop()
    lines = [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert {202, 403, 422} <= {line["status"] for line in lines if line["event"] == "request"}
    assert NOTE_MARK not in text
    assert "past injury" not in text
    assert not {"note", "notes"} & {key for line in lines for key in _keys(line)}


@pytest.mark.anyio
async def test_in_process_log_calls_never_carry_a_note() -> None:
    """What the ingest asks structlog to log for reviews (before any redaction) holds no note."""
    app = create_app(Settings(secret=SECRET, partitions=4), store=MemoryStore(partitions=4))
    operator, device = issue("operator", None, SECRET), issue("device", USER, SECRET)
    review = _event("ClinicianReviewed", action="hold", note=NOTE)
    transport = httpx.ASGITransport(app=app)
    with structlog.testing.capture_logs() as captured:
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            await client.post("/v1/events", json=review, headers=_auth(operator))
            await client.post("/v1/events", json=review, headers=_auth(device))
            bad = review | {"note": NOTE * 40}
            await client.post(
                "/v1/events/batch", json={"events": [review, bad]}, headers=_auth(operator)
            )
    assert len(captured) == 3
    assert NOTE_MARK not in orjson.dumps(captured, default=str).decode()
