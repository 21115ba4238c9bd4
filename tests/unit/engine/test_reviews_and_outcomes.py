"""No rule reads ClinicianReviewed or OutcomeRecorded yet: each folds as the passage of time."""

from __future__ import annotations

from typing import Any

import pytest

from services.prescriber.engine import decide, evolve, initial
from shared.events import ClinicianReviewed, Input, OutcomeRecorded
from tests.unit.engine.factories import USER, at, make_pain, make_start, next_id, run


def make_review(**overrides: Any) -> ClinicianReviewed:
    """A ``hold`` by clinic-a at T0, unless overridden."""
    fields: dict[str, Any] = {
        "event_id": next_id(),
        "user_id": USER,
        "occurred_at": at(0),
        "action": "hold",
        "reviewed_by": "clinic-a",
    }
    return ClinicianReviewed(**(fields | overrides))


def make_outcome(**overrides: Any) -> OutcomeRecorded:
    """An RMDQ score of 12 at T0, unless overridden."""
    fields: dict[str, Any] = {
        "event_id": next_id(),
        "user_id": USER,
        "occurred_at": at(0),
        "instrument": "rmdq",
        "score": 12,
    }
    return OutcomeRecorded(**(fields | overrides))


KINDS = {
    "review": lambda day: make_review(occurred_at=at(day, 9), note="seen; carry on"),
    "levels": lambda day: make_review(
        occurred_at=at(day, 9), action="set_levels", levels={"cat_camel": 4}
    ),
    "outcome": lambda day: make_outcome(occurred_at=at(day, 9)),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_folding_one_keeps_episode_and_program_and_moves_now(kind: str) -> None:
    """After RehabStarted the event leaves episode and program as they were and becomes "now"."""
    state, _ = run([make_start(), make_pain(occurred_at=at(1, 7))])
    event: Input = KINDS[kind](2)
    folded = evolve(state, event)
    assert folded.episode is state.episode
    assert folded.program is state.program
    assert (folded.now, folded.last_id) == (event.occurred_at, event.event_id)
    assert decide(folded) == decide(state)


@pytest.mark.parametrize("kind", list(KINDS))
def test_one_before_rehab_started_opens_no_episode(kind: str) -> None:
    """Alone, the event starts nothing: no episode, no prescription."""
    state = evolve(initial(USER), KINDS[kind](0))
    assert state.episode is None
    assert decide(state) is None


def test_an_outcome_on_day_7_moves_protect_to_build_as_any_event_would() -> None:
    """Time passes with it: on day 7 after a sprain it causes the change from protect to build."""
    outcome = make_outcome(occurred_at=at(7, 9))
    _, changes = run([make_start(cause="sprain_strain"), outcome])
    assert [c.phase for c in changes] == ["protect", "build"]
    assert changes[1].caused_by == outcome.event_id


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_same_event_twice_changes_nothing(kind: str) -> None:
    """A redelivered review or outcome is a duplicate: the state is returned as it was."""
    state, _ = run([make_start()])
    event = KINDS[kind](1)
    once = evolve(state, event)
    assert evolve(once, event) is once
