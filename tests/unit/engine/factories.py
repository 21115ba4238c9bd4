"""Event factories for the engine tests: one user, times as days and hours from T0."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

from services.prescriber.engine import DEFAULT_RULES, RuleSet, State, decide, initial, react
from services.prescriber.engine.rules import builtin
from shared.events import Input, PainLogged, PrescriptionChanged, RehabStarted, SessionCompleted

T0 = datetime(2024, 3, 4, 0, 0, tzinfo=UTC)
V1 = builtin("1")
USER = "u1"
_ids = itertools.count(1)


def at(day: float, hour: float = 0) -> datetime:
    """T0 plus days and hours."""
    return T0 + timedelta(days=day, hours=hour)


def next_id() -> UUID:
    """Increasing ids, so events at equal times still fold in creation order."""
    return UUID(int=next(_ids))


def make_start(**overrides: Any) -> RehabStarted:
    """A RehabStarted at T0 for a gradual onset on T0, unless overridden."""
    fields: dict[str, Any] = {
        "event_id": next_id(),
        "user_id": USER,
        "occurred_at": T0,
        "onset_date": T0.date(),
        "cause": "gradual",
    }
    fields.update(overrides)
    return RehabStarted(**fields)


def make_pain(**overrides: Any) -> PainLogged:
    """A baseline pain score of 2 at T0, unless overridden."""
    fields: dict[str, Any] = {
        "event_id": next_id(),
        "user_id": USER,
        "occurred_at": T0,
        "score": 2,
        "context": "baseline",
    }
    fields.update(overrides)
    return PainLogged(**fields)


def make_session(**overrides: Any) -> SessionCompleted:
    """A completed, ok session at T0 with pain 1 during, unless overridden."""
    fields: dict[str, Any] = {
        "event_id": next_id(),
        "user_id": USER,
        "occurred_at": T0,
        "session_id": f"s{next(_ids)}",
        "completed": True,
        "difficulty": "ok",
        "pain_during": 1,
    }
    fields.update(overrides)
    return SessionCompleted(**fields)


def answered(
    day: float,
    during: int = 1,
    after: int | None = 1,
    morning: int | None = 1,
    *,
    after_hours: float = 2,
    morning_hours: float = 20,
    **session: Any,
) -> list[Input]:
    """A session at ``day`` 10:00 with its after-exercise and next-morning logs."""
    s = at(day, 10)
    events: list[Input] = [make_session(occurred_at=s, pain_during=during, **session)]
    if after is not None:
        events.append(
            make_pain(
                occurred_at=s + timedelta(hours=after_hours), score=after, context="after_exercise"
            )
        )
    if morning is not None:
        events.append(
            make_pain(
                occurred_at=s + timedelta(hours=morning_hours), score=morning, context="morning"
            )
        )
    return events


def daily_baselines(first: int, last: int, score: int = 2, hour: float = 7) -> list[Input]:
    """One baseline log a day at ``hour`` from day ``first`` to ``last`` inclusive."""
    return [make_pain(occurred_at=at(d, hour), score=score) for d in range(first, last + 1)]


def run(
    events: Iterable[Input], state: State | None = None, rules: RuleSet = DEFAULT_RULES
) -> tuple[State, list[PrescriptionChanged]]:
    """React to the events in time order; the final state and every change emitted."""
    state = state or initial(USER)
    changes: list[PrescriptionChanged] = []
    for event in sorted(events, key=lambda e: (e.occurred_at, e.event_id)):
        state, change = react(state, event, rules)
        if change is not None:
            changes.append(change)
    return state, changes


def levels(state: State, rules: RuleSet = DEFAULT_RULES) -> dict[str, int]:
    """Exercise id -> level in the current prescription."""
    rx = decide(state, rules)
    assert rx is not None
    return {e.exercise_id: e.level for e in rx.exercises}


def onset_days_ago(days: int) -> date:
    """An onset date ``days`` before T0."""
    return (T0 - timedelta(days=days)).date()
