"""``backtrack export`` round trip: a patient's export replayed into a fresh stack decides the same.

A clinic enrols a patient whose device posts two weeks of history and whose
clinic reviews them, on one stack; a second patient of the same partition
shares the partition's streams. The real CLI exports the first patient; the
export holds their events, changes, clinic and enrolment and nothing of the
other, and is itself audited. Its input events, posted by an operator to a
second stack on its own fresh Redis, yield the same prescription changes
(compared without their stream positions).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
from tests.e2e.cli import backtrack
from tests.e2e.conftest import SECRET, stack_settings
from tests.redis_server import RedisServer

CLINIC, USER = "clinic-export", "ex-patient"
NOTE = "export note 91b2"
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=20)
Headers = dict[str, str]


def _auth(token: str) -> Headers:
    return {"Authorization": f"Bearer {token}"}


def _event(user: str, kind: str, day: float, hour: float, **fields: Any) -> dict[str, Any]:
    at = T0 + timedelta(days=day, hours=hour)
    base = {"event_id": str(uuid.uuid4()), "type": kind, "user_id": user}
    return base | {"occurred_at": at.isoformat()} | fields


def _history(user: str) -> list[dict[str, Any]]:
    """Intake, daily baselines, GREEN sessions that step the levels up, an outcome measure."""
    events = [_event(user, "RehabStarted", 0, 0, cause="gradual", clinic_id=CLINIC)]
    events += [_event(user, "PainLogged", d, 7, score=2, context="baseline") for d in range(12)]
    for day in (1, 3, 5, 8):
        session = {"session_id": f"s{day}", "completed": True, "difficulty": "ok"}
        events.append(_event(user, "SessionCompleted", day, 10, pain_during=1, **session))
        events.append(_event(user, "PainLogged", day, 12, score=1, context="after_exercise"))
    events.append(_event(user, "OutcomeRecorded", 9, 9, instrument="odi", score=24))
    return events


def _neighbour(partitions: int) -> str:
    """A user id in USER's partition."""
    keys = Keys(partitions)
    return next(
        f"ex-neighbour-{n}"
        for n in range(1000)
        if keys.partition(f"ex-neighbour-{n}") == keys.partition(USER)
    )


def _processed(stack: Stack, within: float = 30) -> None:
    """Wait until the prescriber has read and acknowledged every feed entry."""
    keys = Keys(stack.settings.partitions)
    deadline = time.monotonic() + within
    with redis.Redis.from_url(stack.redis_url) as client:
        while True:
            busy = False
            for feed in keys.feeds():
                for group in client.xinfo_groups(feed):
                    if group["name"] == PRESCRIBER_GROUP.encode():
                        busy = busy or bool(group["lag"] or group["pending"])
            if not busy:
                return
            assert time.monotonic() < deadline, "the prescriber did not catch up"
            time.sleep(0.05)


def _post(stack: Stack, events: list[dict[str, Any]], headers: Headers) -> None:
    reply = httpx.post(
        f"{stack.ingest_url}/v1/events/batch", json={"events": events}, headers=headers
    )
    assert reply.status_code == 202, reply.text
    assert all(r.get("status") == "accepted" for r in reply.json()["results"]), reply.text


def _changes(stack: Stack, user: str) -> list[dict[str, Any]]:
    url = f"{stack.clinic_url}/v1/users/{user}/prescriptions"
    reply = httpx.get(url, headers=_auth(issue("operator", None, SECRET)), timeout=10)
    assert reply.status_code == 200
    changes: list[dict[str, Any]] = reply.json()
    return changes


def _enrol(stack: Stack, user: str) -> Headers:
    clinic = _auth(issue("clinic", CLINIC, SECRET))
    reply = httpx.post(f"{stack.clinic_url}/v1/enrolments", json={"user_id": user}, headers=clinic)
    assert reply.status_code == 201, reply.text
    return _auth(reply.json()["device_token"])


@pytest.fixture
def fresh_stack(own_redis_server: Callable[..., RedisServer]) -> Iterator[Stack]:
    """Ingest and prescriber on a Redis of their own, empty."""
    server = own_redis_server()
    settings = stack_settings(server.url)
    with Stack(settings, quiet=True, services=("ingest", "prescriber")) as running:
        yield running


def test_export_round_trip(stack: Stack, fresh_stack: Stack, tmp_path: Path) -> None:
    """The export's events, re-posted to an empty stack, give the same prescription changes;
    the export holds nothing of another user and is recorded in the audit log."""
    neighbour = _neighbour(stack.settings.partitions)
    _post(stack, _history(USER), _enrol(stack, USER))
    _post(stack, _history(neighbour), _enrol(stack, neighbour))
    review = _event(USER, "ClinicianReviewed", 10, 9, action="set_levels", note=NOTE)
    review["levels"] = {"cat_camel": 3}
    _post(stack, [review], _auth(issue("clinic", CLINIC, SECRET)))
    _processed(stack)
    before = _changes(stack, USER)
    assert len(before) >= 2

    out = tmp_path / "export.json"
    backtrack(stack, "export", "--user", USER, "--out", str(out))
    exported = json.loads(out.read_text())

    assert exported["user_id"] == USER
    assert exported["clinic_id"] == CLINIC
    assert len(exported["events"]) == len(_history(USER)) + 1
    assert exported["events"][-1]["event"]["note"] == NOTE
    assert [c["change"] for c in exported["prescriptions"]] == before
    assert [(e["clinic_id"], e["by"]) for e in exported["enrolments"]] == [
        (CLINIC, f"clinic:{CLINIC}")
    ]
    assert neighbour not in out.read_text()
    assert exported["audit"][-1]["what"] == "export"
    assert exported["audit"][-1]["role"] == "operator"
    assert exported["audit"][-1]["by"].startswith("cli")

    _post(
        fresh_stack,
        [e["event"] for e in exported["events"]],
        _auth(issue("operator", None, SECRET)),
    )
    _processed(fresh_stack)
    assert _changes(fresh_stack, USER) == before


def test_export_refuses_fhir(stack: Stack) -> None:
    """``--fhir`` is refused with a clear message (FHIR is not built yet), nothing written."""
    env = {**os.environ, "BACKTRACK_REDIS_URL": stack.redis_url, "BACKTRACK_SECRET": SECRET}
    done = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "export", "--user", USER, "--fhir"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--fhir is not built yet" in done.stderr
    assert done.stdout == ""
