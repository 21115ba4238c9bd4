"""The ingest time window: a policy on occurred_at around the server clock, set by environment."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.logging_svc.ingest import Rejected
from services.logging_svc.limits import IngestLimits, check_time
from shared.events import PainLogged

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def _pain(at: datetime) -> PainLogged:
    return PainLogged(
        event_id=uuid.uuid4(), user_id="u", occurred_at=at, score=3, context="morning"
    )


@pytest.mark.parametrize(
    ("delta", "kind"),
    [
        (timedelta(seconds=300), None),
        (timedelta(seconds=301), "too_far_in_future"),
        (-timedelta(days=5 * 365), None),
        (-timedelta(days=5 * 365, seconds=1), "too_old"),
    ],
)
def test_window_edges(delta: timedelta, kind: str | None) -> None:
    """Up to 300 s ahead and 5 x 365 days back is inside; one second further is refused."""
    if kind is None:
        check_time(_pain(NOW + delta), NOW, IngestLimits())
        return
    with pytest.raises(Rejected) as caught:
        check_time(_pain(NOW + delta), NOW, IngestLimits(), ("events", 3))
    assert caught.value.detail[0]["loc"] == ["events", 3, "occurred_at"]
    assert caught.value.detail[0]["type"] == kind


def test_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """BACKTRACK_INGEST_MAX_FUTURE_SECONDS and ..._MAX_AGE_DAYS move the window."""
    monkeypatch.setenv("BACKTRACK_INGEST_MAX_FUTURE_SECONDS", "0")
    monkeypatch.setenv("BACKTRACK_INGEST_MAX_AGE_DAYS", "1")
    limits = IngestLimits()
    with pytest.raises(Rejected):
        check_time(_pain(NOW + timedelta(seconds=1)), NOW, limits)
    with pytest.raises(Rejected):
        check_time(_pain(NOW - timedelta(days=2)), NOW, limits)


def test_offsets_are_compared_as_instants() -> None:
    """A time 4 minutes ahead written in another offset is inside the window."""
    ahead = datetime(2026, 11, 24, 17, 4, tzinfo=timezone(timedelta(hours=5)))
    check_time(_pain(ahead), NOW, IngestLimits())
    with pytest.raises(Rejected):
        check_time(_pain(ahead + timedelta(minutes=2)), NOW, IngestLimits())


@pytest.mark.parametrize(
    ("role", "back", "refused"),
    [
        ("device", timedelta(days=30), False),
        ("device", timedelta(days=30, seconds=1), True),
        ("clinic", timedelta(days=5 * 365), False),
        ("operator", timedelta(days=5 * 365), False),
        ("clinic", timedelta(days=5 * 365, seconds=1), True),
    ],
)
def test_how_far_back_depends_on_the_role(role: str, back: timedelta, refused: bool) -> None:
    """Devices date events up to 30 days back; clinics and operators, who import, 5 years."""
    event = _pain(NOW - back)
    if not refused:
        check_time(event, NOW, IngestLimits(), role=role)  # type: ignore[arg-type]
        return
    with pytest.raises(Rejected) as caught:
        check_time(event, NOW, IngestLimits(), role=role)  # type: ignore[arg-type]
    days = 30 if role == "device" else 5 * 365
    assert caught.value.detail[0]["msg"] == f"occurred_at is more than {days} days in the past"


def test_the_device_bound_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """BACKTRACK_INGEST_DEVICE_MAX_AGE_DAYS moves the devices' bound and no one else's."""
    monkeypatch.setenv("BACKTRACK_INGEST_DEVICE_MAX_AGE_DAYS", "90")
    limits = IngestLimits()
    check_time(_pain(NOW - timedelta(days=89)), NOW, limits, role="device")
    with pytest.raises(Rejected):
        check_time(_pain(NOW - timedelta(days=91)), NOW, limits, role="device")
    assert limits.max_age("clinic") == 5 * 365
