"""Who may write ClinicianReviewed and OutcomeRecorded, over HTTP to the real processes and Redis.

Users: PATIENT enrolled with clinic A (its latest RehabStarted names it),
STRANGER with clinic B, LONE with no clinic.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis

from services.cli.stack import Stack
from shared.auth import issue
from shared.events import ClinicianReviewed, Input, OutcomeRecorded, PrescriptionChanged
from shared.keys import Keys
from tests.e2e.conftest import SECRET
from tests.sealed import decoded

CLINIC_A, CLINIC_B = "clinic-rw-a", "clinic-rw-b"
PATIENT, STRANGER, LONE = "rw-patient", "rw-stranger", "rw-lone"


def _auth(role: str, subject: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue(role, subject, SECRET)}"}  # type: ignore[arg-type]


DEVICE = _auth("device", PATIENT)
CLINIC = _auth("clinic", CLINIC_A)
OTHER_CLINIC = _auth("clinic", CLINIC_B)
OPERATOR = _auth("operator", None)


def _event(kind: str, user: str, minutes_ago: float = 5, **fields: Any) -> dict[str, Any]:
    when = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    base = {"event_id": str(uuid.uuid4()), "type": kind, "user_id": user}
    return base | {"occurred_at": when.isoformat()} | fields


def review(user: str = PATIENT, **fields: Any) -> dict[str, Any]:
    return _event("ClinicianReviewed", user, **({"action": "hold"} | fields))


def outcome(user: str = PATIENT, **fields: Any) -> dict[str, Any]:
    return _event("OutcomeRecorded", user, **({"instrument": "rmdq", "score": 9} | fields))


def post(stack: Stack, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{stack.ingest_url}/v1/events", json=body, headers=headers, timeout=10)


def batch(stack: Stack, items: list[Any], headers: dict[str, str]) -> list[dict[str, Any]]:
    url = f"{stack.ingest_url}/v1/events/batch"
    reply = httpx.post(url, json={"events": items}, headers=headers, timeout=10)
    assert reply.status_code == 202, reply.text
    results: list[dict[str, Any]] = reply.json()["results"]
    return results


def stored(stack: Stack, user: str, event_id: str) -> Input:
    """The event with ``event_id`` as the user's history in Redis holds it."""
    with redis.Redis.from_url(stack.redis_url) as client:
        entries = client.xrange(Keys(stack.settings.partitions).history(user))
        found = [decoded(client, fields, stack.settings.partitions) for _, fields in entries]
    [event] = [e for e in found if str(e.event_id) == event_id]
    assert not isinstance(event, PrescriptionChanged)
    return event


@pytest.fixture(scope="module")
def clinics(stack: Stack) -> Stack:
    """PATIENT with clinic A, STRANGER with clinic B, LONE with none (intakes by an operator)."""
    for user, clinic in ((PATIENT, CLINIC_A), (STRANGER, CLINIC_B), (LONE, None)):
        started = _event("RehabStarted", user, 60, cause="gradual", clinic_id=clinic)
        assert post(stack, started, OPERATOR).status_code == 202
    return stack


def test_device_may_not_write_a_review_even_for_its_own_user(clinics: Stack) -> None:
    """A device token posting ClinicianReviewed for itself gets 403, alone or in a batch."""
    reply = post(clinics, review(), DEVICE)
    assert reply.status_code == 403
    assert reply.json()["detail"] == "forbidden: device tokens may not write ClinicianReviewed"
    [result] = batch(clinics, [review()], DEVICE)
    assert result == {"index": 0, "error": reply.json()["detail"]}


@pytest.mark.parametrize("user", [STRANGER, LONE])
def test_clinic_may_not_review_a_user_of_another_clinic_or_none(clinics: Stack, user: str) -> None:
    """A clinic reviewing a user of another clinic (or of none) gets 403 and nothing is stored."""
    event = review(user)
    reply = post(clinics, event, CLINIC)
    assert reply.status_code == 403
    assert reply.json()["detail"] == f"forbidden: this token may not write user {user}"
    [result] = batch(clinics, [event], CLINIC)
    assert result["error"] == reply.json()["detail"]
    with redis.Redis.from_url(clinics.redis_url) as client:
        history = client.xrange(Keys(clinics.settings.partitions).history(user))
    assert event["event_id"].encode() not in {fields[b"event_id"] for _, fields in history}


def test_clinic_review_is_stored_with_its_clinic_as_reviewer(clinics: Stack) -> None:
    """The right clinic gets 202; the stored event says reviewed_by = its id, not what it sent."""
    event = review(action="set_levels", levels={"cat_camel": 2}, reviewed_by=CLINIC_B)
    reply = post(clinics, event, CLINIC)
    assert reply.status_code == 202, reply.text
    assert reply.json()["status"] == "accepted"
    kept = stored(clinics, PATIENT, event["event_id"])
    assert isinstance(kept, ClinicianReviewed)
    assert (kept.reviewed_by, kept.action, dict(kept.levels or {})) == (
        CLINIC_A,
        "set_levels",
        {"cat_camel": 2},
    )


