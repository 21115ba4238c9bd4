"""Clinicians in the loop and outcome measures (RULES.md sections 10-11).

Rule set 1 knew neither event: under it each folds as the passage of time.
Rule set 2 acts on every review and reads outcomes at the day-42 check.
"""

from __future__ import annotations

from typing import Any

import pytest

from services.prescriber.engine import decide, evolve, initial
from shared.events import ClinicianReviewed, Input, OutcomeRecorded, PrescriptionChanged
from tests.unit.engine.factories import (
    USER,
    V1,
    answered,
    at,
    daily_baselines,
    levels,
    make_pain,
    make_start,
    next_id,
    run,
)


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
def test_rule_set_1_folds_one_as_the_passage_of_time(kind: str) -> None:
    """Under rule set 1 the event leaves episode and program as they were and becomes "now"."""
    state, _ = run([make_start(), make_pain(occurred_at=at(1, 7))], rules=V1)
    event: Input = KINDS[kind](2)
    folded = evolve(state, event, V1)
    assert folded.episode is state.episode
    assert folded.program is state.program
    assert (folded.now, folded.last_id) == (event.occurred_at, event.event_id)
    assert decide(folded, V1) == decide(state, V1)


@pytest.mark.parametrize("kind", list(KINDS))
def test_one_before_rehab_started_opens_no_episode(kind: str) -> None:
    """Alone, the event starts nothing: no episode, no prescription."""
    state = evolve(initial(USER), KINDS[kind](0))
    assert state.episode is None
    assert decide(state) is None


def test_an_outcome_on_day_7_moves_protect_to_build_as_any_event_would() -> None:
    """Time passes with it: on day 7 after a sprain it causes the change from protect to build."""
    outcome = make_outcome(occurred_at=at(7, 9))
    _, changes = run([make_start(cause="sprain_strain"), outcome], rules=V1)
    assert [c.phase for c in changes] == ["protect", "build"]
    assert changes[1].caused_by == outcome.event_id


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_same_event_twice_changes_nothing(kind: str) -> None:
    """A redelivered review or outcome is a duplicate: the state is returned as it was."""
    state, _ = run([make_start()])
    event = KINDS[kind](1)
    once = evolve(state, event)
    assert evolve(once, event) is once


# -- rule set 2: clinicians act --------------------------------------------------


def _codes(change: PrescriptionChanged) -> list[str]:
    return [r.code for r in change.reasons]


def _at_level_2() -> list[Input]:
    """Greens on days 1-8 with baselines of 2: every exercise at level 2 from day 9."""
    greens = [e for d in (1, 3, 5, 8) for e in answered(d)]
    return [make_start(), *daily_baselines(0, 30), *greens]


def test_clear_red_flags_resumes_the_program_at_its_levels() -> None:
    """A clinician's clear after a red flag returns the patient to build at level 2, not 1."""
    flag = make_pain(occurred_at=at(10, 8), red_flags=("fever_or_unwell",))
    clear = make_review(occurred_at=at(12, 9), action="clear_red_flags", note="examined: viral")
    state, changes = run([*_at_level_2(), flag, clear])
    assert [c.change for c in changes[-2:]] == ["referred", "adjusted"]
    assert changes[-1].phase == "build"
    assert changes[-1].referral is None
    assert "clinician_clear_red_flags" in _codes(changes[-1])
    assert set(levels(state).values()) == {2}
    again = make_pain(occurred_at=at(14, 8), red_flags=("saddle_numbness",))
    _, later = run([*_at_level_2(), flag, clear, again])
    assert (later[-1].change, later[-1].phase) == ("referred", "refer")


def test_set_levels_sets_them_and_restarts_the_spacing() -> None:
    """set_levels moves the named exercise; greens within the next 7 days step nothing up."""
    review = make_review(
        occurred_at=at(10, 9), action="set_levels", levels={"cat_camel": 4, "bird_dog": 5}
    )
    greens = [e for d in (11, 13) for e in answered(d)]
    state, changes = run([*_at_level_2(), review, *greens])
    assert changes[-1].change == "adjusted"
    assert changes[-1].caused_by == review.event_id
    assert levels(state) == {
        "cat_camel": 4,
        "rib_closure": 2,
        "spine_curl_bridge": 2,
        "knee_hugs": 2,
        "walking": 2,
    }
    assert "clinician_set_levels" in _codes(changes[-1])


