"""Hypothesis-generated batches, valid and hostile items mixed, against the real ingest process."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.cli.stack import Stack
from shared.auth import issue
from tests.e2e.conftest import SECRET

USER = "fuzz-1"
NOW = datetime.now(UTC)
FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _valid(event_id: Any, kind: str, minutes: int) -> dict[str, Any]:
    base = {
        "event_id": str(event_id),
        "user_id": USER,
        "occurred_at": (NOW - timedelta(minutes=minutes)).isoformat(),
    }
    if kind == "RehabStarted":
        return base | {"type": kind, "clinic_id": "clinic-f", "goals": ["running"]}
    if kind == "PainLogged":
        return base | {"type": kind, "score": minutes % 11, "context": "morning"}
    if kind == "OutcomeRecorded":
        return base | {"type": kind, "instrument": "rmdq", "score": minutes % 25}
    if kind == "ClinicianReviewed":
        return base | {"type": kind, "action": "hold", "note": "n" * (minutes % 2001)}
    return base | {"type": kind, "session_id": "s-1", "completed": True, "difficulty": "ok"}


valid_items = st.builds(
    _valid,
    st.uuids(),
    st.sampled_from(["RehabStarted", "PainLogged", "SessionCompleted", "OutcomeRecorded"]),
    st.integers(0, 60 * 24 * 29),  # a device dates events up to 30 days back
)
#: Valid events that a device may not write: reviews, and intakes naming a clinic that
#: did not enrol its user.
reviews = st.builds(_valid, st.uuids(), st.just("ClinicianReviewed"), st.integers(0, 60 * 24))
foreign = st.builds(
    lambda item: item | {"clinic_id": "clinic-g"},
    st.builds(_valid, st.uuids(), st.just("RehabStarted"), st.integers(0, 60 * 24)),
)
#: One field made hostile: (key, value) pairs that the contract refuses.
BREAKAGES = [
    ("score", 11),
    ("score", -1),
    ("score", 2.5),
    ("score", "7"),
    ("user_id", "u" * 65),
    ("user_id", "ünïcode"),
    ("user_id", "someone-else"),  # forbidden for this device
    ("event_id", "not-a-uuid"),
    ("type", "PrescriptionChanged"),
    ("type", None),
    ("occurred_at", (NOW + timedelta(hours=1)).isoformat()),
    ("occurred_at", "1999-12-31T23:59:59Z"),
    ("occurred_at", (NOW - timedelta(days=31)).isoformat()),
    ("occurred_at", "2026-01-01T00:00:00"),
    ("sessions_per_week", 8),
    ("extra_field", "x" * 10_000),
]
broken_items = st.builds(
    lambda item, change: item | {change[0]: change[1]},
    valid_items.filter(lambda item: item["type"] == "PainLogged"),
    st.sampled_from(BREAKAGES),
)
non_objects = st.one_of(
    st.none(), st.integers(), st.text(max_size=20), st.lists(st.integers(), max_size=3)
)


@st.composite
def batches(draw: st.DrawFn) -> list[tuple[Any, bool]]:
    """Items paired with whether each must be stored; some valid items are repeated verbatim."""
    items: list[tuple[Any, bool]] = []
    for _ in range(draw(st.integers(0, 25))):
        choice = draw(st.integers(0, 3))
        if choice == 0 and items and draw(st.booleans()):
            items.append(draw(st.sampled_from(items)))
        elif choice <= 1:
            items.append((draw(valid_items), True))
        elif choice == 2:
            items.append((draw(broken_items | reviews | foreign), False))
        else:
            items.append((draw(non_objects), False))
    return items


@pytest.fixture(scope="module")
def enrolled(stack: Stack) -> None:
    """clinic-f enrols USER (so USER's intakes may name clinic-f)."""
    clinic = {"Authorization": f"Bearer {issue('clinic', 'clinic-f', SECRET)}"}
    reply = httpx.post(f"{stack.clinic_url}/v1/enrolments", json={"user_id": USER}, headers=clinic)
    assert reply.status_code == 201, reply.text


def _own_ids(batch: list[tuple[Any, bool]]) -> list[tuple[Any, bool]]:
    """The batch with event ids of its own, repeats inside it kept.

    Hypothesis replays and mutates earlier examples, uuids included, so an id
    could come back with another payload for the same user: a conflict, which
    ``test_dedupe_per_user`` covers, rather than what this test is about.
    """
    ids: dict[str, str] = {}

    def renamed(item: Any) -> Any:
        if not isinstance(item, dict) or not isinstance(item.get("event_id"), str):
            return item
        try:
            uuid.UUID(item["event_id"])
        except ValueError:
            return item
        return item | {"event_id": ids.setdefault(item["event_id"], str(uuid.uuid4()))}

    return [(renamed(item), storable) for item, storable in batch]


@FUZZ
@given(batch=batches())
def test_generated_batches_answer_each_item_in_order(
    stack: Stack, enrolled: None, batch: list[Any]
) -> None:
    """Every batch is 202, one result per item: valid ones stored or duplicate, others errors."""
    batch = _own_ids(batch)
    # a device token of USER per example: the examples together post more events than
    # one token's rate limit lets through at once
    token = {"Authorization": f"Bearer {issue('device', USER, SECRET)}"}
    body = json.dumps({"events": [item for item, _ in batch]}).encode()
    reply = httpx.post(
        f"{stack.ingest_url}/v1/events/batch", content=body, headers=token, timeout=15
    )
    assert reply.status_code == 202, reply.text
    results = reply.json()["results"]
    assert len(results) == len(batch)
    first_position: dict[str, str] = {}
    for index, ((item, storable), result) in enumerate(zip(batch, results, strict=True)):
        if not storable:
            assert set(result) == {"index", "error"}
            assert result["index"] == index
            continue
        assert set(result) == {"event_id", "status", "position"}
        assert result["event_id"] == item["event_id"]
        assert result["status"] in ("accepted", "duplicate")
        if item["event_id"] in first_position:  # a repeat inside this batch
            assert result["status"] == "duplicate"
            assert result["position"] == first_position[item["event_id"]]
        else:
            first_position[item["event_id"]] = result["position"]