def test_operator_review_is_stored_as_operator(clinics: Stack) -> None:
    """An operator gets 202 for any user, and the stored review says reviewed_by = operator."""
    event = review(LONE, action="exclude_exercise", exercise_id="bird_dog", reviewed_by=CLINIC_A)
    assert post(clinics, event, OPERATOR).status_code == 202
    kept = stored(clinics, LONE, event["event_id"])
    assert isinstance(kept, ClinicianReviewed)
    assert kept.reviewed_by == "operator"


def test_batch_stamps_each_review_and_refuses_item_by_item(clinics: Stack) -> None:
    """In a clinic's batch, its users' reviews are stored as its own; other items are refused."""
    mine, theirs = review(reviewed_by="operator"), review(STRANGER)
    pain = _event("PainLogged", PATIENT, score=3, context="morning")
    items = [mine, theirs, pain, outcome(), outcome(score=25), review(note="x" * 2001)]
    results = batch(clinics, items, CLINIC)
    assert [r.get("status") for r in results] == ["accepted", None, None, "accepted", None, None]
    assert results[1]["error"] == f"forbidden: this token may not write user {STRANGER}"
    assert results[2]["error"] == "forbidden: clinic tokens may not write PainLogged"
    assert results[4]["error"].startswith("invalid: events.4.score: ")
    assert results[5]["error"].startswith("invalid: events.5.note: ")
    kept = stored(clinics, PATIENT, mine["event_id"])
    assert isinstance(kept, ClinicianReviewed)
    assert kept.reviewed_by == CLINIC_A


@pytest.mark.parametrize(
    ("instrument", "score"),
    [("rmdq", 25), ("odi", -1), ("psfs", 10.5), ("pgic", 0), ("pgic", True)],
)
def test_outcome_out_of_range_is_422_naming_score(
    clinics: Stack, instrument: str, score: Any
) -> None:
    """An outcome score outside its instrument's range (or not a number) is 422 on ``score``."""
    reply = post(clinics, outcome(instrument=instrument, score=score), DEVICE)
    assert reply.status_code == 422
    [error] = reply.json()["detail"]
    assert error["loc"] == ["body", "score"]


def test_device_may_record_an_outcome_for_itself_only(clinics: Stack) -> None:
    """A device posts OutcomeRecorded for its own user (202, stored as sent), not for another."""
    event = outcome(instrument="psfs", score=6.5)
    assert post(clinics, event, DEVICE).status_code == 202
    kept = stored(clinics, PATIENT, event["event_id"])
    assert isinstance(kept, OutcomeRecorded)
    assert (kept.instrument, kept.score) == ("psfs", 6.5)
    assert post(clinics, outcome(STRANGER), DEVICE).status_code == 403


def test_clinic_may_record_an_outcome_for_its_user_only(clinics: Stack) -> None:
    """A clinic posts OutcomeRecorded for its own user (202) and gets 403 for another clinic's."""
    assert post(clinics, outcome(), CLINIC).status_code == 202
    assert post(clinics, outcome(STRANGER), CLINIC).status_code == 403
    assert post(clinics, outcome(STRANGER), OTHER_CLINIC).status_code == 202


def test_clinic_may_not_write_patient_side_events(clinics: Stack) -> None:
    """Pain logs, sessions and intakes stay the device's (or operator's): a clinic gets 403."""
    pain = _event("PainLogged", PATIENT, score=3, context="morning")
    started = _event("RehabStarted", PATIENT, clinic_id=CLINIC_A)
    for event in (pain, started):
        reply = post(clinics, event, CLINIC)
        assert reply.status_code == 403
        assert reply.json()["detail"] == f"forbidden: clinic tokens may not write {event['type']}"


def test_prescriber_folds_an_outcome_as_time_passing(stack: Stack) -> None:
    """The prescriber folds an OutcomeRecorded: 10 days after a sprain it moves protect to build."""
    user = "rw-folded"
    device = _auth("device", user)
    started = _event("RehabStarted", user, 10 * 24 * 60, cause="sprain_strain")
    assert post(stack, started, device).status_code == 202
    event = outcome(user)
    assert post(stack, event, device).status_code == 202
    url = f"{stack.clinic_url}/v1/users/{user}/prescription"
    deadline = time.monotonic() + 15
    while (reply := httpx.get(url, headers=device, timeout=5)).json().get("version", 0) < 2:
        assert time.monotonic() < deadline, reply.text
        time.sleep(0.05)
    latest = reply.json()
    assert (latest["phase"], latest["caused_by"]) == ("build", event["event_id"])