def test_exclude_drops_an_exercise_and_include_returns_it_at_its_level() -> None:
    """An excluded exercise leaves every prescription until it is included again."""
    drop = make_review(occurred_at=at(10, 9), action="exclude_exercise", exercise_id="rib_closure")
    state, changes = run([*_at_level_2(), drop])
    assert "rib_closure" not in levels(state)
    assert changes[-1].change == "adjusted"
    back = make_review(occurred_at=at(11, 9), action="include_exercise", exercise_id="rib_closure")
    state, changes = run([*_at_level_2(), drop, back])
    assert levels(state)["rib_closure"] == 2
    assert "clinician_include_exercise" in _codes(changes[-1])


def test_hold_stops_progression_but_not_regression_and_release_ends_it() -> None:
    """Held, two greens a week on step nothing up; a RED still steps down; released, up again."""
    hold = make_review(occurred_at=at(9, 12), action="hold")
    greens = [e for d in (10, 12, 15, 17) for e in answered(d)]
    state, _ = run([*_at_level_2(), hold, *greens])
    assert set(levels(state).values()) == {2}
    red = answered(19, during=6)
    state, _ = run([*_at_level_2(), hold, *greens, *red])
    assert set(levels(state).values()) == {1}
    release = make_review(occurred_at=at(16, 12), action="release")
    state, _ = run([*_at_level_2(), hold, release, *greens])
    assert set(levels(state).values()) == {3}


def test_acknowledge_referral_lifts_a_routine_referral_until_the_next_check() -> None:
    """Acknowledged on day 43, the day-42 referral leaves; the day-84 check refers again."""
    flat = [make_start(), *[make_pain(occurred_at=at(d, 7), score=5) for d in range(43)]]
    ack = make_review(occurred_at=at(43, 9), action="acknowledge_referral")
    _, changes = run([*flat, ack])
    assert changes[-2].referral is not None
    assert changes[-1].referral is None
    assert changes[-1].change == "adjusted"
    rest = [make_pain(occurred_at=at(d, 7), score=5) for d in range(44, 85)]
    _, changes = run([*flat, ack, *rest])
    assert changes[-1].referral is not None
    assert changes[-1].referral.reason == "not_recovered_12_weeks"


def test_acknowledge_does_not_lift_a_red_flag() -> None:
    """Only clear_red_flags ends a red-flag referral."""
    flag = make_pain(occurred_at=at(3, 8), red_flags=("cancer_history",))
    ack = make_review(occurred_at=at(4, 9), action="acknowledge_referral")
    rx = decide(run([make_start(), flag, ack])[0])
    assert rx is not None
    assert rx.phase == "refer"


@pytest.mark.parametrize(("later", "referred"), [(9.0, False), (12.0, True)])
def test_an_improved_outcome_measure_counts_as_improvement(later: float, referred: bool) -> None:
    """RMDQ 15 -> 9 (down 6) prevents the day-42 referral; 15 -> 12 (20%) does not."""
    flat = [make_start(), *[make_pain(occurred_at=at(d, 7), score=5) for d in range(43)]]
    scores = [make_outcome(occurred_at=at(1, 9), score=15.0)]
    scores.append(make_outcome(occurred_at=at(40, 9), score=later))
    rx = decide(run([*flat, *scores])[0])
    assert rx is not None
    assert (rx.referral is not None) is referred


def test_a_review_that_changes_nothing_emits_nothing() -> None:
    """A hold changes no prescription, so no change is emitted for it."""
    hold = make_review(occurred_at=at(30, 12), action="hold")
    _, changes = run([*_at_level_2(), hold])
    assert all(c.caused_by != hold.event_id for c in changes)
    release = make_review(occurred_at=at(30, 13), action="release")
    _, changes = run([*_at_level_2(), hold, release])
    assert all(c.caused_by not in (hold.event_id, release.event_id) for c in changes)
