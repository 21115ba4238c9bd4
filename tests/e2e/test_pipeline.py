"""Events in over HTTP, prescriptions out over HTTP: the real processes end to end."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from services.cli.stack import Stack
from shared.auth import issue
from tests.e2e.conftest import SECRET

#: Two weeks ago at 08:00: the courses below span 12 days, within what a device may date.
T0 = (datetime.now(UTC) - timedelta(days=14)).replace(hour=8, minute=0, second=0, microsecond=0)


def _auth(role: str, subject: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue(role, subject, SECRET)}"}  # type: ignore[arg-type]


def _enrolled(stack: Stack, user: str, clinic: str = "clinic-a") -> dict[str, str]:
    """The clinic enrols the user; the device token it gets back, as headers for the app."""
    url = f"{stack.clinic_url}/v1/enrolments"
    reply = httpx.post(url, json={"user_id": user}, headers=_auth("clinic", clinic), timeout=10)
    assert reply.status_code == 201, reply.text
    return {"Authorization": f"Bearer {reply.json()['device_token']}"}


def _started(user: str, clinic: str = "clinic-a", **extra: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "type": "RehabStarted",
        "user_id": user,
        "occurred_at": T0.isoformat(),
        "onset_date": (T0.date() - timedelta(days=10)).isoformat(),
        "cause": "gradual",
        "clinic_id": clinic,
        **extra,
    }


def _pain(user: str, hours: float, score: int, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "type": "PainLogged",
        "user_id": user,
        "occurred_at": (T0 + timedelta(hours=hours)).isoformat(),
        "score": score,
        "context": "morning",
        **extra,
    }


def _wait_for(url: str, headers: dict[str, str], check: Any, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        reply = httpx.get(url, headers=headers, timeout=5)
        if reply.status_code == 200 and check(reply.json()):
            return reply.json()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {reply.status_code} {reply.text[:300]}")
        time.sleep(0.05)


def test_event_in_prescription_out_within_bound(stack: Stack) -> None:
    """A RehabStarted posted to ingest yields a visible first prescription within seconds."""
    device = _enrolled(stack, "e2e-1")
    reply = httpx.post(f"{stack.ingest_url}/v1/events", json=_started("e2e-1"), headers=device)
    assert reply.status_code == 202
    assert reply.json()["status"] == "accepted"
    started = time.monotonic()
    body = _wait_for(f"{stack.clinic_url}/v1/users/e2e-1/prescription", device, lambda b: True)
    assert time.monotonic() - started < 10
    assert body["version"] == 1
    assert body["change"] == "started"
    assert body["phase"] == "build"
    assert body["caused_by"] == _first_event_id(stack, "e2e-1")


def _first_event_id(stack: Stack, user: str) -> str:
    operator = _auth("operator", None)
    body = httpx.get(f"{stack.clinic_url}/v1/users/{user}/prescriptions", headers=operator).json()
    return str(body[0]["caused_by"])


def _course(user: str) -> list[dict[str, Any]]:
    """An intake and mornings that start a flare and settle it: several changes."""
    scores = (2, 2, 2, 7, 7, 2, 2, 2)
    return [_started(user), *(_pain(user, 24 * (d + 1), s) for d, s in enumerate(scores))]


def _told(changes: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """What a clinic reads in a change history, ids and user aside."""
    return [
        (
            c["version"],
            c["change"],
            c["phase"],
            [(e["exercise_id"], e["level"]) for e in c["exercises"]],
        )
        for c in changes
    ]


def test_duplicates_are_stored_once_and_change_nothing(stack: Stack) -> None:
    """Events posted twice give exactly the changes of the same events posted once."""
    once, twice = "e2e-2a", "e2e-2b"
    for user, times in ((once, 1), (twice, 2)):
        device = _enrolled(stack, user)
        events = _course(user)
        for _ in range(times):
            reply = httpx.post(
                f"{stack.ingest_url}/v1/events/batch", json={"events": events}, headers=device
            )
            assert reply.status_code == 202
        statuses = [r["status"] for r in reply.json()["results"]]
        assert statuses == ["accepted" if times == 1 else "duplicate"] * len(events)
    histories = []
    for user in (once, twice):
        device = _auth("device", user)
        marker = _pain(user, 24 * 12, 3, red_flags=["saddle_numbness"])
        assert httpx.post(f"{stack.ingest_url}/v1/events", json=marker, headers=device).is_success
        url = f"{stack.clinic_url}/v1/users/{user}/prescriptions"
        found = _wait_for(url, device, lambda b, m=marker: b[-1]["caused_by"] == m["event_id"])
        histories.append(found)
    assert len(histories[0]) >= 4
    assert _told(histories[1]) == _told(histories[0])


def test_red_flag_refers_through_the_whole_pipeline(stack: Stack) -> None:
    """A red flag logged later moves the patient to refer, visible to their clinic."""
    device = _enrolled(stack, "e2e-3")
    httpx.post(f"{stack.ingest_url}/v1/events", json=_started("e2e-3"), headers=device)
    flag = _pain("e2e-3", 30, 6, red_flags=["saddle_numbness"])
    assert httpx.post(f"{stack.ingest_url}/v1/events", json=flag, headers=device).status_code == 202
    clinic = _auth("clinic", "clinic-a")
    body = _wait_for(
        f"{stack.clinic_url}/v1/users/e2e-3/prescription", clinic, lambda b: b["phase"] == "refer"
    )
    assert body["referral"]["urgency"] == "emergency"
    assert body["exercises"] == []


def test_clinic_reads_are_scoped(stack: Stack) -> None:
    """Another clinic and another user's device get 403; no token 401; unknown user 404."""
    device = _enrolled(stack, "e2e-4", "clinic-b")
    httpx.post(
        f"{stack.ingest_url}/v1/events", json=_started("e2e-4", clinic="clinic-b"), headers=device
    )
    url = f"{stack.clinic_url}/v1/users/e2e-4/prescription"
    _wait_for(url, device, lambda b: True)
    assert httpx.get(url, headers=_auth("clinic", "clinic-b")).status_code == 200
    assert httpx.get(url, headers=_auth("clinic", "clinic-a")).status_code == 403
    assert httpx.get(url, headers=_auth("device", "someone-else")).status_code == 403
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer forged.token"}).status_code == 401
    missing = f"{stack.clinic_url}/v1/users/nobody/prescription"
    assert httpx.get(missing, headers=_auth("operator", None)).status_code == 404


