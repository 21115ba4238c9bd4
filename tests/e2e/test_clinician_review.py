"""A clinician acts over HTTP, and the prescriber answers: clear_red_flags keeps the levels.

A clinic enrols a patient, whose device (with the token the enrolment
returned) posts two weeks of history (backdated, in one batch): a
week of GREEN sessions steps every exercise up to level 2, then a red flag
refers them. The clinic that enrolled them posts ``clear_red_flags``; the next
prescription the clinic API serves is back in build at level 2, not 1.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from services.cli.stack import Stack
from shared.auth import issue
from tests.e2e.conftest import SECRET

CLINIC, USER = "clinic-review", "review-patient"
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=20)


def _auth(role: str, subject: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue(role, subject, SECRET)}"}  # type: ignore[arg-type]


def _event(kind: str, day: float, hour: float, **fields: Any) -> dict[str, Any]:
    at = T0 + timedelta(days=day, hours=hour)
    return (
        {"event_id": str(uuid.uuid4()), "type": kind, "user_id": USER}
        | {"occurred_at": at.isoformat()}
        | fields
    )


def _history() -> list[dict[str, Any]]:
    """Intake with the clinic, daily baselines of 2, GREEN sessions on days 1, 3, 5 and 8."""
    events = [_event("RehabStarted", 0, 0, cause="gradual", clinic_id=CLINIC)]
    events += [_event("PainLogged", d, 7, score=2, context="baseline") for d in range(13)]
    for day in (1, 3, 5, 8):
        events.append(
            _event(
                "SessionCompleted",
                day,
                10,
                session_id=f"s{day}",
                completed=True,
                difficulty="ok",
                pain_during=1,
            )
        )
        events.append(_event("PainLogged", day, 12, score=1, context="after_exercise"))
        events.append(_event("PainLogged", day + 0.8, 6, score=1, context="morning"))
    return events


def _latest(stack: Stack, headers: dict[str, str], done: Any, patience: float = 30) -> Any:
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        reply = httpx.get(f"{stack.clinic_url}/v1/users/{USER}/prescription", headers=headers)
        if reply.status_code == 200 and done(reply.json()):
            return reply.json()
        time.sleep(0.1)
    raise AssertionError(f"no prescription as expected within {patience}s: {reply.text}")


def test_clear_red_flags_brings_the_patient_back_at_their_levels(stack: Stack) -> None:
    """After a clinic's clear_red_flags the served prescription is build at level 2 again."""
    clinic = _auth("clinic", CLINIC)
    enrolled = httpx.post(
        f"{stack.clinic_url}/v1/enrolments", json={"user_id": USER}, headers=clinic
    )
    assert enrolled.status_code == 201, enrolled.text
    device = {"Authorization": f"Bearer {enrolled.json()['device_token']}"}
    reply = httpx.post(
        f"{stack.ingest_url}/v1/events/batch", json={"events": _history()}, headers=device
    )
    assert reply.status_code == 202
    assert all(r.get("status") == "accepted" for r in reply.json()["results"])
    built = _latest(stack, clinic, lambda rx: rx["change"] == "progressed")
    assert {e["level"] for e in built["exercises"]} == {2}

    flag = _event("PainLogged", 13, 9, score=3, context="morning", red_flags=["fever_or_unwell"])
    assert httpx.post(f"{stack.ingest_url}/v1/events", json=flag, headers=device).status_code == 202
    referred = _latest(stack, clinic, lambda rx: rx["phase"] == "refer")
    assert referred["referral"]["urgency"] == "urgent"

    clear = _event("ClinicianReviewed", 14, 9, action="clear_red_flags", note="seen 7f3a9c: viral")
    reply = httpx.post(f"{stack.ingest_url}/v1/events", json=clear, headers=clinic)
    assert reply.status_code == 202, reply.text
    back = _latest(stack, clinic, lambda rx: rx["version"] > referred["version"])
    assert (back["phase"], back["change"], back["referral"]) == ("build", "adjusted", None)
    assert {e["level"] for e in back["exercises"]} == {2}
    assert "clinician_clear_red_flags" in [r["code"] for r in back["reasons"]]
    assert "note" not in back
    assert (
        "7f3a9c"
        not in httpx.get(f"{stack.clinic_url}/v1/users/{USER}/prescriptions", headers=clinic).text
    )
