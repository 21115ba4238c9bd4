"""Small event factories for store tests: ``make_*(**overrides)``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from itertools import count, islice
from typing import Any

from shared.events import (
    ClinicianReviewed,
    OutcomeRecorded,
    PainLogged,
    PrescriptionChanged,
    RehabStarted,
    SessionCompleted,
)
from shared.keys import Keys

T0 = datetime(2026, 1, 5, 8, 30, tzinfo=UTC)


def neighbours(user: str, n: int = 1, partitions: int = 16) -> list[str]:
    """``n`` other user ids in ``user``'s partition (the stores in these tests have 16)."""
    keys = Keys(partitions)
    ids = (f"{user}-n{i}" for i in count())
    return list(islice((u for u in ids if keys.partition(u) == keys.partition(user)), n))


def make_started(**overrides: Any) -> RehabStarted:
    values: dict[str, Any] = {
        "event_id": uuid.uuid4(),
        "user_id": "u-1",
        "occurred_at": T0,
        "cause": "sprain_strain",
        "goals": ("daily_life",),
    }
    return RehabStarted(**(values | overrides))


def make_pain(score: int = 4, minutes: int = 0, **overrides: Any) -> PainLogged:
    values: dict[str, Any] = {
        "event_id": uuid.uuid4(),
        "user_id": "u-1",
        "occurred_at": T0 + timedelta(minutes=minutes),
        "score": score,
        "context": "baseline",
    }
    return PainLogged(**(values | overrides))


def make_session(**overrides: Any) -> SessionCompleted:
    values: dict[str, Any] = {
        "event_id": uuid.uuid4(),
        "user_id": "u-1",
        "occurred_at": T0 + timedelta(hours=1),
        "session_id": "s-1",
        "completed": True,
        "difficulty": "ok",
    }
    return SessionCompleted(**(values | overrides))


def make_review(**overrides: Any) -> ClinicianReviewed:
    values: dict[str, Any] = {
        "event_id": uuid.uuid4(),
        "user_id": "u-1",
        "occurred_at": T0 + timedelta(hours=2),
        "action": "set_levels",
        "levels": {"cat_camel": 2},
        "note": "examined; fine to go on",
        "reviewed_by": "clinic-a",
    }
    return ClinicianReviewed(**(values | overrides))


def make_outcome(**overrides: Any) -> OutcomeRecorded:
    values: dict[str, Any] = {
        "event_id": uuid.uuid4(),
        "user_id": "u-1",
        "occurred_at": T0 + timedelta(hours=3),
        "instrument": "rmdq",
        "score": 11,
    }
    return OutcomeRecorded(**(values | overrides))


def make_change(version: int = 1, **overrides: Any) -> PrescriptionChanged:
    values: dict[str, Any] = {
        "event_id": uuid.uuid4(),
        "user_id": "u-1",
        "occurred_at": T0 + timedelta(days=version),
        "version": version,
        "phase": "protect",
        "stage": "acute",
        "change": "started" if version == 1 else "progressed",
        "exercises": (),
        "sessions_per_week": 3,
        "reasons": ({"code": "start", "detail": "first prescription"},),
        "referral": None,
        "caused_by": uuid.uuid4(),
        "rules_version": "1",
    }
    return PrescriptionChanged(**(values | overrides))