def test_ingest_errors_over_http(stack: Stack) -> None:
    """401 without a token, 403 for another user, 422 with the field, 413 for a huge body."""
    url = f"{stack.ingest_url}/v1/events"
    event = _pain("e2e-5", 1, 3)
    assert httpx.post(url, json=event).status_code == 401
    assert httpx.post(url, json=event, headers=_auth("device", "other")).status_code == 403
    bad = httpx.post(url, json={**event, "score": 11}, headers=_auth("device", "e2e-5"))
    assert bad.status_code == 422
    assert "score" in bad.text
    huge = {**event, "padding": "x" * 2_000_000}
    assert httpx.post(url, json=huge, headers=_auth("device", "e2e-5")).status_code == 413


def test_readiness_and_metrics(stack: Stack) -> None:
    """Both services report ready, and ingest's metrics count an accepted event."""
    assert httpx.get(f"{stack.ingest_url}/readyz").status_code == 200
    assert httpx.get(f"{stack.clinic_url}/readyz").status_code == 200
    httpx.post(
        f"{stack.ingest_url}/v1/events", json=_started("e2e-6"), headers=_enrolled(stack, "e2e-6")
    )
    metrics = httpx.get(f"{stack.ingest_url}/metrics").text
    assert "accepted" in metrics


def test_clinic_metrics_show_owned_partitions_and_consumer_lag(stack: Stack) -> None:
    """The prescriber's /metrics report its leased partitions and the feed gauges."""
    deadline = time.monotonic() + 15
    while True:
        text = httpx.get(f"{stack.clinic_url}/metrics").text
        if "backtrack_consumer_lag{" in text or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert f"backtrack_partitions_owned {float(stack.settings.partitions)}" in text
    assert 'backtrack_consumer_lag{group="prescriber"' in text
    assert "backtrack_dead_letters" in text
